"""What every job of a worker process shares: the registry, the database pool and RPC clients."""

from __future__ import annotations

from functools import cache

from psycopg_pool import AsyncConnectionPool

from app.registry import Chain, Registry, load_registry
from app.settings import Settings
from jobs.queue import queue
from jobs.rpc import RpcClient


@cache
def registry() -> Registry:
    return load_registry()


def chain(name: str) -> Chain:
    found = registry().get(name)
    if found is None:
        raise LookupError(f"chain {name!r} is not in the registry")
    return found


@cache
def settings() -> Settings:
    return Settings.from_env()


_clients: dict[str, RpcClient] = {}


def rpc(name: str) -> RpcClient:
    """One client per chain and process, so URL health is shared by all of its jobs."""
    client = _clients.get(name)
    if client is None:
        c = chain(name)
        client = _clients[name] = RpcClient(c.rpc_urls, chain_id=c.chain_id, name=name)
    return client


async def close_rpc_clients() -> None:
    """Close every chain's client and its connections (a worker's last step)."""
    clients = list(_clients.values())
    _clients.clear()
    for client in clients:
        await client.aclose()


def pool() -> AsyncConnectionPool:
    return queue.connector.pool  # type: ignore[attr-defined,no-any-return]
