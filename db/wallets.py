"""Our own wallets per chain: the main account (reserves) and the hot wallets that pay out."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import Connection

from db.queries import query


def upsert_wallet(conn: Connection, chain: str, address: str, role: str, key_ref: str | None) -> uuid.UUID:
    row: Any = conn.execute(
        query("upsert_wallet"), {"chain": chain, "address": address, "role": role, "key_ref": key_ref}
    ).fetchone()
    return row["id"] if isinstance(row, dict) else row[0]


def list_wallets(conn: Connection) -> list[Any]:
    return conn.execute(query("list_wallets")).fetchall()
