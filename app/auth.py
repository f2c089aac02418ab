"""Bearer API keys. A request without a valid key gets 401 and learns nothing else."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection
from starlette.requests import Request

from app.errors import ApiError
from db.clients import authenticate

_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="payouts"'}
MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class Client:
    id: uuid.UUID
    name: str


def bearer_key(request: Request) -> str:
    """The API key of the Authorization header (401 when there is none); not yet checked."""
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(
            401, "unauthenticated", "send your API key as 'Authorization: Bearer <key>'", headers=_UNAUTHORIZED_HEADERS
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_LENGTH:
        raise ApiError(
            401, "unauthenticated", "send your API key as 'Authorization: Bearer <key>'", headers=_UNAUTHORIZED_HEADERS
        )
    return key


async def client_of(conn: AsyncConnection, key: str) -> Client:
    """The client behind a key; 401 when it is unknown or revoked (checked on every request)."""
    row = await authenticate(conn, key)
    if row is None:
        raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked", headers=_UNAUTHORIZED_HEADERS)
    return Client(id=row["client_id"], name=row["client_name"])


async def require_client(request: Request) -> Client:
    key = bearer_key(request)
    async with request.app.state.pool.connection() as conn:
        return await client_of(conn, key)
