"""API clients and their keys. A key is shown once, at creation; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from psycopg import AsyncConnection, Connection

from db.queries import query

KEY_PREFIX = "pk_"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key() -> str:
    # 32 random bytes: guessing is hopeless, so the hash needs no salt or stretching.
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _first(row: Any) -> Any:
    assert row is not None
    return row["id"] if isinstance(row, dict) else row[0]


def create_client(conn: Connection, name: str) -> uuid.UUID:
    return _first(conn.execute(query("create_client"), {"name": name}).fetchone())


def find_client(conn: Connection, name: str) -> uuid.UUID | None:
    row = conn.execute(query("find_client"), {"name": name}).fetchone()
    return None if row is None else _first(row)


def create_key(conn: Connection, client_id: uuid.UUID) -> str:
    key = new_key()
    conn.execute(query("create_key"), {"client_id": client_id, "key_hash": hash_key(key), "prefix": key[:10]})
    return key


def revoke_keys(conn: Connection, client_id: uuid.UUID) -> int:
    return conn.execute(query("revoke_keys"), {"client_id": client_id}).rowcount


async def authenticate(conn: AsyncConnection, key: str) -> dict[str, Any] | None:
    cur = await conn.execute(query("authenticate"), {"key_hash": hash_key(key)})
    return await cur.fetchone()  # type: ignore[return-value]
