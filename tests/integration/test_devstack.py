"""`make dev` end to end: the stack comes up, takes a withdrawal, restarts a killed process and
stops everything on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import REPO_ROOT, free_port


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def read_stack(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.chain
def test_dev_stack_runs_supervises_and_stops(database_url: str, db: psycopg.Connection, tmp_path: Path) -> None:
    dev_dir = tmp_path / "dev"
    api_port, chain_port = free_port(), free_port()
    env = os.environ | {"DATABASE_URL": database_url, "PAYOUTS_DEV_DIR": str(dev_dir)}
    out = (tmp_path / "devstack.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "scripts/devstack.py", "--api-port", str(api_port), "--chain-port", str(chain_port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    stack_file = dev_dir / "stack.json"
    http = httpx.Client(timeout=10)
    try:
        stack = wait_for(lambda: read_stack(stack_file), 60, "stack.json")
        printed = (tmp_path / "devstack.out").read_text()
        assert stack["api_key"] in printed and stack["api_url"] in printed
        assert stack["api_url"] == f"http://127.0.0.1:{api_port}"
        assert stack["database_url"] == database_url
        [chain] = stack["chains"]
        assert chain["chain_id"] == 31337 and chain["native"] == "ETH"
        assert chain["rpc_url"] == f"http://127.0.0.1:{chain_port}"
        assert len(chain["hot_wallets"]) == 4 and chain["tokens"]["USDT"].startswith("0x")
        assert {k: len(v) for k, v in stack["processes"].items()} == {"api": 1, "worker": 2, "chain": 1}

        # The printed key works: a withdrawal is created, paid and confirmed on the local chain.
        http.base_url = httpx.URL(stack["api_url"])
        http.headers["Authorization"] = f"Bearer {stack['api_key']}"
        created = http.post(
            "/v1/withdrawals",
            headers={"Idempotency-Key": "devstack-1"},
            json={
                "chain": "localhost",
                "asset": "USDT",
                "to": "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
                "amount": "1.5",
            },
        )
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        done = wait_for(
            lambda: (w := http.get(f"/v1/withdrawals/{wid}").json())["status"] == "CONFIRMED" and w, 60, "CONFIRMED"
        )
        assert done["tx_hash"] and done["confirmations"] >= 2
        assert http.get("/readyz").json()["status"] == "ok"

        # A killed worker is started again and stack.json shows its new pid.
        victim = stack["processes"]["worker"][0]
        os.kill(victim, signal.SIGKILL)
        restarted = wait_for(
            lambda: (
                (s := read_stack(stack_file))
                and victim not in s["processes"]["worker"]
                and len(s["processes"]["worker"]) == 2
                and s
            ),
            30,
            "the worker to be restarted",
        )
        assert all(alive(pid) for pids in restarted["processes"].values() for pid in pids)
        pids = [pid for pids in restarted["processes"].values() for pid in pids]
    finally:
        http.close()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        out.close()
    assert code == 0, (tmp_path / "devstack.out").read_text()[-3000:]
    assert not [pid for pid in pids if alive(pid)], "Ctrl-C left processes running"
