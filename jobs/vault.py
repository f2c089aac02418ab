"""The key vault: hot-wallet private keys sealed with envelope encryption (docs/custody.md).

    private key --AES-256-GCM, data key, random 96-bit nonce--> sealed_key     (table wallet_keys)
    data key    --master key provider (jobs/keyproviders.py)--> sealed_data_key

Both layers are bound to the wallet id and key version (associated data, or a KMS encryption
context), so a sealed key copied onto another wallet row, or another version, does not open.
The plain private key exists only inside `open_key`'s caller (the signer), never in the
database, a log line, an exception or a job argument. Unwrapped DATA keys may be cached per
process for a few minutes (`DataKeyCache`); plain private keys are never cached.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.rows import dict_row

from db.queries import query
from jobs.keyproviders import KEY_BYTES, NONCE_BYTES, MasterKeyProvider, ProviderError


class VaultError(Exception):
    """A key cannot be sealed, opened or stored; the message never holds key material."""


@dataclass(frozen=True)
class SealedKey:
    wallet_id: uuid.UUID
    key_version: int
    nonce: bytes
    sealed_key: bytes  # ciphertext and 16-byte tag
    sealed_data_key: bytes
    provider: str
    master_key_id: str

    def __repr__(self) -> str:  # ciphertexts are harmless, but keep logs short
        return f"SealedKey(wallet {self.wallet_id} v{self.key_version}, {self.provider} {self.master_key_id})"


def binding(wallet_id: uuid.UUID, key_version: int) -> dict[str, str]:
    """What both layers are bound to (AES-GCM associated data, KMS encryption context)."""
    return {"purpose": "payouts-wallet-key", "wallet_id": str(wallet_id), "key_version": str(key_version)}


def _key_aad(wallet_id: uuid.UUID, key_version: int) -> bytes:
    return f"payouts/wallet-key/v1/{wallet_id}/{key_version}".encode()


def seal(provider: MasterKeyProvider, wallet_id: uuid.UUID, key_version: int, private_key: bytes) -> SealedKey:
    if len(private_key) != KEY_BYTES:
        raise VaultError(f"a private key is {KEY_BYTES} bytes")
    data_key, sealed_data_key, master_key_id = provider.new_data_key(binding(wallet_id, key_version))
    nonce = os.urandom(NONCE_BYTES)
    sealed_key = AESGCM(data_key).encrypt(nonce, private_key, _key_aad(wallet_id, key_version))
    return SealedKey(wallet_id, key_version, nonce, sealed_key, sealed_data_key, provider.name, master_key_id)


class DataKeyCache:
    """Unwrapped data keys by their wrapped bytes, for `ttl` seconds: a signer then needs no
    provider call (a KMS request) per transaction. A re-wrapped row has new wrapped bytes, so it
    misses the cache and is unwrapped under the new master key once."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[bytes, str, uuid.UUID, int], tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def get_or_unwrap(self, provider: MasterKeyProvider, sealed: SealedKey) -> bytes:
        if self.ttl <= 0:
            return self._unwrap(provider, sealed)
        key = (sealed.sealed_data_key, sealed.master_key_id, sealed.wallet_id, sealed.key_version)
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (at, _) in self._entries.items() if now - at > self.ttl]:
                del self._entries[stale]
            hit = self._entries.get(key)
        if hit is not None:
            return hit[1]
        data_key = self._unwrap(provider, sealed)
        with self._lock:
            self._entries[key] = (now, data_key)
        return data_key

    @staticmethod
    def _unwrap(provider: MasterKeyProvider, sealed: SealedKey) -> bytes:
        return provider.unwrap(
            sealed.sealed_data_key, sealed.master_key_id, binding(sealed.wallet_id, sealed.key_version)
        )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def open_key(provider: MasterKeyProvider, sealed: SealedKey, cache: DataKeyCache | None = None) -> bytes:
    """The plain private key. Callers keep it no longer than the signing that needs it."""
    if sealed.provider != provider.name:
        raise VaultError(
            f"the key of wallet {sealed.wallet_id} is sealed under provider {sealed.provider}, "
            f"not the configured {provider.name}"
        )
    try:
        data_key = (cache or DataKeyCache(0)).get_or_unwrap(provider, sealed)
    except ProviderError as exc:
        raise VaultError(f"wallet {sealed.wallet_id} v{sealed.key_version}: {exc}") from None
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.sealed_key, _key_aad(sealed.wallet_id, sealed.key_version))
    except (InvalidTag, ValueError):
        raise VaultError(
            f"the sealed key of wallet {sealed.wallet_id} v{sealed.key_version} does not open: "
            "tampered, or bound to another wallet or version"
        ) from None


# --- The wallet_keys table (sync psycopg: the CLI, and the signer's own small connection) ---


def _row(row: dict[str, Any]) -> SealedKey:
    return SealedKey(
        wallet_id=row["wallet_id"],
        key_version=row["key_version"],
        nonce=bytes(row["nonce"]),
        sealed_key=bytes(row["sealed_key"]),
        sealed_data_key=bytes(row["sealed_data_key"]),
        provider=row["provider"],
        master_key_id=row["master_key_id"],
    )


def latest_sealed(conn: psycopg.Connection[Any], wallet_id: uuid.UUID) -> SealedKey | None:
    row = conn.execute(query("latest_wallet_key"), {"wallet_id": wallet_id}).fetchone()
    return _row(row) if row else None


def store_new_key(
    conn: psycopg.Connection[Any], provider: MasterKeyProvider, chain: str, address: str, role: str, private_key: bytes
) -> uuid.UUID:
    """Seal a key and register its wallet with key_ref vault:<wallet id>, in one transaction.
    Refuses a wallet that already has a key in the vault (its key cannot change: the address
    derives from it)."""
    try:
        with conn.transaction():
            existing = conn.execute(query("find_wallet"), {"chain": chain, "address": address}).fetchone()
            if existing and existing["sealed_versions"]:
                raise VaultError(f"wallet {address} on {chain} already has its key in the vault")
            row = conn.execute(
                query("upsert_wallet"), {"chain": chain, "address": address, "role": role, "key_ref": None}
            ).fetchone()
            assert row is not None
            wallet_id: uuid.UUID = row["id"]
            conn.execute(query("set_wallet_key_ref"), {"id": wallet_id, "key_ref": f"vault:{wallet_id}"})
            sealed = seal(provider, wallet_id, 1, private_key)
            conn.execute(
                query("insert_wallet_key"),
                {
                    "wallet_id": sealed.wallet_id,
                    "key_version": sealed.key_version,
                    "nonce": sealed.nonce,
                    "sealed_key": sealed.sealed_key,
                    "sealed_data_key": sealed.sealed_data_key,
                    "provider": sealed.provider,
                    "master_key_id": sealed.master_key_id,
                },
            )
    except psycopg.errors.UniqueViolation:  # the same key imported twice at once
        raise VaultError(f"wallet {address} on {chain} already has its key in the vault") from None
    except ProviderError as exc:
        raise VaultError(f"cannot seal the key of wallet {address}: {exc}") from None
    return wallet_id


def rewrap_all(
    conn: psycopg.Connection[Any],
    provider: MasterKeyProvider,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Re-wrap every data key not under the provider's current master key; returns how many.

    One short transaction per key, holding that row's lock: a signer reading the row meanwhile
    sees the old or the new wrapping, and both open until the old master key is retired."""
    target = provider.current_key_id()
    rows = conn.execute(query("wallet_keys_to_rewrap"), {"master_key_id": target}).fetchall()
    foreign = [r for r in rows if r["provider"] != provider.name]
    if foreign:
        raise VaultError(
            f"{len(foreign)} key(s) are sealed under provider {foreign[0]['provider']}, not {provider.name}; "
            "re-wrapping across providers is not supported"
        )
    done = 0
    for r in rows:
        with conn.transaction():
            locked = conn.execute(
                query("lock_wallet_key"), {"wallet_id": r["wallet_id"], "key_version": r["key_version"]}
            ).fetchone()
            if locked is not None and locked["master_key_id"] != target:
                try:
                    wrapped, key_id = provider.rewrap(
                        bytes(locked["sealed_data_key"]),
                        locked["master_key_id"],
                        binding(r["wallet_id"], r["key_version"]),
                    )
                except ProviderError as exc:
                    raise VaultError(f"wallet {r['wallet_id']} v{r['key_version']}: {exc}") from None
                conn.execute(
                    query("rewrap_wallet_key"),
                    {
                        "wallet_id": r["wallet_id"],
                        "key_version": r["key_version"],
                        "sealed_data_key": wrapped,
                        "master_key_id": key_id,
                        "old_master_key_id": locked["master_key_id"],
                    },
                )
        done += 1
        progress(done, len(rows))
    return done


class SignerKeys:
    """What a signing process needs to open vault keys: a provider, a data-key cache and one small
    autocommit connection of its own (the signer's interface, `load_signer`, is synchronous).
    Reads never wait on a rotation's row lock: a plain SELECT sees the last committed wrapping."""

    def __init__(self, database_url: str, provider: MasterKeyProvider, cache: DataKeyCache) -> None:
        self._url = database_url
        self.provider = provider
        self.cache = cache
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _read(self, wallet_id: uuid.UUID) -> SealedKey | None:
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._url, autocommit=True, row_factory=dict_row)
                try:
                    return latest_sealed(self._conn, wallet_id)
                except psycopg.OperationalError:
                    self._conn.close()
                    if attempt == 2:
                        raise
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SignerKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, wallet_id: uuid.UUID) -> bytes:
        sealed = self._read(wallet_id)
        if sealed is None:
            raise VaultError(f"wallet {wallet_id} has no key in the vault")
        return open_key(self.provider, sealed, self.cache)
