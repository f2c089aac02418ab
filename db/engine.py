"""The one place that opens database connections."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


def sqlalchemy_url(database_url: str) -> str:
    """SQLAlchemy needs the driver named in the URL; people write plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


async def _autocommit(conn: AsyncConnection) -> None:
    # Statements outside `conn.transaction()` commit on their own; transactions are explicit.
    # (Set here, not in the pool's connect kwargs: procrastinate opens its LISTEN connection with
    # those kwargs plus its own autocommit=True.)
    await conn.set_autocommit(True)


async def open_pool(database_url: str, *, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    # A connection closed while borrowed is dropped by the pool, never handed out again: the
    # steps' session locks rely on it (jobs/queue.py `held`). Keep psycopg_pool's default
    # close_returns=False.
    pool = AsyncConnectionPool(
        psycopg_url(database_url),
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        configure=_autocommit,
        open=False,
        name="payouts",
    )
    await pool.open(wait=True, timeout=30)
    return pool
