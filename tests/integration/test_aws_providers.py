"""The AWS master-key providers against a local AWS emulator (moto's server mode, over HTTP, as
boto3 talks to AWS): Secrets Manager and KMS seal, open and rotate; production refuses a
default or missing master key; the CLI drives both end to end against Postgres."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from eth_account import Account

from jobs.keyproviders import KmsProvider, ProviderError, SecretsManagerProvider
from jobs.vault import DataKeyCache, SignerKeys, VaultError, binding, open_key, seal
from tests.conftest import REPO_ROOT, free_port

Conn = psycopg.Connection[dict[str, Any]]
WALLET = uuid.UUID("7d5a3c1e-0000-4000-8000-0000000000aa")
PRIVATE_KEY = bytes.fromhex("5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a")
REGION = "us-east-1"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's server on a free localhost port; the environment that points boto3 at it."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "PAYOUTS_AWS_ENDPOINT_URL": url,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return aws


def client(aws: dict[str, str], service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=aws["PAYOUTS_AWS_ENDPOINT_URL"])


def new_secret(aws: dict[str, str], value: str | None = None) -> str:
    name = f"payouts/master-{uuid.uuid4().hex[:8]}"
    client(aws, "secretsmanager").create_secret(Name=name, SecretString=value or os.urandom(32).hex())
    return name


def new_kms_key(aws: dict[str, str]) -> str:
    return client(aws, "kms").create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]["Arn"]


def disable_kms_key(aws: dict[str, str], arn: str) -> None:
    # By key id: moto's DisableKey fails on an ARN (AWS itself takes either).
    client(aws, "kms").disable_key(KeyId=arn.rpartition("/")[2])


def test_secrets_manager_seals_opens_and_rotates(aws_env: dict[str, str]) -> None:
    secret_id = new_secret(aws_env)
    provider = SecretsManagerProvider(client(aws_env, "secretsmanager"), secret_id)
    provider.verify()
    sealed = seal(provider, WALLET, 1, PRIVATE_KEY)
    assert sealed.provider == "aws-secrets-manager" and "#" in sealed.master_key_id
    assert open_key(provider, sealed) == PRIVATE_KEY
    with pytest.raises(VaultError, match="does not open"):
        open_key(provider, dataclasses.replace(sealed, wallet_id=uuid.uuid4()))
    with pytest.raises(VaultError, match="does not open"):
        open_key(provider, dataclasses.replace(sealed, key_version=2))

    signer = SecretsManagerProvider(client(aws_env, "secretsmanager"), secret_id)  # a worker, started before
    cache = DataKeyCache(60)
    assert open_key(signer, sealed, cache) == PRIVATE_KEY

    new_id = provider.rotate()
    assert new_id != sealed.master_key_id and provider.current_key_id() == new_id
    wrapped, key_id = provider.rewrap(sealed.sealed_data_key, sealed.master_key_id, binding(WALLET, 1))
    rewrapped = dataclasses.replace(sealed, sealed_data_key=wrapped, master_key_id=key_id)
    assert key_id == new_id
    # The worker fetches the new secret version by its id; both wrappings open until retirement.
    assert open_key(signer, rewrapped, cache) == PRIVATE_KEY
    assert open_key(signer, sealed, cache) == PRIVATE_KEY
    assert open_key(SecretsManagerProvider(client(aws_env, "secretsmanager"), secret_id), sealed) == PRIVATE_KEY


def test_secrets_manager_refuses_a_default_or_missing_master_key(aws_env: dict[str, str]) -> None:
    weak = SecretsManagerProvider(client(aws_env, "secretsmanager"), new_secret(aws_env, "00" * 32))
    with pytest.raises(ProviderError, match="default or placeholder"):
        weak.verify()
    with pytest.raises(ProviderError, match="does not hold a hex key"):
        SecretsManagerProvider(client(aws_env, "secretsmanager"), new_secret(aws_env, "changeme")).verify()
    with pytest.raises(ProviderError, match="ResourceNotFoundException"):
        SecretsManagerProvider(client(aws_env, "secretsmanager"), "payouts/no-such-secret").verify()


def test_kms_seals_opens_and_rewraps_inside_kms(aws_env: dict[str, str]) -> None:
    old_key, new_key = new_kms_key(aws_env), new_kms_key(aws_env)
    old = KmsProvider(client(aws_env, "kms"), old_key)
    old.verify()
    sealed = seal(old, WALLET, 1, PRIVATE_KEY)
    assert sealed.provider == "aws-kms" and sealed.master_key_id == old_key
    assert open_key(old, sealed) == PRIVATE_KEY
    with pytest.raises(VaultError, match="does not open|InvalidCiphertext"):
        open_key(old, dataclasses.replace(sealed, wallet_id=uuid.uuid4()))
    with pytest.raises(VaultError):
        open_key(old, dataclasses.replace(sealed, key_version=2))
    flipped = bytearray(sealed.sealed_data_key)
    flipped[-1] ^= 1
    with pytest.raises(VaultError):
        open_key(old, dataclasses.replace(sealed, sealed_data_key=bytes(flipped)))

    new = KmsProvider(client(aws_env, "kms"), new_key)
    wrapped, key_id = new.rewrap(sealed.sealed_data_key, sealed.master_key_id, binding(WALLET, 1))
    assert key_id == new_key and wrapped != sealed.sealed_data_key
    rewrapped = dataclasses.replace(sealed, sealed_data_key=wrapped, master_key_id=key_id)
    assert open_key(old, rewrapped) == PRIVATE_KEY  # a worker still configured with the old key id
    # Retire the old key: the re-wrapped data key still opens. (AWS then refuses Decrypt of what the
    # old key wrapped; moto does not enforce a disabled key there, so that is not asserted.)
    disable_kms_key(aws_env, old_key)
    assert open_key(new, rewrapped) == PRIVATE_KEY
    with pytest.raises(ProviderError, match="not enabled"):
        old.verify()
    with pytest.raises(ProviderError, match="rotate-master --rewrap-only"):
        new.rotate()


def payouts(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def base_env(aws: dict[str, str], database_url: str) -> dict[str, str]:
    return (
        {k: v for k, v in os.environ.items() if not k.startswith(("PAYOUTS_", "AWS_"))}
        | aws
        | {"DATABASE_URL": database_url}
    )


def test_cli_with_secrets_manager_imports_rotates_and_the_signer_opens(
    db: Conn, aws_env: dict[str, str], database_url: str
) -> None:
    secret_id = new_secret(aws_env)
    env = base_env(aws_env, database_url) | {
        "PAYOUTS_KEY_PROVIDER": "aws-secrets-manager",
        "PAYOUTS_AWS_SECRET_ID": secret_id,
    }
    key = Account.create().key.hex()
    done = payouts(env, "wallets", "import", "localhost", "--role", "hot", stdin=key)
    assert done.returncode == 0, done.stderr
    created = payouts(env, "wallets", "create", "localhost", "--role", "hot")
    assert created.returncode == 0, created.stderr
    rotated = payouts(env, "keys", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped 2/2" in rotated.stderr
    rows = db.execute(
        "SELECT w.id, w.address, k.master_key_id FROM hot_wallets w JOIN wallet_keys k ON k.wallet_id = w.id"
    ).fetchall()
    current = client(aws_env, "secretsmanager").get_secret_value(SecretId=secret_id)
    assert {r["master_key_id"] for r in rows} == {f"{current['ARN']}#{current['VersionId']}"}
    provider = SecretsManagerProvider(client(aws_env, "secretsmanager"), secret_id)
    with SignerKeys(database_url, provider, DataKeyCache(0)) as signer:
        for r in rows:
            assert Account.from_key(signer.open(r["id"])).address == r["address"]
    assert key.removeprefix("0x") not in done.stdout + done.stderr + rotated.stdout + rotated.stderr


def test_cli_with_kms_rewraps_under_a_new_key(db: Conn, aws_env: dict[str, str], database_url: str) -> None:
    old_key, new_key = new_kms_key(aws_env), new_kms_key(aws_env)
    env = base_env(aws_env, database_url) | {"PAYOUTS_KEY_PROVIDER": "aws-kms", "PAYOUTS_KMS_KEY_ID": old_key}
    created = payouts(env, "wallets", "create", "localhost", "--role", "hot")
    assert created.returncode == 0, created.stderr
    env["PAYOUTS_KMS_KEY_ID"] = new_key
    refused = payouts(env, "keys", "rotate-master")
    assert refused.returncode == 2 and "--rewrap-only" in refused.stderr
    rotated = payouts(env, "keys", "rotate-master", "--rewrap-only")
    assert rotated.returncode == 0, rotated.stderr
    assert "1 data key(s) re-wrapped" in rotated.stdout
    row = db.execute(
        "SELECT w.id, k.master_key_id FROM hot_wallets w JOIN wallet_keys k ON k.wallet_id = w.id"
    ).fetchone()
    assert row is not None and row["master_key_id"] == new_key
    disable_kms_key(aws_env, old_key)
    with SignerKeys(database_url, KmsProvider(client(aws_env, "kms"), new_key), DataKeyCache(0)) as signer:
        assert Account.from_key(signer.open(row["id"])).address == created.stdout.strip()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [("00" * 32, "default or placeholder"), (None, "ResourceNotFoundException")],
)
def test_production_worker_refuses_a_default_or_missing_master_key(
    aws: dict[str, str], database_url: str, tmp_path: Path, secret: str | None, reason: str
) -> None:
    secret_id = new_secret(aws, secret) if secret else "payouts/missing"
    env = base_env(aws, database_url) | {
        "PAYOUTS_ENV": "production",
        "PAYOUTS_KEY_PROVIDER": "aws-secrets-manager",
        "PAYOUTS_AWS_SECRET_ID": secret_id,
    }
    worker = subprocess.run(
        [sys.executable, "-m", "jobs.worker"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 2
    assert "worker: refusing to start in production" in worker.stderr and reason in worker.stderr
    cli = payouts(env, "wallets", "create", "localhost", "--role", "hot")
    assert cli.returncode == 2 and reason in cli.stderr
