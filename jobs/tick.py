"""The heartbeat: every second, for every enabled chain, make sure the right jobs are queued.

Each step defers the next one in its own transaction, so the tick is not on the fast path; it
wakes the watcher (receipts, confirmations, reorgs, stuck transactions), retries planning for
withdrawals that wait for balance, starts the account manager's checks (every
`account_check_seconds`), and re-queues work whose job died (a dead letter, a lost
worker). Queueing locks keep at most one such job waiting per chain and sender.
"""

from __future__ import annotations

import logging

from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Status

from db.queries import query
from jobs import context
from jobs.queue import PRIORITY, defer_once, queue

log = logging.getLogger("payouts.jobs.tick")

STALE = "5 seconds"
STALLED_SECONDS = 30
STALLED_CHECK_EVERY = 15  # seconds


async def retry_stalled_jobs() -> int:
    """Jobs left `doing` by a worker that died (no heartbeat for STALLED_SECONDS) run again.

    Every step is idempotent, so running one twice is safe; left alone they would only clutter
    the queue, since the tick re-queues their work anyway.
    """
    stalled = list(await queue.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_SECONDS))
    for job in stalled:
        try:
            await queue.job_manager.retry_job(job)
        except ConnectorException:
            # A job with the same queueing lock is already waiting (the tick re-queued the work):
            # the stalled one is not needed any more.
            await queue.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)
            log.warning(
                "job %s[%s] was left running by a dead worker; its work is already queued", job.task_name, job.id
            )
            continue
        log.warning("job %s[%s] was left running by a dead worker; retrying it", job.task_name, job.id)
    return len(stalled)


@queue.periodic(cron="* * * * * *", periodic_id="tick")
@queue.task(name="tick", queue="tick", queueing_lock="tick", priority=PRIORITY["tick"])
async def tick(timestamp: int) -> None:
    if timestamp % STALLED_CHECK_EVERY == 0:
        await retry_stalled_jobs()
    for chain in context.registry().enabled:
        await defer_once("watch", chain=chain.name)
        if timestamp % chain.account_check_seconds == 0:
            await defer_once("accounts", chain=chain.name)
        async with context.pool().connection() as conn:
            cur = await conn.execute(query("chain_work"), {"chain": chain.name, "stale": STALE})
            work = await cur.fetchall()
        for row in work:
            task, sender = row["task"], row["sender"]  # type: ignore[call-overload]
            if sender is None:
                await defer_once(task, chain=chain.name)
            else:
                await defer_once(task, chain=chain.name, sender=sender)
