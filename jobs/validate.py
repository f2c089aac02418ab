"""Validate step: take PENDING withdrawals of a chain into the pipeline, a batch per job.

A job is deferred with every new withdrawal (in the same transaction as its row), but each job
takes every PENDING withdrawal of its chain that no other worker holds, so under load most jobs
find their work already done and the pipeline moves in batches.
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition
from jobs import context
from jobs.plan import plan
from jobs.queue import PRIORITY, queue
from jobs.retry import backoff

log = logging.getLogger("payouts.jobs.validate")

BATCH_SIZE = 500
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
    while await take_pending(pool, chain) == BATCH_SIZE:
        pass
    c = context.chain(chain)
    result = await plan(pool, context.rpc(chain), c, max_in_flight=c.max_in_flight_per_wallet)
    return result.assigned
