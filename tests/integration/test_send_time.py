"""The planner's send time: how long a chain's latest transactions took from planning to their
first broadcast (jobs/blockclock.py send_time, query recent_send_seconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from app.registry import Chain
from db.engine import open_pool
from jobs import blockclock
from tests.conftest import shipped_chain

Conn = psycopg.Connection[dict[str, Any]]


def add_payout(db: Conn, chain: str, n: int, attempts: Sequence[tuple[float, float | None]]) -> None:
    """A payout of `chain` planned a minute ago, with attempts made and broadcast these many seconds
    after planning (None: not broadcast)."""
    row = db.execute(
        "INSERT INTO payouts (chain, sender, kind, status, asset, to_address, created_at)"
        " VALUES (%s, %s, 'withdrawal', 'BROADCASTED', 'ETH', %s, now() - interval '1 minute')"
        " RETURNING id, created_at",
        [chain, "0x" + "ab" * 20, "0x" + f"{n:040x}"],
    ).fetchone()
    assert row is not None
    for i, (made, sent) in enumerate(attempts):
        db.execute(
            "INSERT INTO tx_attempts (payout_id, tx_hash, raw_tx, gas_limit, created_at, broadcast_at)"
            " VALUES (%s, %s, '\\x00', 21000, %s + make_interval(secs => %s),"
            " %s + make_interval(secs => %s))",
            [row["id"], f"0x{n:032x}{i:032x}", row["created_at"], made, row["created_at"], sent],
        )


def read_send_time(database_url: str, chain: Chain) -> float | None:
    async def read() -> float | None:
        blockclock._send_times.clear()
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            async with pool.connection() as conn:
                return await blockclock.send_time(conn, chain)
        finally:
            await pool.close()

    return asyncio.run(read())


def test_nine_in_ten_of_the_latest_first_broadcasts(db: Conn, database_url: str) -> None:
    chain = shipped_chain()
    # 10 transactions of this chain sent 0.1 .. 1.0 s after planning; one of them resent 30 s
    # later (the stuck timer's pace, not the pipeline's), one never broadcast; another chain's slow ones.
    for n in range(10):
        add_payout(db, chain.name, n, [(0.05, 0.1 * (n + 1))] + ([(30.0, 30.0)] if n == 3 else []))
    add_payout(db, chain.name, 10, [(0.05, None)])
    for n in range(11, 15):
        add_payout(db, "elsewhere", n, [(0.05, 20.0)])

    seconds = read_send_time(database_url, chain)
    assert seconds is not None
    assert seconds == pytest.approx(0.91)  # percentile_cont(0.9) of 0.1 .. 1.0


def test_no_send_time_before_anything_was_broadcast(db: Conn, database_url: str) -> None:
    chain = shipped_chain()
    assert read_send_time(database_url, chain) is None
