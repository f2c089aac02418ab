"""Withdrawals become confirmed on-chain payments, exactly once."""

from __future__ import annotations

import random

import psycopg
import pytest

from tests.conftest import Api
from tests.engine.conftest import Chain, Workers, new_recipient, submit, wait_terminal

pytestmark = pytest.mark.chain


def test_native_and_token_withdrawals_confirm_with_exact_balances(
    api: Api, db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, client_key: str
) -> None:
    rng = random.Random(7)
    orders = []
    for i in range(300):
        if i % 2:
            orders.append(("USDT", new_recipient(), f"{rng.randint(1, 5000)}.{rng.randint(0, 999999):06d}"))
        else:
            orders.append(("ETH", new_recipient(), f"0.{rng.randint(1, 999999):06d}"))
    workers.start(2)
    ids = submit(api, client_key, orders)
    final = wait_terminal(db, ids, timeout=240)

    assert {r["status"] for r in final.values()} == {"CONFIRMED"}, workers.logs()[-3000:]
    for (asset, to, _), wid in zip(orders, ids, strict=True):
        expected = int(final[wid]["amount"])
        got = chain.balance(to, None if asset == "ETH" else chain.usdt)
        assert got == expected, (asset, to, got, expected)
    rows = db.execute(
        "SELECT w.status, w.tx_hash, w.block_number, w.confirmations FROM withdrawals_with_tx w"
    ).fetchall()
    assert all(r["tx_hash"] and r["block_number"] and r["confirmations"] >= 2 for r in rows)
    # Every status of the happy path was passed through, in order, for each withdrawal.
    paths = db.execute(
        "SELECT withdrawal_id, array_agg(to_status::text ORDER BY id) AS path FROM withdrawal_events GROUP BY 1"
    ).fetchall()
    happy = ["PENDING", "VALIDATING", "SIGNING", "SIGNED", "BROADCASTING", "BROADCASTED", "CONFIRMING", "CONFIRMED"]
    assert all(r["path"] == happy for r in paths), {tuple(r["path"]) for r in paths if r["path"] != happy}
    # One nonce per transaction and sender, no gaps, no reuse (the lane starts after the
    # fixture's own approval transaction).
    lanes = db.execute(
        "SELECT sender, array_agg(nonce ORDER BY nonce) AS nonces FROM payouts GROUP BY sender"
    ).fetchall()
    for lane in lanes:
        first = lane["nonces"][0]
        assert lane["nonces"] == list(range(first, first + len(lane["nonces"]))), lane
    # Token withdrawals went in batches: fewer transactions than withdrawals.
    assert len(db.execute("SELECT id FROM payouts").fetchall()) < len(ids)
    assert "Traceback" not in workers.logs()
    # A stopped worker has closed its connections to the node.
    workers.stop()
    assert all(p.returncode == 0 for p in workers.procs)
    assert "Unclosed" not in workers.logs()
