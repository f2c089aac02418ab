"""Shared fixtures: a real Postgres database migrated once per run, and the API as a real server.

TEST_DATABASE_URL points at a Postgres server where the tests may create databases
(default: the local server as user postgres). Each run creates its own database and drops it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from app.cli import migrate
from app.registry import Chain, load_registry
from db import clients
from jobs import devchain

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tables emptied between tests (the transition table is data of the schema and stays).
APP_TABLES = (
    "tx_attempts, payout_items, payouts, nonces, hot_wallets, withdrawal_events, withdrawals, "
    "api_keys, api_clients, topups, topup_rules, wallet_balances, alert_state, "
    "procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"payouts_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(ADMIN_URL, name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to an emptied test database."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
        yield conn


@dataclass
class Api:
    url: str
    process: subprocess.Popen

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    try:
        devchain.wait_until_serving(url, proc, timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}:\n{log.read_text()[-3000:]}") from None


@contextlib.contextmanager
def run_api(database_url: str, log: Path, extra_env: dict[str, str] | None = None) -> Iterator[Api]:
    """The API served by uvicorn in its own process, as in production."""
    port = free_port()
    env = os.environ | {"DATABASE_URL": database_url, "PAYOUTS_ENV": "development"} | (extra_env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield Api(url=f"http://127.0.0.1:{port}", process=proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        text = log.read_text()
        # A 500 is a bug whatever the test checked: surface the traceback.
        assert "Traceback" not in text, f"the API logged an error:\n{text[-5000:]}"


@pytest.fixture(scope="session")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with run_api(database_url, tmp_path_factory.mktemp("api") / "api.log") as running:
        yield running


def make_client(conn: psycopg.Connection, name: str) -> tuple[uuid.UUID, str]:
    client_id = clients.create_client(conn, name)
    return client_id, clients.create_key(conn, client_id)


def shipped_chain(name: str = "localhost", **changes: Any) -> Chain:
    """A chain of the shipped registry (chains.toml), with some settings changed."""
    chain = load_registry().get(name)
    assert chain is not None, name
    return replace(chain, **changes)
