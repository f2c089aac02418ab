"""The key vault's envelope encryption: round trip, tamper detection, bindings, the local provider's
file rules, rotation, and the production refusals of the custody settings."""

from __future__ import annotations

import dataclasses
import os
import secrets
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.settings import CustodySettings, Settings, SettingsError
from jobs.keyproviders import LocalProvider, ProviderError
from jobs.vault import DataKeyCache, SealedKey, VaultError, binding, open_key, seal

WALLET = uuid.UUID("7d5a3c1e-0000-4000-8000-000000000001")
PRIVATE_KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> LocalProvider:
    return LocalProvider(tmp_path_factory.mktemp("vault") / "master.key", create=True)


@pytest.fixture(scope="module")
def sealed(provider: LocalProvider) -> SealedKey:
    return seal(provider, WALLET, 1, PRIVATE_KEY)


def test_a_sealed_key_opens_to_the_same_key(provider: LocalProvider, sealed: SealedKey) -> None:
    assert open_key(provider, sealed) == PRIVATE_KEY
    assert open_key(provider, sealed, DataKeyCache(60)) == PRIVATE_KEY
    assert len(sealed.nonce) == 12 and len(sealed.sealed_key) == 48
    for field in (sealed.nonce, sealed.sealed_key, sealed.sealed_data_key, sealed.master_key_id.encode()):
        assert PRIVATE_KEY not in field and PRIVATE_KEY.hex().encode() not in field
    assert PRIVATE_KEY.hex() not in repr(sealed)


def test_each_seal_uses_a_fresh_nonce_and_data_key(provider: LocalProvider, sealed: SealedKey) -> None:
    again = seal(provider, WALLET, 1, PRIVATE_KEY)
    assert again.nonce != sealed.nonce
    assert again.sealed_key != sealed.sealed_key
    assert again.sealed_data_key != sealed.sealed_data_key


@given(
    field=st.sampled_from(["nonce", "sealed_key", "sealed_data_key"]),
    position=st.integers(min_value=0, max_value=10_000),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_flipped_byte_is_detected(
    provider: LocalProvider, sealed: SealedKey, field: str, position: int, flip: int
) -> None:
    value = bytearray(getattr(sealed, field))
    value[position % len(value)] ^= flip
    tampered = dataclasses.replace(sealed, **{field: bytes(value)})
    with pytest.raises(VaultError) as exc:
        open_key(provider, tampered)
    assert PRIVATE_KEY.hex() not in str(exc.value)


def test_every_byte_of_every_field_is_covered(provider: LocalProvider, sealed: SealedKey) -> None:
    for field in ("nonce", "sealed_key", "sealed_data_key"):
        original = getattr(sealed, field)
        for position in range(len(original)):
            value = bytearray(original)
            value[position] ^= 0x01
            with pytest.raises(VaultError):
                open_key(provider, dataclasses.replace(sealed, **{field: bytes(value)}))


def test_a_sealed_key_moved_to_another_wallet_or_version_does_not_open(
    provider: LocalProvider, sealed: SealedKey
) -> None:
    with pytest.raises(VaultError, match="does not open"):
        open_key(provider, dataclasses.replace(sealed, wallet_id=uuid.uuid4()))
    with pytest.raises(VaultError, match="does not open"):
        open_key(provider, dataclasses.replace(sealed, key_version=2))
    # Even with the data key already unwrapped (cached), the key layer checks its own binding.
    cache = DataKeyCache(60)
    open_key(provider, sealed, cache)
    other = seal(provider, uuid.uuid4(), 1, PRIVATE_KEY)
    with pytest.raises(VaultError, match="does not open"):
        open_key(provider, dataclasses.replace(other, sealed_key=sealed.sealed_key, nonce=sealed.nonce), cache)


def test_a_key_sealed_under_another_provider_is_refused(provider: LocalProvider, sealed: SealedKey) -> None:
    with pytest.raises(VaultError, match="aws-kms"):
        open_key(provider, dataclasses.replace(sealed, provider="aws-kms"))


def test_the_local_key_file_is_made_owner_only(provider: LocalProvider) -> None:
    assert provider.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_a_local_key_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    LocalProvider(path, create=True)
    os.chmod(path, mode)
    with pytest.raises(ProviderError, match="chmod 600"):
        LocalProvider(path)


def test_a_missing_or_weak_local_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        LocalProvider(tmp_path / "nothing.key")
    weak = tmp_path / "weak.key"
    weak.write_text("00" * 32 + "\n")
    os.chmod(weak, 0o600)
    with pytest.raises(ProviderError, match="default or placeholder"):
        LocalProvider(weak)
    short = tmp_path / "short.key"
    short.write_text(secrets.token_hex(16) + "\n")
    os.chmod(short, 0o600)
    with pytest.raises(ProviderError, match="32 bytes"):
        LocalProvider(short)


def test_rotation_rewraps_the_data_key_and_the_old_master_key_can_be_retired(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    old = LocalProvider(path, create=True)
    sealed = seal(old, WALLET, 1, PRIVATE_KEY)
    worker = LocalProvider(path)  # another process that read the file before the rotation
    cache = DataKeyCache(60)
    assert open_key(worker, sealed, cache) == PRIVATE_KEY

    new_id = old.rotate()
    assert new_id != sealed.master_key_id and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ProviderError, match="does not open"):  # a rewrap checks the binding too
        old.rewrap(sealed.sealed_data_key, sealed.master_key_id, binding(uuid.uuid4(), 1))

    wrapped, key_id = old.rewrap(sealed.sealed_data_key, sealed.master_key_id, binding(WALLET, 1))
    rewrapped = dataclasses.replace(sealed, sealed_data_key=wrapped, master_key_id=key_id)
    assert key_id == new_id
    # The worker finds the new master key in the file, and both wrappings open meanwhile.
    assert open_key(worker, rewrapped, cache) == PRIVATE_KEY
    assert open_key(worker, sealed, cache) == PRIVATE_KEY

    # Retire the old master key: only the rewrapped key still opens.
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    path.write_text(lines[-1] + "\n")
    retired = LocalProvider(path)
    assert open_key(retired, rewrapped) == PRIVATE_KEY
    with pytest.raises(VaultError, match="not in"):
        open_key(retired, sealed)


def env(**values: str) -> dict[str, str]:
    return {"DATABASE_URL": "postgresql://u@h/db", "PAYOUTS_ENV": "production"} | values


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({}, "PAYOUTS_KEY_PROVIDER is not set"),
        ({"PAYOUTS_KEY_PROVIDER": "local"}, "for development only"),
        ({"PAYOUTS_KEY_PROVIDER": "aws-secrets-manager", "AWS_REGION": "eu-west-1"}, "PAYOUTS_AWS_SECRET_ID"),
        ({"PAYOUTS_KEY_PROVIDER": "aws-kms", "AWS_REGION": "eu-west-1"}, "PAYOUTS_KMS_KEY_ID"),
        ({"PAYOUTS_KEY_PROVIDER": "aws-kms", "PAYOUTS_KMS_KEY_ID": "alias/payouts"}, "AWS_REGION"),
        ({"PAYOUTS_KEY_PROVIDER": "vault-of-doom"}, "must be one of"),
    ],
)
def test_production_refuses_an_unsafe_custody_configuration(values: dict[str, str], reason: str) -> None:
    with pytest.raises(SettingsError, match=reason):
        Settings.from_env(env(**values))


def test_production_accepts_a_complete_aws_configuration_and_development_defaults_to_local() -> None:
    settings = Settings.from_env(
        env(PAYOUTS_KEY_PROVIDER="aws-kms", PAYOUTS_KMS_KEY_ID="alias/payouts", AWS_DEFAULT_REGION="eu-west-1")
    )
    assert settings.custody.provider == "aws-kms" and settings.custody.aws_region == "eu-west-1"
    dev = Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"})
    assert dev.custody == CustodySettings.from_env({})
    assert dev.custody.provider == "local" and not dev.custody.provider_set
