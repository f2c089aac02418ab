"""The heartbeat: every second, for every enabled chain, make sure the right jobs are queued.

Each step defers the next one in its own transaction, so the tick is not on the fast path; it
wakes the watcher (receipts, confirmations, reorgs, stuck transactions), retries planning for
withdrawals that wait for balance, and re-queues work whose job died (a dead letter, a lost
worker). Queueing locks keep at most one such job waiting per chain and sender.
"""

from __future__ import annotations

import logging

from procrastinate.exceptions import AlreadyEnqueued

from db.queries import query
from jobs import context
from jobs.queue import queue

log = logging.getLogger("payouts.jobs.tick")

STALE = "5 seconds"


async def defer_once(task: str, lock: str, **kwargs: str) -> bool:
    try:
        await queue.configure_task(task, queueing_lock=lock).defer_async(**kwargs)
    except AlreadyEnqueued:
        return False  # one is already waiting; it will see the same work
    return True


@queue.periodic(cron="* * * * * *", periodic_id="tick")
@queue.task(name="tick", queue="tick", queueing_lock="tick")
async def tick(timestamp: int) -> None:
    for chain in context.registry().enabled:
        await defer_once("watch", f"watch:{chain.name}", chain=chain.name)
        async with context.pool().connection() as conn:
            cur = await conn.execute(query("chain_work"), {"chain": chain.name, "stale": STALE})
            work = await cur.fetchall()
        for row in work:
            task, sender = row["task"], row["sender"]  # type: ignore[call-overload]
            if sender is None:
                await defer_once(task, f"{task}:{chain.name}", chain=chain.name)
            else:
                await defer_once(task, f"{task}:{chain.name}:{sender}", chain=chain.name, sender=sender)
