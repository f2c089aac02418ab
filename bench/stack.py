"""What the end-to-end and growth benchmarks run on: a scratch database, an anvil chain with funded
hot wallets, the API and the workers as processes, and two meters (CPU seconds per process kind,
and blocks as they are mined).

Every process started here is recorded in a `Processes` and stopped by its pid when the benchmark
ends, fails or is interrupted (SIGINT, SIGTERM); the children also get SIGTERM if the benchmark
itself dies (PR_SET_PDEATHSIG), so none outlives it.
"""

from __future__ import annotations

import ctypes
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from eth_account import Account
from psycopg.rows import dict_row

from app.cli import migrate
from db import clients, wallets
from jobs import devchain
from jobs.batchcontract import approve_data, batch_contract_address, deploy_batch_contract
from tests.conftest import ADMIN_URL, REPO_ROOT, free_port

CHAIN = "localhost"
CHAIN_ID = 31337
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Extra hot wallets come from the anvil mnemonic after the ten accounts anvil funds itself.
FIRST_EXTRA_WALLET_INDEX = 10
WALLET_ETH = 10**24  # 1,000,000 ETH in wei
WALLET_USDT = 10**12  # 1,000,000 USDT in base units (6 decimals)
SETUP_MAX_FEE = 500 * 10**9
SETUP_TIP = 10**9
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the finally blocks still stop the children


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` that stops processes runs."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Processes:
    """The processes a benchmark started, by kind; `stop_all` ends them by pid, newest first."""

    log_dir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, kind: str, argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        number = sum(1 for k, _ in self.started if k == kind) + 1
        with (self.log_dir / f"{kind}-{number}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops them in order
                preexec_fn=_die_with_parent,  # every child starts from the main thread
            )
        self.started.append((kind, proc))
        return proc

    def pids(self, kind: str) -> list[int]:
        return [p.pid for p in self.of_kind(kind)]

    def of_kind(self, kind: str) -> list[subprocess.Popen[bytes]]:
        """The running processes of one kind."""
        return [p for k, p in self.started if k == kind and p.poll() is None]

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self.started = [(k, p) for k, p in self.started if p is not proc]

    def stop_kind(self, kind: str) -> None:
        for k, p in reversed(list(self.started)):
            if k == kind:
                self.stop(p)

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.started)):
            try:
                self.stop(proc)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"could not stop pid {proc.pid}: {exc}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Database


def scratch_database(name: str) -> str:
    """A new, migrated database `name` (always payouts_bench_*) on TEST_DATABASE_URL's server."""
    if not name.startswith("payouts_bench_"):
        raise ValueError(f"scratch databases are named payouts_bench_*, not {name}")
    drop_database(name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rpartition("/")[0] + "/" + name
    migrate(url)
    return url


def drop_database(name: str) -> None:
    if not name.startswith("payouts_bench_"):
        raise ValueError(f"only payouts_bench_* databases are dropped here, not {name}")
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def new_client(url: str, name: str) -> tuple[str, str]:
    """(client id, API key) of a new API client."""
    with connect(url) as conn:
        client_id = clients.create_client(conn, name)
        return str(client_id), clients.create_key(conn, client_id)


# ------------------------------------------------------------------------------------------------
# Chain


@dataclass
class BenchChain:
    rpc_url: str
    block_time: float
    gas_limit: int
    token: str
    main_account: str
    hot_wallets: list[tuple[int, str]]  # (mnemonic index, address)
    existing: list[str]  # recipients that already hold ETH and USDT

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc_call(self.rpc_url, method, params or [])


def rpc_call(url: str, method: str, params: list[Any]) -> Any:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=60)
    body = reply.json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


def rpc_batch(url: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    if not calls:
        return []
    payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    answers = {a["id"]: a for a in httpx.post(url, json=payload, timeout=120).json()}
    out = []
    for i, (method, _) in enumerate(calls):
        if "error" in answers[i]:
            raise RuntimeError(f"{method}: {answers[i]['error']}")
        out.append(answers[i]["result"])
    return out


def start_chain(
    procs: Processes, *, block_time: float, gas_limit: int, wallet_count: int, existing_count: int, seed: int = 7
) -> BenchChain:
    """anvil with the dev token, the batch contract, `wallet_count` funded hot wallets that have
    approved the batch contract, and `existing_count` recipients that already hold ETH and USDT."""
    port = free_port()
    rpc_url = f"http://127.0.0.1:{port}"
    argv = devchain.anvil_argv(port=port, chain_id=CHAIN_ID, block_time=block_time, gas_limit=gas_limit)
    proc = procs.start("anvil", argv)
    devchain.wait_for_rpc(proc, rpc_url, CHAIN_ID, 20)
    info = devchain.bootstrap_chain(rpc_url)
    deployer = devchain.dev_account(devchain.DEPLOYER_INDEX)
    deploy_batch_contract(rpc_url, deployer.key)
    token = info["tokens"]["USDT"]
    extra = range(FIRST_EXTRA_WALLET_INDEX, FIRST_EXTRA_WALLET_INDEX + max(0, wallet_count - 4))
    hot = list(zip(devchain.HOT_WALLET_INDEXES, info["hot_wallets"], strict=True))[:wallet_count]
    hot += [(i, devchain.dev_account(i).address) for i in extra]
    rng = random.Random(seed)  # noqa: S311 - reproducible test addresses, not secrets
    existing = [Account.from_key(rng.randbytes(32)).address for _ in range(existing_count)]

    rpc_batch(rpc_url, [("anvil_setBalance", [a, hex(WALLET_ETH)]) for _, a in hot])
    rpc_batch(rpc_url, [("anvil_setBalance", [a, hex(10**15)]) for a in existing])
    contract = devchain.token_contract(httpx_web3(rpc_url), token)
    sends: list[tuple[int, dict[str, Any]]] = []
    for _, address in hot[4:]:
        sends.append(
            (devchain.DEPLOYER_INDEX, {"to": token, "data": contract.encode_abi("mint", [address, WALLET_USDT])})
        )
    for address in existing:
        sends.append((devchain.DEPLOYER_INDEX, {"to": token, "data": contract.encode_abi("mint", [address, 10**6])}))
    approve = "0x" + approve_data(batch_contract_address(), 2**256 - 1).hex()
    for index, _ in hot:
        sends.append((index, {"to": token, "data": approve}))
    send_and_wait(rpc_url, sends)
    return BenchChain(
        rpc_url=rpc_url,
        block_time=block_time,
        gas_limit=gas_limit,
        token=token,
        main_account=info["main_account"],
        hot_wallets=hot,
        existing=existing,
    )


def httpx_web3(rpc_url: str) -> Any:
    from web3 import Web3

    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))


def send_and_wait(rpc_url: str, sends: list[tuple[int, dict[str, Any]]], timeout: float = 120) -> None:
    """Sign and send set-up transactions (account index, {to, data}) back to back, then wait for
    all their receipts (interval mining puts them in a few blocks)."""
    nonces: dict[int, int] = {}
    raw: list[str] = []
    for index, tx in sends:
        account = devchain.dev_account(index)
        if index not in nonces:
            nonces[index] = int(rpc_call(rpc_url, "eth_getTransactionCount", [account.address, "pending"]), 16)
        signed = account.sign_transaction(
            {
                "chainId": CHAIN_ID,
                "nonce": nonces[index],
                "to": tx["to"],
                "data": tx["data"],
                "value": 0,
                "gas": 200_000,
                "maxFeePerGas": SETUP_MAX_FEE,
                "maxPriorityFeePerGas": SETUP_TIP,
            }
        )
        nonces[index] += 1
        raw.append("0x" + signed.raw_transaction.hex())
    hashes: list[str] = []
    for start in range(0, len(raw), 500):
        hashes += rpc_batch(rpc_url, [("eth_sendRawTransaction", [r]) for r in raw[start : start + 500]])
    deadline = time.monotonic() + timeout
    waiting = hashes
    while waiting:
        receipts = rpc_batch(rpc_url, [("eth_getTransactionReceipt", [h]) for h in waiting])
        for h, receipt in zip(waiting, receipts, strict=True):
            if receipt is not None and receipt["status"] != "0x1":
                raise RuntimeError(f"set-up transaction {h} reverted")
        waiting = [h for h, receipt in zip(waiting, receipts, strict=True) if receipt is None]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} set-up transactions not mined after {timeout}s")
        if waiting:
            time.sleep(0.2)


def register_wallets(url: str, chain: BenchChain) -> None:
    with connect(url) as conn:
        for index, address in chain.hot_wallets:
            wallets.upsert_wallet(conn, CHAIN, address, "hot", f"dev-mnemonic:{index}")
        wallets.upsert_wallet(conn, CHAIN, chain.main_account, "main", f"dev-mnemonic:{devchain.MAIN_ACCOUNT_INDEX}")


def chains_toml(chain: BenchChain, *, confirmations: int, max_in_flight: int) -> str:
    """The registry of the bench chain; batch settings stay at their defaults (batch_max 100,
    batch_gas_share 0.5, batch_wait_seconds half a block time) and so does the stuck timer (3 block times)."""
    return f"""
[chains.{CHAIN}]
chain_id = {CHAIN_ID}
enabled = true
rpc_urls = ["{chain.rpc_url}"]
confirmations = {confirmations}
block_time_seconds = {chain.block_time:g}
fee_model = "eip1559"
max_fee_per_gas_gwei = "1000"
max_priority_fee_per_gas_gwei = "100"
max_in_flight_per_wallet = {max_in_flight}
batch_contract = "{batch_contract_address()}"
native = {{ symbol = "ETH", decimals = 18, min = "0.000001", max = "1000" }}
tokens.USDT = {{ address = "{chain.token}", decimals = 6, min = "0.01", max = "1000000" }}
"""


# ------------------------------------------------------------------------------------------------
# API and workers


def service_env(url: str, chain: BenchChain, chains_file: Path) -> dict[str, str]:
    return os.environ | {
        "DATABASE_URL": url,
        "PAYOUTS_ENV": "development",
        "PAYOUTS_CHAINS_FILE": str(chains_file),
        "PAYOUTS_ENABLED_CHAINS": CHAIN,
        "PAYOUTS_RPC_URLS_LOCALHOST": chain.rpc_url,
        "PAYOUTS_DB_POOL_SIZE": "20",
        "PYTHONUNBUFFERED": "1",
    }


def start_api(procs: Processes, env: dict[str, str], app: str = "app.main:app") -> str:
    """One uvicorn process (uvloop, httptools), as bench/ingest.py runs it; returns its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = procs.start("api", argv, env)
    base = f"http://127.0.0.1:{port}"
    devchain.wait_until_serving(f"{base}/healthz", proc, 30)
    return base


def start_workers(procs: Processes, env: dict[str, str], count: int, concurrency: int) -> None:
    for _ in range(count):
        procs.start("worker", [sys.executable, "-m", "jobs.worker", "--concurrency", str(concurrency)], env)


# ------------------------------------------------------------------------------------------------
# Meters


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, in seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds per process kind over a window.

    Samples every second the processes of each kind (the benchmark's own by pid; for postgres the
    backends serving the scratch database, from pg_stat_activity, minus the meter's own
    connections), keeping the last reading of each pid, so a process that exits mid-window
    counts up to its last sample. A pid seen first after the window opened counts from zero.
    Postgres's shared background processes (WAL writer, checkpointer, autovacuum) are not counted:
    they also serve the other databases on this server.
    """

    def __init__(self, procs: Processes, database: str, url: str, kinds: Sequence[str]) -> None:
        self.procs = procs
        self.database = database
        self.url = url
        self.kinds = list(kinds)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.kind_of: dict[int, str] = {}
        self.excluded: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def exclude_backend(self, pid: int) -> None:
        self.excluded.add(pid)

    def _pids(self) -> dict[int, str]:
        found = {pid: kind for kind in self.kinds if kind != "postgres" for pid in self.procs.pids(kind)}
        if "postgres" in self.kinds and self._conn is not None:
            rows = self._conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,)
            ).fetchall()
            found |= {r["pid"]: "postgres" for r in rows if r["pid"] not in self.excluded}
        return found

    def _sample(self, opening: bool) -> None:
        for pid, kind in self._pids().items():
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            if pid not in self.first:
                self.first[pid] = seconds if opening else 0.0
                self.kind_of[pid] = kind
            self.last[pid] = seconds

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample(False)

    def start(self) -> None:
        self._conn = connect(self.url)
        self._sample(True)
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(False)
        if self._conn is not None:
            self._conn.close()
        totals = dict.fromkeys(self.kinds, 0.0)
        for pid, kind in self.kind_of.items():
            totals[kind] += self.last[pid] - self.first[pid]
        return totals


@dataclass
class Block:
    number: int
    seen: float  # wall clock when the meter first saw it (at most one poll interval late)
    timestamp: int
    gas_used: int
    gas_limit: int
    transactions: int


class BlockMeter:
    """Every block mined while it runs, with the wall-clock time it was first seen.

    anvil's block timestamps are whole seconds, too coarse for request-to-inclusion times, so
    inclusion is timed by when the block appeared (polled every 50 ms).
    """

    def __init__(self, rpc_url: str, poll: float = 0.05) -> None:
        self.rpc_url = rpc_url
        self.poll = poll
        self.blocks: dict[int, Block] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(timeout=10, trust_env=False) as http:

            def call(method: str, params: list[Any]) -> Any:
                body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                return http.post(self.rpc_url, json=body).json()["result"]

            last = int(call("eth_blockNumber", []), 16)
            while not self._stop.wait(self.poll):
                try:
                    head = int(call("eth_blockNumber", []), 16)
                    seen = time.time()
                    for number in range(last + 1, head + 1):
                        b = call("eth_getBlockByNumber", [hex(number), False])
                        self.blocks[number] = Block(
                            number=number,
                            seen=seen,
                            timestamp=int(b["timestamp"], 16),
                            gas_used=int(b["gasUsed"], 16),
                            gas_limit=int(b["gasLimit"], 16),
                            transactions=len(b["transactions"]),
                        )
                    last = max(last, head)
                except (httpx.HTTPError, KeyError, ValueError):
                    continue  # a busy node: look again at the next poll

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="block-meter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model})"
