"""Batch payouts: many withdrawals per transaction, a bad recipient isolated, three chains at once."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from db import wallets
from jobs import devchain
from jobs.batchcontract import batch_contract_address
from tests.conftest import Api, run_api
from tests.engine.conftest import Chain, Workers, new_recipient, start_chain, submit, wait_terminal
from tests.engine.test_faults import (
    assert_paid_exactly_once,
    chains_file,
    mixed_orders,
    pause_mining,
    resume_mining,
)

pytestmark = pytest.mark.chain


def test_a_bad_recipient_fails_alone_and_the_batch_pays_the_rest(
    api: Api, db: psycopg.Connection, chain: Chain, workers: Workers, client_key: str
) -> None:
    index = devchain.HOT_WALLET_INDEXES[0]
    wallets.upsert_wallet(db, "localhost", devchain.dev_account(index).address, "hot", f"dev-mnemonic:{index}")
    # Recipients that already hold ETH, so native payments are batched too.
    good = [new_recipient() for _ in range(9)]
    for address in good:
        chain.rpc("anvil_setBalance", [address, hex(10**15)])
    # A contract without a payable fallback rejects ETH: paying it reverts the whole batch call.
    rejecting = batch_contract_address()
    orders = [("ETH", a, "0.1") for a in good[:5]] + [("ETH", rejecting, "0.1")] + [("ETH", a, "0.1") for a in good[5:]]
    workers.start(1)
    ids = submit(api, client_key, orders)
    final = wait_terminal(db, ids, timeout=90)
    bad = final[ids[5]]
    assert bad["status"] == "FAILED" and bad["failure_code"] == "simulation_reverted", bad
    assert bad["failure_reason"]
    others = [final[i] for i in ids if i != ids[5]]
    assert {r["status"] for r in others} == {"CONFIRMED"}
    for address in good:
        assert chain.balance(address) == 10**15 + 10**17
    transactions = db.execute("SELECT count(*) AS n FROM payouts WHERE kind = 'withdrawal'").fetchone()["n"]
    assert transactions < len(others)


def test_a_group_too_small_for_a_batch_counts_each_transfer_against_the_cap(
    api: Api, db: psycopg.Connection, chain: Chain, workers: Workers, client_key: str, tmp_path: Path
) -> None:
    # Three ETH payments to accounts that exist could share a batch, but three are too few to pay
    # its overhead back (MIN_BATCH 4): they go out as three transfers. One wallet with room for two
    # transactions in flight takes two; the third waits until one of them is mined.
    index = devchain.HOT_WALLET_INDEXES[0]
    sender = devchain.dev_account(index).address
    wallets.upsert_wallet(db, "localhost", sender, "hot", f"dev-mnemonic:{index}")
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, max_in_flight_per_wallet=2))
    recipients = [new_recipient() for _ in range(3)]
    for address in recipients:
        chain.rpc("anvil_setBalance", [address, hex(10**15)])
    orders = [("ETH", address, "0.1") for address in recipients]
    ids = submit(api, client_key, orders)  # all waiting before the planner starts: one pass sees them
    pause_mining(chain)
    workers.start(1)
    deadline = time.monotonic() + 60
    while True:
        rows = db.execute("SELECT status, status_note FROM withdrawals WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
        statuses = sorted(r["status"] for r in rows)
        if statuses == ["BROADCASTED", "BROADCASTED", "VALIDATING"]:
            # "wallet 0x... has 2 transactions in flight" from the pass that held it back, then
            # "every hot wallet has 2 ..." from the next ones.
            (waiting,) = [r["status_note"] for r in rows if r["status"] == "VALIDATING"]
            assert waiting.startswith("waiting: ") and waiting.endswith(" has 2 transactions in flight"), waiting
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)
    in_flight = db.execute("SELECT count(*) AS n FROM payouts WHERE sender = %s", (sender,)).fetchone()["n"]
    assert in_flight == 2
    resume_mining(chain)
    final = wait_terminal(db, ids, timeout=90)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    for address in recipients:
        assert chain.balance(address) == 10**15 + 10**17


def chains_toml(chains: dict[str, tuple[int, Chain, str]]) -> str:
    out = []
    for name, (chain_id, c, fee_model) in chains.items():
        native = {"polygon": "POL", "bsc": "BNB"}.get(name, "ETH")
        out.append(f"""
[chains.{name}]
chain_id = {chain_id}
enabled = true
rpc_urls = ["{c.rpc_url}"]
confirmations = 2
block_time_seconds = 1
fee_model = "{fee_model}"
max_fee_per_gas_gwei = "1000"
max_priority_fee_per_gas_gwei = "100"
batch_contract = "{batch_contract_address()}"
native = {{ symbol = "{native}", decimals = 18, min = "0.000001", max = "1000" }}
tokens.USDT = {{ address = "{c.usdt}", decimals = 6, min = "0.01", max = "1000000" }}
""")
    return "".join(out)


def test_500_withdrawals_on_three_chains_at_once(
    database_url: str, db: psycopg.Connection, workers: Workers, client_key: str, tmp_path: Path
) -> None:
    specs = {"polygon": (137, "eip1559"), "bsc": (56, "legacy"), "arbitrum": (42161, "eip1559")}
    chains: dict[str, tuple[int, Chain, str]] = {}
    try:
        for name, (chain_id, fee_model) in specs.items():
            folder = tmp_path / name
            folder.mkdir()
            chains[name] = (chain_id, start_chain(folder, chain_id=chain_id, approve=False), fee_model)
        registry = tmp_path / "chains.toml"
        registry.write_text(chains_toml(chains))
        for name, (_, c, _) in chains.items():
            for index, address in zip(devchain.HOT_WALLET_INDEXES, c.info["hot_wallets"], strict=True):
                wallets.upsert_wallet(db, name, address, "hot", f"dev-mnemonic:{index}")
        env = {"PAYOUTS_CHAINS_FILE": str(registry)}
        workers.env |= env
        workers.env.pop("PAYOUTS_ENABLED_CHAINS", None)
        workers.start(2)
        with run_api(database_url, tmp_path / "api.log", env) as api:
            plans: dict[str, list[tuple[str, str, str]]] = {}
            ids: dict[str, list[str]] = {}
            for n, name in enumerate(chains):
                count = 167 if n < 2 else 166
                orders = mixed_orders(count, seed=20 + n)
                native = {"polygon": "POL", "bsc": "BNB"}.get(name, "ETH")
                plans[name] = orders
                ids[name] = submit(
                    api, client_key, [(native if a == "ETH" else a, to, amt) for a, to, amt in orders], chain=name
                )
            everything = [i for chain_ids in ids.values() for i in chain_ids]
            assert len(everything) == 500
            final = wait_terminal(db, everything, timeout=300)
        assert {r["status"] for r in final.values()} == {"CONFIRMED"}
        for name, (_, c, _) in chains.items():
            assert_paid_exactly_once(db, c, plans[name], ids[name], final)
        transactions = db.execute("SELECT count(*) AS n FROM payouts WHERE kind = 'withdrawal'").fetchone()["n"]
        assert transactions < 500
        legacy = db.execute(
            "SELECT count(*) AS n FROM tx_attempts a JOIN payouts p ON p.id = a.payout_id "
            "WHERE p.chain = 'bsc' AND (a.gas_price IS NULL OR a.max_fee_per_gas IS NOT NULL)"
        ).fetchone()["n"]
        assert legacy == 0
    finally:
        for _, c, _ in chains.values():
            devchain.stop_process(c.process)


def test_a_wrong_batch_contract_address_is_never_paid_into(
    api: Api,
    db: psycopg.Connection,
    chain: Chain,
    hot_wallets: list[str],
    workers: Workers,
    client_key: str,
    tmp_path: Path,
) -> None:
    void = new_recipient()  # no code there: a native batch sent to it would pay nobody
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, batch_contract=void))
    existing = [new_recipient() for _ in range(6)]
    for address in existing:
        chain.rpc("anvil_setBalance", [address, hex(10**15)])
    orders = [("ETH", a, "0.01") for a in existing] + [("USDT", new_recipient(), "3") for _ in range(4)]
    workers.start(1)
    ids = submit(api, client_key, orders)
    final = wait_terminal(db, ids, timeout=90)
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    for address in existing:
        assert chain.balance(address) == 10**15 + 10**16
    assert chain.balance(void) == 0
    assert db.execute("SELECT count(*) AS n FROM payouts").fetchone()["n"] == len(ids)
    assert "is not our batch contract" in workers.logs()
