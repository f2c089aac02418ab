"""Validate step: take PENDING withdrawals of a chain into the pipeline, a batch per job.

A new withdrawal's statement also queues a job for its chain unless one is already waiting
(sql/queries.sql `insert_withdrawal`), and each job takes every PENDING withdrawal of its chain
that no other worker holds, so the pipeline moves in batches. One job per chain plans at a
time and goes on while withdrawals keep coming; a job that finds one running ends at once, and
the running one looks again for new withdrawals after it is done (`jobs.queue.alone`). A plan
that fails on the chain's RPC is not retried by procrastinate: a job waiting for its retry would
hold the chain's queueing lock and hold up intake; the tick queues the next one within a second
instead.
"""

from __future__ import annotations

import asyncio
import logging
import time

from psycopg_pool import AsyncConnectionPool

from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition
from jobs import context
from jobs.plan import plan
from jobs.queue import PRIORITY, queue, step_alone
from jobs.retry import backoff
from jobs.rpc import RpcError

log = logging.getLogger("payouts.jobs.validate")

BATCH_SIZE = 500
# While withdrawals keep coming, a planning pass at most this often (seconds): a pass reads the
# wallets' balances and fees from the node, and a few more withdrawals per pass cost nothing
# next to the batch wait (half a block).
PASS_EVERY = 0.1
INTAKE_NOTE = "accepted; looking for a hot wallet that can pay it"


async def take_pending(pool: AsyncConnectionPool, chain: str, limit: int = BATCH_SIZE) -> int:
    """Move up to `limit` PENDING withdrawals of `chain` to VALIDATING; returns how many moved."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(query("claim_pending_withdrawals"), {"chain": chain, "limit": limit})
        ids = [row["id"] for row in await cur.fetchall()]  # type: ignore[call-overload]
        if not ids:
            return 0
        moved = await transition(conn, ids, WithdrawalStatus.PENDING, WithdrawalStatus.VALIDATING, note=INTAKE_NOTE)
    return len(moved)


@queue.task(name="validate", queue="validate", priority=PRIORITY["validate"], retry=backoff(8))
async def validate(chain: str) -> int:
    """Take new withdrawals of a chain into the pipeline and plan their transactions."""
    pool = context.pool()
    c = context.chain(chain)
    assigned = 0
    last_pass = -PASS_EVERY

    async def step() -> int:
        """Intake and one planning pass; nonzero while withdrawals keep coming in or a full pass
        was assigned (more may be waiting)."""
        nonlocal assigned, last_pass
        await asyncio.sleep(max(0.0, last_pass + PASS_EVERY - time.monotonic()))
        last_pass = time.monotonic()
        took = 0
        while (n := await take_pending(pool, chain)) > 0:
            took += n
            if n < BATCH_SIZE:
                break
        try:
            result = await plan(pool, context.rpc(chain), c, max_in_flight=c.max_in_flight_per_wallet)
        except RpcError as exc:
            # Not retried by procrastinate (see the module's docstring): the tick queues the next job.
            log.warning("plan %s: the chain's RPC failed (%s); planning again at the next tick", chain, exc.kind.name)
            return 0
        assigned += result.assigned
        return took + (result.assigned if result.full else 0)

    # One planning job per chain at a time (planners wait for each other's lock anyway). A job
    # turned away needs no second try: the holder looks for PENDING withdrawals after it is done.
    # (Withdrawals that wait for balance are nudged by the tick every second.)
    await step_alone(pool, "validate", step, "pending_exists", chain=chain)
    return assigned
