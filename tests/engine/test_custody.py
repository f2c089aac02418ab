"""Payouts signed with keys from the vault: the hot wallets' keys are imported through the CLI (on
standard input), the master key is rotated while withdrawals are in flight and then retired, and
afterwards neither the worker logs nor a dump of the database holds any private key."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from db import wallets
from jobs import devchain
from tests.conftest import REPO_ROOT, Api
from tests.engine.conftest import TERMINAL, Chain, Workers, new_recipient, submit, wait_terminal

pytestmark = pytest.mark.chain


def pg_dump() -> str:
    found = shutil.which("pg_dump") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None)
    if found is None:
        pytest.fail("pg_dump is needed to check the database for keys")
    return str(found)


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def custody_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")} | {
        "DATABASE_URL": database_url,
        "PAYOUTS_KEY_PROVIDER": "local",
        "PAYOUTS_LOCAL_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }


@pytest.fixture
def vault_hot_wallets(
    db: psycopg.Connection, chain: Chain, workers: Workers, custody_env: dict[str, str]
) -> tuple[list[str], list[str]]:
    """The dev hot wallets with their keys imported into the vault as an operator would; returns
    the addresses and everything the CLI printed."""
    first = devchain.HOT_WALLET_INDEXES[0]
    done = cli(custody_env, "wallets", "import", "localhost", "--role", "hot")
    out, err = done.communicate(devchain.dev_account(first).key.hex() + "\n", timeout=60)  # makes the key file
    outputs = [out, err]
    procs = [
        cli(custody_env, "wallets", "import", "localhost", "--role", "hot") for _ in devchain.HOT_WALLET_INDEXES[1:]
    ]
    for index, proc in zip(devchain.HOT_WALLET_INDEXES[1:], procs, strict=True):
        outputs.extend(proc.communicate("0x" + devchain.dev_account(index).key.hex() + "\n", timeout=60))
        assert proc.returncode == 0, outputs[-1]
    assert done.returncode == 0, err
    imported = [line for line in "".join(outputs[0::2]).splitlines() if line]
    assert sorted(imported) == sorted(chain.info["hot_wallets"])
    wallets.upsert_wallet(
        db, "localhost", chain.info["main_account"], "main", f"dev-mnemonic:{devchain.MAIN_ACCOUNT_INDEX}"
    )
    refs = db.execute("SELECT key_ref FROM hot_wallets WHERE role = 'hot'").fetchall()
    assert len(refs) == 4 and all(r["key_ref"].startswith("vault:") for r in refs)
    workers.env.update({k: v for k, v in custody_env.items() if k.startswith("PAYOUTS_")})
    return chain.info["hot_wallets"], outputs


def orders(count: int) -> list[tuple[str, str, str]]:
    return [
        ("USDT", new_recipient(), f"{n + 1}.{n:06d}") if n % 2 else ("ETH", new_recipient(), f"0.{n + 1:06d}")
        for n in range(count)
    ]


def assert_paid(chain: Chain, items: list[tuple[str, str, str]], ids: list[str], final: dict[str, dict]) -> None:
    assert {r["status"] for r in final.values()} == {"CONFIRMED"}
    for (asset, to, _), wid in zip(items, ids, strict=True):
        assert chain.balance(to, None if asset == "ETH" else chain.usdt) == int(final[wid]["amount"]), (asset, to)


def test_vault_keys_sign_through_a_master_key_rotation_and_never_leak(
    api: Api,
    db: psycopg.Connection,
    chain: Chain,
    vault_hot_wallets: tuple[list[str], list[str]],
    workers: Workers,
    client_key: str,
    custody_env: dict[str, str],
    database_url: str,
) -> None:
    _, outputs = vault_hot_wallets
    key_file = Path(custody_env["PAYOUTS_LOCAL_MASTER_KEY_FILE"])
    old_master = {r["master_key_id"] for r in db.execute("SELECT master_key_id FROM wallet_keys").fetchall()}
    assert len(old_master) == 1

    workers.start(2)
    first = orders(16)
    # Mining waits until the rotation is over, so that it overlaps withdrawals on their way however
    # long the command takes (fee bumps meanwhile are signed through the vault too).
    chain.rpc("evm_setIntervalMining", [0])
    first_ids = submit(api, client_key, first)
    # Rotate once signing has started and while withdrawals are still on their way.
    deadline = time.monotonic() + 20
    while not db.execute("SELECT 1 FROM payouts WHERE status <> 'PLANNED' LIMIT 1").fetchone():
        assert time.monotonic() < deadline, workers.logs()[-3000:]
        time.sleep(0.2)
    rotation = cli(custody_env, "keys", "rotate-master")
    out, err = rotation.communicate(timeout=60)
    outputs += [out, err]
    assert rotation.returncode == 0, err
    assert "re-wrapped 4/4" in err
    in_flight = db.execute(
        "SELECT count(*) AS n FROM withdrawals WHERE id = ANY(%s::uuid[]) AND status <> ALL(%s)",
        (first_ids, list(TERMINAL)),
    ).fetchone()["n"]
    assert in_flight > 0, "the rotation should overlap withdrawals in flight"
    chain.rpc("evm_setIntervalMining", [1])
    new_master = {r["master_key_id"] for r in db.execute("SELECT master_key_id FROM wallet_keys").fetchall()}
    assert len(new_master) == 1 and new_master != old_master

    assert_paid(chain, first, first_ids, wait_terminal(db, first_ids, timeout=30))

    # Retire the old master key: the workers keep signing with the re-wrapped data keys.
    current = [line for line in key_file.read_text().splitlines() if line and not line.startswith("#")][-1]
    key_file.write_text(current + "\n")
    second = orders(6)
    second_ids = submit(api, client_key, second)
    assert_paid(chain, second, second_ids, wait_terminal(db, second_ids, timeout=30))
    logs = workers.logs()
    assert "Traceback" not in logs, logs[-3000:]

    # No private key anywhere: worker logs, CLI output, a dump of the database's data.
    workers.stop()
    dump = subprocess.run(
        [pg_dump(), "--data-only", "--no-owner", database_url], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "wallet_keys" in dump and len(dump) > 10_000
    haystack = (logs + "\n".join(outputs) + dump).lower()
    for index in devchain.HOT_WALLET_INDEXES:
        key = devchain.dev_account(index).key
        for needle in (key.hex(), "0x" + key.hex(), base64.b64encode(key).decode().lower()):
            assert needle.lower() not in haystack, f"the key of hot wallet {index} leaked"
