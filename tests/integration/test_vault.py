"""The key vault against Postgres, driven as an operator drives it: `payouts wallets create/import`,
`payouts keys rotate-master` as subprocesses with keys on standard input; and the production
refusals of the CLI, the worker and the API."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eth_account import Account
from web3 import Web3

from jobs import keys
from jobs.keyproviders import LocalProvider
from jobs.vault import DataKeyCache, SignerKeys, VaultError
from tests.conftest import REPO_ROOT, free_port

Conn = psycopg.Connection[dict[str, Any]]  # the `db` fixture's rows are dicts
KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"


def payouts(
    env: dict[str, str], *args: str, stdin: str = "", extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT,
        env=env | (extra or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "master.key"


@pytest.fixture
def env(database_url: str, key_file: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")} | {
        "DATABASE_URL": database_url,
        "PAYOUTS_KEY_PROVIDER": "local",
        "PAYOUTS_LOCAL_MASTER_KEY_FILE": str(key_file),
    }


def wallet(db: Conn, address: str) -> dict[str, Any]:
    row = db.execute(
        "SELECT w.id, w.key_ref, w.role, k.master_key_id FROM hot_wallets w "
        "LEFT JOIN wallet_keys k ON k.wallet_id = w.id WHERE w.address = %s",
        (address,),
    ).fetchone()
    assert row is not None
    return row


def test_create_makes_a_key_inside_and_prints_only_the_address(
    db: Conn, env: dict[str, str], key_file: Path, database_url: str
) -> None:
    done = payouts(env, "wallets", "create", "localhost", "--role", "hot")
    assert done.returncode == 0, done.stderr
    address = done.stdout.strip()
    assert Web3.is_checksum_address(address) and done.stdout == address + "\n"
    assert "made a local master key file" in done.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    row = wallet(db, address)
    assert row["key_ref"] == f"vault:{row['id']}" and row["role"] == "hot"
    with SignerKeys(database_url, LocalProvider(key_file), DataKeyCache(0)) as signer:
        assert Account.from_key(signer.open(row["id"])).address == address
        with pytest.raises(VaultError, match="no key in the vault"):
            signer.open(uuid.uuid4())


def test_import_reads_the_key_from_stdin_and_the_signer_uses_it(
    db: Conn, env: dict[str, str], key_file: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = payouts(env, "wallets", "import", "localhost", "--role", "hot", stdin=KEY + "\n")
    assert done.returncode == 0, done.stderr
    address = Account.from_key(KEY).address
    assert done.stdout == address + "\n"
    assert KEY[2:] not in done.stdout + done.stderr
    row = wallet(db, address)
    # The signer's own path: load_signer with the process's settings.
    for name, value in env.items():
        if name.startswith("PAYOUTS_") or name == "DATABASE_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(keys, "_signer_keys", None)
    try:
        assert keys.load_signer(row["key_ref"], address=address).address == address
        with pytest.raises(keys.KeyUnavailable, match="derives another address"):
            keys.load_signer(row["key_ref"], address=Account.create().address)
        with pytest.raises(keys.KeyUnavailable, match="bad vault key reference"):
            keys.load_signer("vault:not-a-uuid", address=address)
    finally:
        keys.signer_keys().close()

    listed = payouts(env, "wallets", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{address}  vault (local {row['master_key_id']})" in listed.stdout
    assert KEY[2:] not in listed.stdout

    again = payouts(env, "wallets", "import", "localhost", "--role", "hot", stdin=KEY + "\n")
    assert again.returncode == 2 and "already has its key in the vault" in again.stderr
    for bad in ("0x1234", "zz" * 32):
        refused = payouts(env, "wallets", "import", "localhost", "--role", "hot", stdin=bad + "\n")
        assert refused.returncode == 2 and "never taken from arguments" in refused.stderr
    unknown = payouts(env, "wallets", "import", "nochain", "--role", "hot", stdin=KEY + "\n")
    assert unknown.returncode == 2 and "unknown chain" in unknown.stderr


def test_import_moves_a_registered_wallet_into_the_vault(db: Conn, env: dict[str, str]) -> None:
    address = Account.from_key(KEY).address
    assert (
        payouts(env, "wallets", "add", "localhost", address, "--role", "hot", "--key-ref", "dev-mnemonic:1").returncode
        == 0
    )
    assert "dev-mnemonic" in payouts(env, "wallets", "list").stdout
    done = payouts(env, "wallets", "import", "localhost", "--role", "hot", stdin=KEY)
    assert done.returncode == 0, done.stderr
    row = wallet(db, address)
    assert row["key_ref"] == f"vault:{row['id']}"


def test_rotation_rewraps_every_wallet_and_the_old_master_key_can_go(
    db: Conn, env: dict[str, str], key_file: Path, database_url: str
) -> None:
    addresses = []
    for _ in range(3):
        done = payouts(env, "wallets", "create", "localhost", "--role", "hot")
        assert done.returncode == 0, done.stderr
        addresses.append(done.stdout.strip())
    before = {wallet(db, a)["master_key_id"] for a in addresses}
    assert len(before) == 1

    rotated = payouts(env, "keys", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    for n in (1, 2, 3):
        assert f"re-wrapped {n}/3" in rotated.stderr
    assert "3 data key(s) re-wrapped" in rotated.stdout
    after = {wallet(db, a)["master_key_id"] for a in addresses}
    assert len(after) == 1 and after != before
    assert db.execute("SELECT count(*) AS n FROM wallet_keys WHERE rewrapped_at IS NOT NULL").fetchone() == {"n": 3}

    # Nothing is left under the old master key: retire it, and every key still opens.
    lines = [line for line in key_file.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2
    key_file.write_text(lines[-1] + "\n")
    with SignerKeys(database_url, LocalProvider(key_file), DataKeyCache(0)) as signer:
        for address in addresses:
            assert Account.from_key(signer.open(wallet(db, address)["id"])).address == address

    resumed = payouts(env, "keys", "rotate-master", "--rewrap-only")
    assert resumed.returncode == 0 and "0 data key(s) re-wrapped" in resumed.stdout

    # A rotation cut short (new master key made, nothing re-wrapped yet) is finished, not stacked.
    LocalProvider(key_file).rotate()
    stacked = payouts(env, "keys", "rotate-master")
    assert stacked.returncode == 2 and "finish the last rotation first" in stacked.stderr
    finished = payouts(env, "keys", "rotate-master", "--rewrap-only")
    assert finished.returncode == 0 and "3 data key(s) re-wrapped" in finished.stdout


def test_a_tampered_row_in_the_database_does_not_open(
    db: Conn, env: dict[str, str], database_url: str, key_file: Path
) -> None:
    done = payouts(env, "wallets", "import", "localhost", "--role", "hot", stdin=KEY)
    assert done.returncode == 0, done.stderr
    row = wallet(db, done.stdout.strip())
    # Postgres itself refuses a plain 32-byte key where a sealed one belongs.
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE wallet_keys SET sealed_key = %s WHERE wallet_id = %s", (bytes.fromhex(KEY[2:]), row["id"]))
    db.execute("UPDATE wallet_keys SET sealed_key = set_byte(sealed_key, 0, get_byte(sealed_key, 0) # 1)")
    with (
        SignerKeys(database_url, LocalProvider(key_file), DataKeyCache(0)) as signer,
        pytest.raises(VaultError, match="does not open") as exc,
    ):
        signer.open(row["id"])
    assert KEY[2:] not in str(exc.value)


PRODUCTION = {"PAYOUTS_ENV": "production"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"PAYOUTS_KEY_PROVIDER": ""}, "PAYOUTS_KEY_PROVIDER is not set"),
        ({}, "PAYOUTS_KEY_PROVIDER=local keeps the master key in a file"),
        ({"PAYOUTS_KEY_PROVIDER": "aws-kms", "AWS_REGION": "eu-west-1"}, "PAYOUTS_KMS_KEY_ID is not set"),
    ],
)
def test_production_refuses_to_start_the_cli_and_the_worker(
    env: dict[str, str], extra: dict[str, str], reason: str
) -> None:
    cli = payouts(env, "wallets", "list", extra=PRODUCTION | extra)
    assert cli.returncode == 2
    assert "refusing to start in production" in cli.stderr and reason in cli.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "jobs.worker"],
        cwd=REPO_ROOT,
        env=env | PRODUCTION | extra,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 2
    assert "worker: refusing to start in production" in worker.stderr and reason in worker.stderr


def test_production_refuses_to_start_the_api(env: dict[str, str]) -> None:
    api = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env | PRODUCTION,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert api.returncode != 0
    assert "refusing to start in production" in api.stderr and "for development only" in api.stderr
