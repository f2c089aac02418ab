"""The engine under faults. Each test ends with every withdrawal CONFIRMED, FAILED or CANCELED,
and no recipient paid twice or paid less."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
from eth_account import Account

from db import wallets
from jobs import devchain
from tests.conftest import REPO_ROOT, Api
from tests.engine.conftest import Chain, Workers, new_recipient, submit, wait_terminal
from tests.engine.proxy import TcpProxy

pytestmark = [pytest.mark.chain, pytest.mark.faults]

GWEI = 10**9


def pause_mining(chain: Chain) -> None:
    chain.rpc("evm_setIntervalMining", [0])


def resume_mining(chain: Chain) -> None:
    chain.rpc("evm_setIntervalMining", [1])


def wait_statuses(db: psycopg.Connection, ids: list[str], wanted: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute("SELECT status FROM withdrawals WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
        if rows and all(r["status"] in wanted for r in rows):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not all in {wanted}: {sorted(r['status'] for r in rows)}")
        time.sleep(0.2)


def mixed_orders(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [
        ("USDT", new_recipient(), f"{rng.randint(1, 900)}.{rng.randint(0, 99):02d}")
        if i % 2
        else ("ETH", new_recipient(), f"0.{rng.randint(1, 99999):05d}")
        for i in range(n)
    ]


def assert_paid_exactly_once(db: psycopg.Connection, chain: Chain, orders, ids, final) -> None:  # type: ignore[no-untyped-def]
    for (asset, to, _), wid in zip(orders, ids, strict=True):
        got = chain.balance(to, None if asset == "ETH" else chain.usdt)
        expected = int(final[wid]["amount"]) if final[wid]["status"] == "CONFIRMED" else 0
        assert got == expected, (final[wid]["status"], asset, got, expected)
    # Money rule 2 in the database: at most one live transaction per withdrawal, and one live
    # transaction per (sender, nonce).
    dupes = db.execute(
        "SELECT chain, sender, nonce, count(*) FROM payouts WHERE status <> 'SUPERSEDED' AND nonce IS NOT NULL "
        "GROUP BY 1, 2, 3 HAVING count(*) > 1"
    ).fetchall()
    assert not dupes


def chains_file(tmp_path: Path, **localhost: object) -> Path:
    text = (REPO_ROOT / "chains.toml").read_text()
    head, rest = text.split("[chains.localhost]\n", 1)
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in localhost.items())
    for key in localhost:
        rest = re.sub(rf"(?m)^{key} = .*\n", "", rest, count=1) if rest.index("[chains.ethereum]") > 0 else rest
    path = tmp_path / "chains.toml"
    path.write_text(head + "[chains.localhost]\n" + extra + rest)
    return path


def tx_hashes(db: psycopg.Connection, ids: list[str]) -> list[str]:
    rows = db.execute(
        "SELECT a.tx_hash FROM tx_attempts a JOIN payout_items i ON i.payout_id = a.payout_id "
        "WHERE i.withdrawal_id = ANY(%s::uuid[])",
        (ids,),
    ).fetchall()
    return [r["tx_hash"] for r in rows]


def test_workers_killed_at_random_moments(
    api: Api, db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, client_key: str
) -> None:
    orders = mixed_orders(160, seed=11)
    ids: list[str] = []
    workers.start(2, concurrency=4)

    def feed() -> None:
        for start in range(0, len(orders), 20):
            ids.extend(submit(api, client_key, orders[start : start + 20]))
            time.sleep(0.5)

    feeder = threading.Thread(target=feed)
    feeder.start()
    rng = random.Random(3)
    kills = 0
    while kills < 24:
        time.sleep(rng.uniform(0.15, 0.7))
        victim = rng.choice(workers.alive())
        victim.kill()  # SIGKILL: no cleanup, open transactions die with the connection
        victim.wait()
        kills += 1
        workers.start(1, concurrency=4)
    feeder.join()
    final = wait_terminal(db, ids, timeout=240)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_rpc_unreachable_for_30_seconds(
    api: Api, db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, client_key: str
) -> None:
    proxy = TcpProxy(int(chain.rpc_url.rsplit(":", 1)[1]))
    proxy.start()
    workers.env["PAYOUTS_RPC_URLS_LOCALHOST"] = proxy.url
    workers.start(2)
    orders = mixed_orders(30, seed=5)
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids[:5], {"BROADCASTED", "CONFIRMING", "CONFIRMED"})
    proxy.stop()
    more = mixed_orders(20, seed=6)
    ids2 = submit(api, client_key, more)  # the API takes withdrawals while the chain is away
    time.sleep(30)
    statuses = {r["status"] for r in db.execute("SELECT status FROM withdrawals").fetchall()}
    assert "FAILED" not in statuses
    proxy.start()
    try:
        final = wait_terminal(db, ids + ids2, timeout=180)
    finally:
        proxy.stop()
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    assert_paid_exactly_once(db, chain, orders + more, ids + ids2, final)


def test_transactions_dropped_from_the_mempool_are_sent_again(
    api: Api, db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, client_key: str
) -> None:
    pause_mining(chain)
    workers.start(1)
    orders = mixed_orders(12, seed=8)
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    hashes = tx_hashes(db, ids)
    workers.stop()  # the watcher sends a lost transaction again at once: not while they are checked
    for h in hashes:
        chain.rpc("anvil_dropTransaction", [h])
    assert all(chain.rpc("eth_getTransactionByHash", [h]) is None for h in hashes)
    workers.start(1)
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=90)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    # The same signed bytes were sent again: the mined hash is the original one.
    assert {r["tx_hash"] for r in final.values()} == set(hashes)
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_a_lane_whose_next_transaction_the_node_lost_is_sent_again_at_once(
    api: Api,
    db: psycopg.Connection,
    chain: Chain,
    hot_wallets: list[str],
    workers: Workers,
    client_key: str,
    tmp_path: Path,
) -> None:
    # anvil drops a sender's later transactions when its first one does not fit in a block; the
    # stuck timer (ten minutes here) must not be what brings them back.
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, stuck_after_seconds=600))
    pause_mining(chain)
    workers.start(1)
    orders = mixed_orders(12, seed=12)
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    hashes = tx_hashes(db, ids)
    workers.stop()
    for h in hashes:
        chain.rpc("anvil_dropTransaction", [h])
    assert all(chain.rpc("eth_getTransactionByHash", [h]) is None for h in hashes)
    workers.start(1)
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=60)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    assert {r["tx_hash"] for r in final.values()} == set(hashes)
    bumps = db.execute("SELECT count(*) AS n FROM tx_attempts GROUP BY payout_id HAVING count(*) > 1").fetchall()
    assert bumps == []
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_base_fee_spike_is_outbid_by_replacements(
    api: Api, db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, client_key: str
) -> None:
    pause_mining(chain)
    workers.start(1)
    orders = mixed_orders(10, seed=9)
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    first = set(tx_hashes(db, ids))
    chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)])
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=120)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    mined = {r["tx_hash"] for r in final.values()}
    assert not mined & first, "the first attempts could not pay the spiked base fee"
    attempts = db.execute("SELECT payout_id, count(*) AS n FROM tx_attempts GROUP BY 1").fetchall()
    assert all(a["n"] >= 2 for a in attempts)
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_fee_cap_blocks_the_bump_alerts_and_keeps_the_transaction(
    api: Api,
    db: psycopg.Connection,
    chain: Chain,
    hot_wallets: list[str],
    workers: Workers,
    client_key: str,
    tmp_path: Path,
) -> None:
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, max_fee_per_gas_gwei="20"))
    pause_mining(chain)
    workers.start(1)
    orders = mixed_orders(4, seed=10)
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    sent = db.execute("SELECT count(*) AS n FROM payouts").fetchone()["n"]
    chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(500 * GWEI)])
    resume_mining(chain)
    deadline = time.monotonic() + 60
    while not db.execute("SELECT count(*) AS n FROM payouts WHERE alert LIKE '%%fee cap%%'").fetchone()["n"]:
        assert time.monotonic() < deadline, "no fee-cap alert"
        time.sleep(0.5)
    # Kept, not dropped: still BROADCASTED with their signed attempts, sent again until fees fall.
    rows = db.execute("SELECT status FROM withdrawals").fetchall()
    assert {r["status"] for r in rows} == {"BROADCASTED"}
    kept = db.execute("SELECT status, count(*) AS n FROM payouts GROUP BY 1").fetchall()
    assert [(k["status"], k["n"]) for k in kept] == [("BROADCASTED", sent)]
    with api.client(client_key) as http:
        shown = http.get(f"/v1/withdrawals/{ids[0]}").json()
    assert shown["status"] == "BROADCASTED" and shown["tx_hash"]
    chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(1 * GWEI)])
    final = wait_terminal(db, ids, timeout=90)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_reorg_after_inclusion_is_followed(
    api: Api,
    db: psycopg.Connection,
    chain: Chain,
    hot_wallets: list[str],
    workers: Workers,
    client_key: str,
    tmp_path: Path,
) -> None:
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, confirmations=8))
    workers.start(1)
    orders = mixed_orders(8, seed=12)
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"CONFIRMING"})
    lowest = db.execute("SELECT min(block_number) AS b FROM payouts").fetchone()["b"]
    head = int(chain.rpc("eth_blockNumber"), 16)
    chain.rpc("anvil_reorg", [head - lowest + 1, []])
    final = wait_terminal(db, ids, timeout=120)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    back = db.execute(
        "SELECT count(*) AS n FROM withdrawal_events WHERE from_status = 'CONFIRMING' AND to_status = 'BROADCASTED'"
    ).fetchone()["n"]
    assert back == len(ids)
    for r in final.values():
        block = chain.rpc("eth_getBlockByNumber", [hex(r["block_number"]), False])
        receipt = chain.rpc("eth_getTransactionReceipt", [r["tx_hash"]])
        assert receipt["blockHash"] == block["hash"]
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_two_workers_compete_for_one_wallet(
    api: Api, db: psycopg.Connection, chain: Chain, workers: Workers, client_key: str
) -> None:
    only = chain.info["hot_wallets"][0]
    wallets.upsert_wallet(db, "localhost", only, "hot", f"dev-mnemonic:{devchain.HOT_WALLET_INDEXES[0]}")
    workers.start(2, concurrency=8)
    orders = mixed_orders(60, seed=13)
    ids = submit(api, client_key, orders)
    final = wait_terminal(db, ids, timeout=120)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    nonces = [r["nonce"] for r in db.execute("SELECT nonce FROM payouts ORDER BY nonce").fetchall()]
    assert nonces == list(range(nonces[0], nonces[0] + len(nonces)))
    assert_paid_exactly_once(db, chain, orders, ids, final)


def test_a_nonce_used_outside_the_system(
    api: Api, db: psycopg.Connection, chain: Chain, workers: Workers, client_key: str
) -> None:
    index = devchain.HOT_WALLET_INDEXES[0]
    key = devchain.dev_account(index)
    wallets.upsert_wallet(db, "localhost", key.address, "hot", f"dev-mnemonic:{index}")
    pause_mining(chain)
    workers.start(1)
    orders = [("ETH", new_recipient(), "0.5") for _ in range(4)]
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    # Someone with the key sends their own transaction at our first pending nonce, outbidding ours.
    first_pending = int(chain.rpc("eth_getTransactionCount", [key.address, "latest"]), 16)
    outsider = Account.sign_transaction(
        {
            "chainId": 31337,
            "nonce": first_pending,
            "to": new_recipient(),
            "value": 1,
            "gas": 21000,
            "maxFeePerGas": 500 * GWEI,
            "maxPriorityFeePerGas": 50 * GWEI,
        },
        key.key,
    )
    chain.rpc("eth_sendRawTransaction", ["0x" + bytes(outsider.raw_transaction).hex()])
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=120)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    repaid = db.execute(
        "SELECT withdrawal_id FROM withdrawal_events WHERE from_status = 'BROADCASTED' AND to_status = 'VALIDATING'"
    ).fetchall()
    assert len(repaid) == 1
    assert_paid_exactly_once(db, chain, orders, ids, final)

    # The key used again while nothing is in flight: the lane skips the used nonce.
    chain_nonce = int(chain.rpc("eth_getTransactionCount", [key.address, "latest"]), 16)
    again = Account.sign_transaction(
        {
            "chainId": 31337,
            "nonce": chain_nonce,
            "to": new_recipient(),
            "value": 1,
            "gas": 21000,
            "maxFeePerGas": 500 * GWEI,
            "maxPriorityFeePerGas": 2 * GWEI,
        },
        key.key,
    )
    chain.rpc("eth_sendRawTransaction", ["0x" + bytes(again.raw_transaction).hex()])
    time.sleep(2.5)
    more = [("ETH", new_recipient(), "0.25") for _ in range(3)]
    ids2 = submit(api, client_key, more)
    final2 = wait_terminal(db, ids2, timeout=60)
    assert {r["status"] for r in final2.values()} == {"CONFIRMED"}
    assert_paid_exactly_once(db, chain, more, ids2, final2)
    assert "nonce drift" in workers.logs()


def test_cancel_after_broadcast(
    api: Api, db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, client_key: str
) -> None:
    pause_mining(chain)
    workers.start(1)
    orders = [("ETH", new_recipient(), "1.5"), ("USDT", new_recipient(), "25")]
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    with api.client(client_key) as http:
        r = http.post(f"/v1/withdrawals/{ids[0]}/cancel")
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "BROADCASTED" and "cancel requested" in r.json()["status_note"]
    deadline = time.monotonic() + 30
    while not db.execute("SELECT count(*) AS n FROM tx_attempts WHERE kind = 'cancel'").fetchone()["n"]:
        assert time.monotonic() < deadline, "no cancel transaction"
        time.sleep(0.3)
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=60)
    assert final[ids[0]]["status"] == "CANCELED"
    assert final[ids[1]]["status"] == "CONFIRMED"
    assert_paid_exactly_once(db, chain, orders, ids, final)
    with api.client(client_key) as http:
        r = http.post(f"/v1/withdrawals/{ids[1]}/cancel")
    assert r.status_code == 409 and r.json()["code"] == "withdrawal_not_cancelable"


def balance_slot(chain: Chain, holder: str) -> str:
    """The storage slot of `holder`'s balance in the test token (found, not assumed)."""
    from eth_utils import keccak

    balance = chain.balance(holder, chain.usdt)
    assert balance > 0
    key = bytes(12) + bytes.fromhex(holder[2:])
    for index in range(16):
        slot = index.to_bytes(32, "big")
        for candidate in (keccak(key + slot), keccak(slot + key)):
            value = chain.rpc("eth_getStorageAt", [chain.usdt, "0x" + candidate.hex(), "latest"])
            if int(value, 16) == balance:
                return "0x" + candidate.hex()
    raise AssertionError("balance slot not found")


def set_token_balance(chain: Chain, slot: str, amount: int) -> None:
    chain.rpc("anvil_setStorageAt", [chain.usdt, slot, "0x" + amount.to_bytes(32, "big").hex()])


@pytest.mark.parametrize("policy", ["fail", "repay"])
def test_a_transaction_that_reverts_on_chain(
    api: Api, db: psycopg.Connection, chain: Chain, workers: Workers, client_key: str, tmp_path: Path, policy: str
) -> None:
    index = devchain.HOT_WALLET_INDEXES[0]
    wallet = devchain.dev_account(index).address
    wallets.upsert_wallet(db, "localhost", wallet, "hot", f"dev-mnemonic:{index}")
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, revert_policy=policy))
    slot = balance_slot(chain, wallet)
    funds = chain.balance(wallet, chain.usdt)
    pause_mining(chain)
    workers.start(1)
    orders = [("USDT", new_recipient(), "100")]
    ids = submit(api, client_key, orders)
    wait_statuses(db, ids, {"BROADCASTED"})
    set_token_balance(chain, slot, 0)  # the wallet's tokens are gone before the payment is mined
    resume_mining(chain)
    if policy == "fail":
        final = wait_terminal(db, ids, timeout=60)
        row = final[ids[0]]
        assert row["status"] == "FAILED" and row["failure_code"] == "reverted"
        assert "insufficient balance" in row["failure_reason"]
        assert chain.balance(orders[0][1], chain.usdt) == 0
        return
    deadline = time.monotonic() + 60
    while not db.execute("SELECT count(*) AS n FROM payouts WHERE status = 'REVERTED'").fetchone()["n"]:
        assert time.monotonic() < deadline, "the revert was not seen"
        time.sleep(0.3)
    set_token_balance(chain, slot, funds)
    final = wait_terminal(db, ids, timeout=60)
    assert final[ids[0]]["status"] == "CONFIRMED"
    assert_paid_exactly_once(db, chain, orders, ids, final)
    path = [
        r["to_status"]
        for r in db.execute(
            "SELECT to_status::text FROM withdrawal_events WHERE withdrawal_id = %s ORDER BY id", (ids[0],)
        ).fetchall()
    ]
    assert path.count("VALIDATING") == 2 and path[-1] == "CONFIRMED"


def test_wallets_at_their_in_flight_cap_hold_the_rest_until_some_land(
    api: Api,
    db: psycopg.Connection,
    chain: Chain,
    hot_wallets: list[str],
    workers: Workers,
    client_key: str,
    tmp_path: Path,
) -> None:
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, max_in_flight_per_wallet=1))
    pause_mining(chain)
    workers.start(1)
    orders = [("ETH", new_recipient(), "0.01") for _ in range(2 * len(hot_wallets))]  # new accounts: one each
    ids = submit(api, client_key, orders)
    wanted = {"BROADCASTED": len(hot_wallets), "VALIDATING": len(orders) - len(hot_wallets)}
    note = "waiting: every hot wallet has 1 transactions in flight"
    deadline = time.monotonic() + 60
    while True:
        rows = db.execute("SELECT status, status_note FROM withdrawals WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
        counts = {s: sum(r["status"] == s for r in rows) for s in wanted}
        if counts == wanted and all(r["status_note"] == note for r in rows if r["status"] == "VALIDATING"):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)
    senders = db.execute("SELECT sender, count(*) AS n FROM payouts GROUP BY sender").fetchall()
    assert sorted(r["n"] for r in senders) == [1] * len(hot_wallets)
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=120)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    assert_paid_exactly_once(db, chain, orders, ids, final)
