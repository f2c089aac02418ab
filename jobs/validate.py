"""Validate step: take PENDING withdrawals of a chain into the pipeline, a batch per job.

A job is deferred with every new withdrawal (in the same transaction as its row), but each job
takes every PENDING withdrawal of its chain that no other worker holds, so under load most jobs
find their work already done and the pipeline moves in batches.
"""

from __future__ import annotations

import logging

from procrastinate import RetryStrategy
from psycopg_pool import AsyncConnectionPool

from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition
from jobs.queue import queue

log = logging.getLogger("payouts.jobs.validate")

BATCH_SIZE = 500
INTAKE_NOTE = "accepted for payout; waiting for a hot wallet with enough balance"


async def take_pending(pool: AsyncConnectionPool, chain: str, limit: int = BATCH_SIZE) -> int:
    """Move up to `limit` PENDING withdrawals of `chain` to VALIDATING; returns how many moved."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(query("claim_pending_withdrawals"), {"chain": chain, "limit": limit})
        ids = [row["id"] for row in await cur.fetchall()]  # type: ignore[call-overload]
        if not ids:
            return 0
        moved = await transition(
            conn, ids, WithdrawalStatus.PENDING, WithdrawalStatus.VALIDATING, note=INTAKE_NOTE
        )
    return len(moved)


@queue.task(
    name="validate",
    queue="validate",
    pass_context=True,
    retry=RetryStrategy(max_attempts=8, exponential_wait=2),
)
async def validate(context, chain: str) -> int:  # type: ignore[no-untyped-def]
    pool = context.app.connector.pool
    total = 0
    while True:
        moved = await take_pending(pool, chain)
        total += moved
        if moved < BATCH_SIZE:
            break
    if total:
        log.info("validate: %d withdrawal(s) on %s taken into the pipeline", total, chain)
    return total
