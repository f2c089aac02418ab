"""Master-key providers: they wrap and unwrap the key vault's data keys (jobs/vault.py).

  local                a file of 32-byte hex keys, mode 0600; the last line is the current key.
                       Development only: production refuses it.
  aws-secrets-manager  the master key is the secret's value (64 hex characters); each version of
                       the secret is one master key, and the data keys are wrapped here with
                       AES-256-GCM under it.
  aws-kms              KMS makes the data keys (GenerateDataKey) and unwraps them (Decrypt); the
                       master key never leaves KMS, and rotation re-wraps inside KMS (ReEncrypt).

Every wrapped data key is bound to its wallet id and key version: associated data for AES-GCM,
an encryption context for KMS. `master_key_id` names the master key that wrapped a data key
(`local:<fingerprint>`, `<secret ARN>#<version id>`, `<KMS key ARN>`); it is stored next to the
wrapped data key so any provider instance can find the right master key, old or current.
Errors never carry key material.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.settings import CustodySettings, Secret

KEY_BYTES = 32
NONCE_BYTES = 12


class ProviderError(Exception):
    """The master-key provider cannot make, wrap or unwrap a data key."""


class MasterKeyProvider(Protocol):
    name: str

    def current_key_id(self) -> str: ...

    def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes, str]:
        """A fresh data key: (plain, wrapped under the current master key, that master key's id)."""
        ...

    def unwrap(self, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> bytes: ...

    def rewrap(self, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> tuple[bytes, str]:
        """The same data key wrapped under the current master key: (wrapped, master key id)."""
        ...

    def rotate(self) -> str:
        """Make a new master key current (the old one still unwraps); returns the new id."""
        ...

    def verify(self) -> None:
        """Check the current master key is there and strong enough; raise ProviderError if not."""
        ...


def associated_data(context: Mapping[str, str]) -> bytes:
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


def aes_wrap(master: bytes, data_key: bytes, context: Mapping[str, str]) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, data_key, associated_data(context))


def aes_unwrap(master: bytes, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> bytes:
    try:
        return AESGCM(master).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], associated_data(context))
    except (InvalidTag, ValueError):
        raise ProviderError(
            f"a data key does not open under master key {master_key_id}: tampered, or bound to another wallet/version"
        ) from None


def weak_master_key(key: bytes) -> str | None:
    """Why a master key must not be used (None when it may)."""
    if len(key) != KEY_BYTES:
        return f"the master key must be {KEY_BYTES} bytes, not {len(key)}"
    if len(set(key)) < 8:
        return "the master key is a default or placeholder value (too few distinct bytes)"
    return None


def parse_hex_key(text: str, where: str) -> bytes:
    text = text.strip().removeprefix("0x")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ProviderError(f"{where} does not hold a hex key") from None
    if problem := weak_master_key(key):
        raise ProviderError(f"{where}: {problem}")
    return key


class _AesMasterKeys:
    """Master keys held as hex in `Secret`s (they never print), by master key id."""

    def __init__(self) -> None:
        self._keys: dict[str, Secret] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str) -> bytes | None:
        with self._lock:
            secret = self._keys.get(key_id)
        return bytes.fromhex(secret.reveal()) if secret else None

    def put(self, key_id: str, key: bytes) -> None:
        with self._lock:
            self._keys[key_id] = Secret(key.hex())

    def wrap_with(self, key_id: str, data_key: bytes, context: Mapping[str, str]) -> bytes:
        key = self.get(key_id)
        assert key is not None
        return aes_wrap(key, data_key, context)


class _AesWrapping:
    """Data keys wrapped in this process with AES-256-GCM under master keys the subclass finds."""

    _keys: _AesMasterKeys

    def current_key_id(self) -> str:
        raise NotImplementedError

    def _master(self, master_key_id: str) -> bytes:
        raise NotImplementedError

    def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes, str]:
        data_key = secrets.token_bytes(KEY_BYTES)
        key_id = self.current_key_id()
        return data_key, self._keys.wrap_with(key_id, data_key, context), key_id

    def unwrap(self, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> bytes:
        return aes_unwrap(self._master(master_key_id), wrapped, master_key_id, context)

    def rewrap(self, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> tuple[bytes, str]:
        data_key = self.unwrap(wrapped, master_key_id, context)
        key_id = self.current_key_id()
        return self._keys.wrap_with(key_id, data_key, context), key_id


class LocalProvider(_AesWrapping):
    """Master keys in a local file (development). Refuses a file that others may read."""

    name = "local"

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._keys = _AesMasterKeys()
        self._current: str | None = None
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write([secrets.token_bytes(KEY_BYTES)], exclusive=True)
        self._load()

    @staticmethod
    def key_id(key: bytes) -> str:
        return "local:" + hashlib.sha256(b"payouts master key id\0" + key).hexdigest()[:24]

    def _check_file(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            raise ProviderError(
                f"the local master key file {self.path} does not exist (PAYOUTS_LOCAL_MASTER_KEY_FILE); "
                "`payouts wallets create` makes one in development"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise ProviderError(f"the local master key file {self.path} is not a regular file")
        if info.st_mode & 0o077:
            raise ProviderError(
                f"the local master key file {self.path} has mode {oct(stat.S_IMODE(info.st_mode))}: "
                f"only its owner may read it (chmod 600 {self.path})"
            )
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise ProviderError(f"the local master key file {self.path} belongs to another user")

    def _load(self) -> None:
        self._check_file()
        lines = [line.strip() for line in self.path.read_text().splitlines()]
        keys = [parse_hex_key(line, str(self.path)) for line in lines if line and not line.startswith("#")]
        if not keys:
            raise ProviderError(f"the local master key file {self.path} holds no key")
        for key in keys:
            self._keys.put(self.key_id(key), key)
        self._current = self.key_id(keys[-1])

    def _write(self, keys: list[bytes], *, exclusive: bool = False) -> None:
        body = "# payouts master keys, oldest first; the last one is current. Never share this file.\n"
        body += "".join(k.hex() + "\n" for k in keys)
        target = self.path if exclusive else self.path.with_name(self.path.name + ".new")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        if not exclusive:
            os.replace(target, self.path)

    def current_key_id(self) -> str:
        assert self._current is not None
        return self._current

    def _master(self, master_key_id: str) -> bytes:
        key = self._keys.get(master_key_id)
        if key is None:
            self._load()  # rotated since this process read the file
            key = self._keys.get(master_key_id)
        if key is None:
            raise ProviderError(f"master key {master_key_id} is not in {self.path} (retired too early?)")
        return key

    def rotate(self) -> str:
        self._load()
        lines = [line.strip() for line in self.path.read_text().splitlines()]
        keys = [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]
        keys.append(secrets.token_bytes(KEY_BYTES))
        self._write(keys)
        self._load()
        return self.current_key_id()

    def verify(self) -> None:
        self._load()


class SecretsManagerProvider(_AesWrapping):
    """The master key is the value of a Secrets Manager secret; each secret version is a master key."""

    name = "aws-secrets-manager"

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id
        self._keys = _AesMasterKeys()

    def _fetch(self, version_id: str | None = None) -> str:
        args = {"SecretId": self._secret_id} | ({"VersionId": version_id} if version_id else {})
        try:
            reply = self._client.get_secret_value(**args)
        except Exception as exc:  # botocore's errors name the failure, never the secret value
            raise ProviderError(f"Secrets Manager: cannot read secret {self._secret_id}: {_aws_error(exc)}") from None
        if "SecretString" not in reply:
            raise ProviderError(f"Secrets Manager: secret {self._secret_id} holds no string value")
        key = parse_hex_key(reply["SecretString"], f"secret {self._secret_id}")
        key_id = f"{reply['ARN']}#{reply['VersionId']}"
        self._keys.put(key_id, key)
        return key_id

    def current_key_id(self) -> str:
        return self._fetch()

    def _master(self, master_key_id: str) -> bytes:
        key = self._keys.get(master_key_id)
        if key is None:
            arn, _, version = master_key_id.rpartition("#")
            if not arn or not version:
                raise ProviderError(f"{master_key_id!r} is not a Secrets Manager master key id")
            self._fetch(version)
            key = self._keys.get(master_key_id)
        if key is None:
            raise ProviderError(f"Secrets Manager: no master key {master_key_id} (another secret?)")
        return key

    def rotate(self) -> str:
        try:
            reply = self._client.put_secret_value(
                SecretId=self._secret_id, SecretString=secrets.token_bytes(KEY_BYTES).hex()
            )
        except Exception as exc:
            raise ProviderError(
                f"Secrets Manager: cannot add a version to {self._secret_id}: {_aws_error(exc)}"
            ) from None
        return self._fetch(reply["VersionId"])

    def verify(self) -> None:
        self._fetch()


class KmsProvider:
    """Data keys from KMS; the master key never leaves it. Rotation: point PAYOUTS_KMS_KEY_ID at a
    new key and run `payouts keys rotate-master`, which re-wraps inside KMS (ReEncrypt). KMS's own
    yearly rotation of a key's material keeps its id and needs no re-wrap."""

    name = "aws-kms"

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self._key_id = key_id
        self._arn: str | None = None

    def _call(self, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, what)(**kwargs)
        except Exception as exc:
            raise ProviderError(f"KMS {what} failed: {_aws_error(exc)}") from None

    def current_key_id(self) -> str:
        if self._arn is None:
            self._arn = self._call("describe_key", KeyId=self._key_id)["KeyMetadata"]["Arn"]
        return self._arn

    def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes, str]:
        reply = self._call(
            "generate_data_key", KeyId=self.current_key_id(), KeySpec="AES_256", EncryptionContext=dict(context)
        )
        return reply["Plaintext"], reply["CiphertextBlob"], reply["KeyId"]

    def unwrap(self, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> bytes:
        reply = self._call("decrypt", CiphertextBlob=wrapped, KeyId=master_key_id, EncryptionContext=dict(context))
        return reply["Plaintext"]

    def rewrap(self, wrapped: bytes, master_key_id: str, context: Mapping[str, str]) -> tuple[bytes, str]:
        reply = self._call(
            "re_encrypt",
            CiphertextBlob=wrapped,
            SourceKeyId=master_key_id,
            SourceEncryptionContext=dict(context),
            DestinationKeyId=self.current_key_id(),
            DestinationEncryptionContext=dict(context),
        )
        return reply["CiphertextBlob"], reply["KeyId"]

    def rotate(self) -> str:
        raise ProviderError(
            "KMS keys are made in KMS: create a new key, set PAYOUTS_KMS_KEY_ID to it, then run "
            "`payouts keys rotate-master --rewrap-only` to re-wrap every data key under it"
        )

    def verify(self) -> None:
        meta = self._call("describe_key", KeyId=self._key_id)["KeyMetadata"]
        if not meta.get("Enabled", False) or meta.get("KeyState") != "Enabled":
            raise ProviderError(f"KMS key {self._key_id} is not enabled ({meta.get('KeyState')})")
        if meta.get("KeyUsage") != "ENCRYPT_DECRYPT" or meta.get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT":
            raise ProviderError(f"KMS key {self._key_id} is not a symmetric encryption key")


def _aws_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return f"{type(exc).__name__}: {exc}"


def provider_from_settings(settings: CustodySettings, *, create_local: bool = False) -> MasterKeyProvider:
    """The configured provider. `create_local` makes a missing local key file (CLI, development)."""
    if settings.provider == "local":
        return LocalProvider(settings.local_master_key_file, create=create_local)
    import boto3

    kwargs = {"region_name": settings.aws_region, "endpoint_url": settings.aws_endpoint_url}
    if settings.provider == "aws-secrets-manager":
        if not settings.aws_secret_id:
            raise ProviderError("PAYOUTS_AWS_SECRET_ID is not set")
        return SecretsManagerProvider(boto3.client("secretsmanager", **kwargs), settings.aws_secret_id)
    if not settings.kms_key_id:
        raise ProviderError("PAYOUTS_KMS_KEY_ID is not set")
    return KmsProvider(boto3.client("kms", **kwargs), settings.kms_key_id)
