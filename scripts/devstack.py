"""`make dev`: bring the whole system up locally and keep it up until Ctrl-C.

Database (DATABASE_URL, else an embedded Postgres from the pgserver package, else the local
server), migrations, a local anvil chain with a test USDT and funded wallets, the API and the
job workers. Every process it starts is supervised: one that dies is started again, as systemd or
Kubernetes would in production. `.dev/stack.json` always holds the current state for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.cli import migrate  # noqa: E402
from app.registry import load_registry  # noqa: E402
from app.settings import redact_dsn  # noqa: E402
from db import clients, wallets  # noqa: E402
from jobs import devchain  # noqa: E402
from jobs.batchcontract import deploy_batch_contract  # noqa: E402

# PAYOUTS_DEV_DIR moves everything the stack writes (tests run a second stack beside yours).
DEV_DIR = Path(os.environ.get("PAYOUTS_DEV_DIR") or REPO_ROOT / ".dev").resolve()
LOG_DIR = DEV_DIR / "logs"
STACK_FILE = DEV_DIR / "stack.json"
KEY_FILE = DEV_DIR / "api_key"
DEV_CLIENT = "dev"
LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/payouts_dev"
RESTART_BACKOFF_MAX_SECONDS = 30.0


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


# --- database ---------------------------------------------------------------------------------


def database() -> str:
    """DATABASE_URL when set; else an embedded Postgres; else the machine's local server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        say(f"database: DATABASE_URL ({redact_dsn(url)})")
        return url
    try:
        import pgserver

        server = pgserver.get_server(DEV_DIR / "pgdata", cleanup_mode="stop")
        server.psql("SELECT 1")
        url = server.get_uri()
        say(f"database: embedded Postgres in .dev/pgdata ({url})")
        return url
    except Exception as exc:  # any failure of the embedded server: say why, use the local one
        say(f"embedded Postgres (pgserver) is unavailable: {type(exc).__name__}: {exc}")
        say(f"falling back to the local server: {LOCAL_SERVER_URL} (set DATABASE_URL to choose)")
    admin = LOCAL_SERVER_URL.rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'payouts_dev'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE payouts_dev")
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"[dev] no database: the local server at 127.0.0.1:5432 is not reachable ({exc}).\n"
            "[dev] start Postgres, or set DATABASE_URL=postgresql://user@host:port/db"
        ) from None
    return LOCAL_SERVER_URL


def dev_api_key(url: str) -> str:
    """The dev client's key: reuse the one in .dev/api_key while it is valid, else make one."""
    with psycopg.connect(url, autocommit=True) as conn:
        client_id = clients.find_client(conn, DEV_CLIENT) or clients.create_client(conn, DEV_CLIENT)
        if KEY_FILE.exists():
            key = KEY_FILE.read_text().strip()
            row = conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = %s AND client_id = %s AND revoked_at IS NULL",
                (clients.hash_key(key), client_id),
            ).fetchone()
            if row:
                return key
        key = clients.create_key(conn, client_id)
    KEY_FILE.write_text(key + "\n")
    KEY_FILE.chmod(0o600)
    return key


def register_wallets(url: str, chain: str, info: devchain.ChainInfo) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        wallets.upsert_wallet(conn, chain, info["main_account"], "main", f"dev-mnemonic:{devchain.MAIN_ACCOUNT_INDEX}")
        for index, address in zip(devchain.HOT_WALLET_INDEXES, info["hot_wallets"], strict=True):
            wallets.upsert_wallet(conn, chain, address, "hot", f"dev-mnemonic:{index}")
        # The account manager's rules, unless the operator changed them (`payouts accounts rule`):
        # hot wallets are refilled to what the bootstrap gave them once they are down to a tenth.
        for asset, decimals, target, alert_below in (
            ("ETH", 18, devchain.HOT_WALLET_ETH_TARGET, 10 * devchain.HOT_WALLET_ETH_TARGET),
            ("USDT", 6, devchain.HOT_WALLET_TOKEN_TARGET, 10 * devchain.HOT_WALLET_TOKEN_TARGET),
        ):
            unit = 10**decimals
            conn.execute(
                "INSERT INTO topup_rules (chain, asset, threshold, target, daily_limit, main_alert_below) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (chain, asset) DO NOTHING",
                (chain, asset, target // 10 * unit, target * unit, 5 * target * unit, alert_below * unit),
            )


# --- supervised processes -------------------------------------------------------------------


@dataclass
class Supervised:
    name: str
    kind: str  # "api", "worker" or "chain"
    argv: list[str]
    env: dict[str, str]
    after_start: Any = None  # called with the process once it is up
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        log = (LOG_DIR / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        log.close()
        self.started_at = time.monotonic()
        if self.after_start:
            self.after_start(self)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_stack(state: dict[str, Any], procs: list[Supervised]) -> None:
    state["processes"] = {
        kind: [p.proc.pid for p in procs if p.kind == kind and p.proc and p.proc.poll() is None]
        for kind in ("api", "worker", "chain")
    }
    tmp = STACK_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(STACK_FILE)  # readers never see a half-written file


def wait_http(url: str, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    try:
        devchain.wait_until_serving(url, proc, timeout)
    except RuntimeError as exc:
        raise SystemExit(f"[dev] {name}: {exc}; see {LOG_DIR / (name + '.log')}") from None


def stop_leftovers() -> None:
    """Stop processes that a previous run left behind (its supervisor was killed outright)."""
    try:
        old = json.loads(STACK_FILE.read_text())
    except (OSError, ValueError):
        return
    for pid in (pid for pids in old.get("processes", {}).values() for pid in pids):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # already gone
        if "anvil" in cmdline or "app.main:app" in cmdline or "jobs.worker" in cmdline:
            say(f"stopping a leftover process from an earlier run: {pid} ({cmdline[:60]})")
            os.kill(pid, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("PAYOUTS_API_PORT", "8000")))
    parser.add_argument("--chain-port", type=int, default=int(os.environ.get("PAYOUTS_CHAIN_PORT", "8545")))
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--block-time", type=float, default=1.0, help="anvil block time in seconds")
    args = parser.parse_args(argv)

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(DEV_DIR, 0o700)
    stop_leftovers()
    url = database()
    say("applying migrations")
    migrate(url)

    chain_name = "localhost"
    registry_chain = load_registry().get(chain_name)
    assert registry_chain is not None, "chains.toml has no localhost chain"
    rpc_url = f"http://127.0.0.1:{args.chain_port}"
    state: dict[str, Any] = {
        "api_url": f"http://127.0.0.1:{args.api_port}",
        "database_url": url,
        "log_dir": str(LOG_DIR),
        "processes": {},
        "chains": [],
    }

    def chain_started(p: Supervised) -> None:
        assert p.proc is not None
        try:
            devchain.wait_for_rpc(p.proc, rpc_url, registry_chain.chain_id, timeout=30)
        except RuntimeError as exc:
            raise SystemExit(f"[dev] {exc}\n{devchain.log_tail(LOG_DIR / 'chain.log', 0)}") from None
        info = devchain.bootstrap_chain(rpc_url)
        expected = registry_chain.tokens["USDT"].address
        if info["tokens"]["USDT"] != expected:
            raise SystemExit(f"[dev] USDT deployed at {info['tokens']['USDT']}, chains.toml says {expected}")
        batch = deploy_batch_contract(rpc_url, devchain.dev_account(devchain.DEPLOYER_INDEX).key)
        if batch != registry_chain.batch_contract:
            raise SystemExit(f"[dev] batch contract at {batch}, chains.toml says {registry_chain.batch_contract}")
        register_wallets(url, chain_name, info)
        state["chains"] = [
            {
                "name": chain_name,
                "chain_id": info["chain_id"],
                "rpc_url": rpc_url,
                "native": registry_chain.native.symbol,
                "tokens": info["tokens"],
                "batch_contract": batch,
                "main_account": info["main_account"],
                "hot_wallets": info["hot_wallets"],
            }
        ]

    chain = Supervised(
        name="chain",
        kind="chain",
        argv=devchain.anvil_argv(
            port=args.chain_port,
            chain_id=registry_chain.chain_id,
            block_time=args.block_time,
            state_path=DEV_DIR / "anvil-state.json",
        ),
        env=dict(os.environ),
        after_start=chain_started,
    )
    service_env = os.environ | {
        "DATABASE_URL": url,
        "PAYOUTS_RPC_URLS_LOCALHOST": rpc_url,
        "PAYOUTS_ENABLED_CHAINS": chain_name,
        "PYTHONUNBUFFERED": "1",
    }
    api = Supervised(
        name="api",
        kind="api",
        argv=[
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.api_port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ],
        env=service_env,
    )
    workers = [
        Supervised(name=f"worker-{i}", kind="worker", argv=[sys.executable, "-m", "jobs.worker"], env=service_env)
        for i in range(1, args.workers + 1)
    ]
    procs = [chain, api, *workers]

    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    for port in (args.chain_port, args.api_port):
        if devchain.port_in_use(port):
            raise SystemExit(f"[dev] port {port} is in use: stop what listens there, or pass --chain-port/--api-port")
    try:
        say(f"starting anvil (chain id {registry_chain.chain_id}) on {rpc_url}")
        chain.start()
        state["api_key"] = dev_api_key(url)
        say("starting the API and the workers")
        for p in (api, *workers):
            p.start()
        assert api.proc is not None
        wait_http(f"{state['api_url']}/healthz", api.proc, "api")
        write_stack(state, procs)
        key = state["api_key"]
        say("up. Ctrl-C stops everything.")
        print(
            f"""
  API        {state["api_url"]}   (docs: {state["api_url"]}/docs)
  API key    {key}
  chain      {rpc_url}  (chain id {registry_chain.chain_id}, USDT {state["chains"][0]["tokens"]["USDT"]})
  logs       {LOG_DIR}
  state      {STACK_FILE}

  curl -s -X POST {state["api_url"]}/v1/withdrawals \\
    -H "Authorization: Bearer {key}" -H "Idempotency-Key: $(uuidgen || date +%s%N)" \\
    -H "Content-Type: application/json" \\
    -d '{{"chain": "localhost", "asset": "USDT", "to": "0x976EA74026E726554dB657fA54763abd0C3a0aa9", "amount": "12.5"}}'
""",
            flush=True,
        )
        while not stopping:
            time.sleep(0.5)
            changed = False
            for p in procs:
                assert p.proc is not None
                if p.proc.poll() is None or stopping:
                    continue
                now = time.monotonic()
                if p.next_start == 0.0:
                    # Quick crashes back off (1, 2, 4 ... 30 s); a long healthy run resets that.
                    uptime = now - p.started_at
                    delay = 0.0 if uptime > 60 else min(2.0**p.restarts, RESTART_BACKOFF_MAX_SECONDS)
                    p.restarts = 0 if uptime > 60 else p.restarts + 1
                    p.next_start = now + delay
                    say(
                        f"{p.name} exited with {p.proc.returncode}; restarting in {delay:.0f}s "
                        f"(log: {LOG_DIR / (p.name + '.log')})"
                    )
                if now >= p.next_start:
                    p.next_start = 0.0
                    p.start()
                    say(f"{p.name} restarted (pid {p.proc.pid})")
                    changed = True
            if changed:
                write_stack(state, procs)
    finally:
        say("stopping")
        for p in reversed(procs):
            p.stop()
        write_stack(state, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
