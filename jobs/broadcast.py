"""Broadcast step: hand one sender's signed transactions to a node, lowest nonce first.

Re-sending stored bytes is always safe: the same bytes are the same transaction. Per money rule
7, "nonce too low", "already known" and "replacement underpriced" mean "maybe already mined":
the transaction counts as broadcast and the watcher settles it from the chain; it is never
failed or re-signed because of them.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.registry import Chain
from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition_of_payouts
from jobs import context
from jobs.queue import PRIORITY, queue, step_alone
from jobs.retry import backoff
from jobs.rpc import RpcClient, RpcError, RpcErrorKind, RpcUnavailable, is_maybe_mined

log = logging.getLogger("payouts.jobs.broadcast")

BROADCAST_BATCH = 500


def accepted(outcome: Any) -> bool:
    return (
        not isinstance(outcome, RpcError) or outcome.kind is RpcErrorKind.ALREADY_KNOWN or is_maybe_mined(outcome.kind)
    )


async def broadcast_sender(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain, sender: str) -> int | None:
    """Broadcast this sender's SIGNED transactions until none is left; returns how many a node
    accepted, or None when another job broadcasts for this sender (two would race on the same rows;
    that one looks for this work when it is done).
    """
    return await step_alone(
        pool,
        "broadcast",
        lambda: _broadcast(pool, rpc, chain, sender),
        "signed_exists",
        chain=chain.name,
        sender=sender,
    )


async def _broadcast(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain, sender: str) -> int:
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            query("signed_payouts"), {"chain": chain.name, "sender": sender, "limit": BROADCAST_BATCH}
        )
        rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
        if not rows:
            return 0
        # Recorded before sending: a crash after this point leaves BROADCASTING rows whose
        # payouts are still SIGNED; the tick queues this step again for them, and sending the
        # same bytes again is harmless.
        await transition_of_payouts(
            conn,
            [r["id"] for r in rows],
            WithdrawalStatus.SIGNED,
            WithdrawalStatus.BROADCASTING,
            note="being broadcast",
        )

    try:
        outcomes = await rpc.batch(
            [("eth_sendRawTransaction", ["0x" + bytes(r["raw_tx"]).hex()]) for r in rows], return_errors=True
        )
    except RpcError as exc:
        # No node answered at all (the bytes may still have reached one: rule 7 settles that
        # from receipts later). Back to SIGNED; the job retries with backoff.
        async with pool.connection() as conn, conn.transaction():
            await transition_of_payouts(
                conn,
                [r["id"] for r in rows],
                WithdrawalStatus.BROADCASTING,
                WithdrawalStatus.SIGNED,
                note=f"waiting to be broadcast again: {exc.kind.name.lower()}",
            )
        raise

    done: list[dict[str, Any]] = []
    unavailable: RpcError | None = None
    async with pool.connection() as conn, conn.transaction():
        for row, outcome in zip(rows, outcomes, strict=True):
            if accepted(outcome):
                done.append(row)
                continue
            assert isinstance(outcome, RpcError)
            if outcome.kind in (RpcErrorKind.NETWORK, RpcErrorKind.RATE_LIMITED) or isinstance(outcome, RpcUnavailable):
                unavailable = outcome
            alert = f"not accepted by the node ({outcome.kind.name.lower()}): {outcome.message[:200]}"
            await conn.execute(query("set_payout_alert"), {"id": row["id"], "alert": alert})
            await transition_of_payouts(
                conn,
                [row["id"]],
                WithdrawalStatus.BROADCASTING,
                WithdrawalStatus.SIGNED,
                note="waiting to be broadcast again: " + alert,
            )
        if done:
            await conn.execute(
                query("mark_payouts_broadcasted"),
                {"ids": [r["id"] for r in done], "attempt_ids": [r["attempt_id"] for r in done]},
            )
            await transition_of_payouts(
                conn,
                [r["id"] for r in done],
                WithdrawalStatus.BROADCASTING,
                WithdrawalStatus.BROADCASTED,
                note="broadcast; waiting to be mined",
            )
    if unavailable is not None:
        raise unavailable  # the job retries with backoff; those rows are SIGNED again
    return len(done)


@queue.task(name="broadcast", queue="broadcast", priority=PRIORITY["broadcast"], retry=backoff(12))
async def broadcast_task(chain: str, sender: str) -> int:
    done = await broadcast_sender(context.pool(), context.rpc(chain), context.chain(chain), sender)
    return done or 0
