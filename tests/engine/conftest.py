"""Fixtures for the payout engine: a real anvil chain, hot wallets, and real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from eth_account import Account
from web3 import Web3

from db import wallets
from jobs import devchain
from jobs.batchcontract import approve_data, batch_contract_address, deploy_batch_contract
from tests.conftest import REPO_ROOT, Api, free_port, make_client

TERMINAL = {"CONFIRMED", "FAILED", "CANCELED"}


@dataclass
class Chain:
    rpc_url: str
    process: subprocess.Popen
    info: devchain.ChainInfo
    log: Path

    def rpc(self, method: str, params: list | None = None):  # type: ignore[no-untyped-def]
        reply = httpx.post(
            self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=30
        ).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def balance(self, address: str, token: str | None = None) -> int:
        if token is None:
            return int(self.rpc("eth_getBalance", [address, "latest"]), 16)
        data = "0x70a08231" + "0" * 24 + address[2:].lower()
        return int(self.rpc("eth_call", [{"to": token, "data": data}, "latest"]), 16)

    @property
    def usdt(self) -> str:
        return self.info["tokens"]["USDT"]


def approve_batch_contract(rpc_url: str, chain_id: int, token: str) -> None:
    """What an operator does once per hot wallet and token (the engine does it too when needed):
    tests that pause mining need it done before they start."""
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    for index in devchain.HOT_WALLET_INDEXES:
        account = devchain.dev_account(index)
        signed = Account.sign_transaction(
            {
                "chainId": chain_id,
                "nonce": w3.eth.get_transaction_count(account.address),
                "to": token,
                "data": approve_data(batch_contract_address(), 2**256 - 1),
                "value": 0,
                "gas": 100_000,
                "maxFeePerGas": 100 * 10**9,
                "maxPriorityFeePerGas": 10**9,
            },
            account.key,
        )
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30)
        assert receipt["status"] == 1


def start_chain(
    tmp_path: Path,
    *,
    chain_id: int = 31337,
    block_time: float = 1.0,
    extra_args: tuple[str, ...] = (),
    approve: bool = True,
) -> Chain:
    port = free_port()
    log = tmp_path / "anvil.log"
    proc = devchain.start_anvil(
        port=port, chain_id=chain_id, block_time=block_time, log_path=log, extra_args=extra_args
    )
    rpc_url = f"http://127.0.0.1:{port}"
    info = devchain.bootstrap_chain(rpc_url)
    deploy_batch_contract(rpc_url, devchain.dev_account(devchain.DEPLOYER_INDEX).key)
    if approve:
        approve_batch_contract(rpc_url, chain_id, info["tokens"]["USDT"])
    return Chain(rpc_url=rpc_url, process=proc, info=info, log=log)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = start_chain(tmp_path)
    yield c
    devchain.stop_process(c.process)


@pytest.fixture
def hot_wallets(db: psycopg.Connection, chain: Chain) -> list[str]:
    for index, address in zip(devchain.HOT_WALLET_INDEXES, chain.info["hot_wallets"], strict=True):
        wallets.upsert_wallet(db, "localhost", address, "hot", f"dev-mnemonic:{index}")
    wallets.upsert_wallet(
        db, "localhost", chain.info["main_account"], "main", f"dev-mnemonic:{devchain.MAIN_ACCOUNT_INDEX}"
    )
    return chain.info["hot_wallets"]


@dataclass
class Workers:
    env: dict[str, str]
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    started: int = 0

    def start(self, count: int = 1, concurrency: int = 8) -> None:
        for _ in range(count):
            self.started += 1
            log = (self.log_dir / f"worker-{self.started}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jobs.worker", "--concurrency", str(concurrency)],
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.log_dir.glob("worker-*.log")))


@pytest.fixture
def workers(database_url: str, chain: Chain, tmp_path: Path) -> Iterator[Workers]:
    log_dir = tmp_path / "workers"
    log_dir.mkdir()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "PAYOUTS_RPC_URLS_LOCALHOST": chain.rpc_url,
        "PAYOUTS_ENABLED_CHAINS": "localhost",
        "PYTHONUNBUFFERED": "1",
    }
    w = Workers(env=env, log_dir=log_dir)
    yield w
    w.stop()


@pytest.fixture
def client_key(db: psycopg.Connection) -> str:
    return make_client(db, "engine-tests")[1]


def new_recipient() -> str:
    return Account.create().address


def submit(api: Api, key: str, items: list[tuple[str, str, str]], chain: str = "localhost") -> list[str]:
    """Create withdrawals (asset, to, amount); returns their ids."""
    ids = []
    with api.client(key) as http:
        for n, (asset, to, amount) in enumerate(items):
            r = http.post(
                "/v1/withdrawals",
                headers={"Idempotency-Key": f"{time.time_ns()}-{n}"},
                json={"chain": chain, "asset": asset, "to": to, "amount": amount},
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    return ids


def wait_terminal(
    db: psycopg.Connection, ids: list[str], timeout: float, on_tick: Callable[[], None] | None = None
) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute("SELECT * FROM withdrawals_with_tx WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
        if all(r["status"] in TERMINAL for r in rows) and len(rows) == len(ids):
            return {str(r["id"]): r for r in rows}
        if time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for r in rows:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            notes = {r["status_note"] for r in rows if r["status"] not in TERMINAL}
            payouts = db.execute(
                "SELECT p.status, p.sender, p.nonce, p.alert, w.status AS w_status, "
                "(SELECT count(*) FROM tx_attempts a WHERE a.payout_id = p.id) AS attempts "
                "FROM payouts p LEFT JOIN payout_items i ON i.payout_id = p.id AND i.live "
                "LEFT JOIN withdrawals w ON w.id = i.withdrawal_id "
                "WHERE p.status NOT IN ('CONFIRMED') ORDER BY p.sender, p.nonce"
            ).fetchall()
            nonces = db.execute("SELECT * FROM nonces").fetchall()
            raise AssertionError(
                f"not all terminal after {timeout}s: {counts}; notes: {list(notes)[:5]}\n"
                f"payouts not confirmed: {[tuple(p.values()) for p in payouts][:80]}\nnonces: {nonces}"
            )
        if on_tick:
            on_tick()
        time.sleep(0.5)
