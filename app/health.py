"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.registry import Chain, redact_url

RPC_TIMEOUT_SECONDS = 3.0


async def healthz(request: Request) -> Response:
    """The process is alive and serving; says nothing about its dependencies."""
    return JSONResponse({"status": "ok"})


async def check_database(request: Request) -> str:
    try:
        async with request.app.state.pool.connection(timeout=RPC_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return f"error: {type(exc).__name__}"
    return "ok"


async def check_chain(http: httpx.AsyncClient, chain: Chain) -> str:
    """ok when at least one RPC URL answers eth_chainId with the registry's chain id."""
    problems = []
    for url in chain.rpc_urls:
        try:
            reply = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
            got = int(reply.json()["result"], 16)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{redact_url(url)}: {type(exc).__name__}")
            continue
        if got == chain.chain_id:
            return "ok"
        problems.append(f"{redact_url(url)}: chain id {got}, expected {chain.chain_id}")
    return "error: " + "; ".join(problems)


async def readyz(request: Request) -> Response:
    """Ready when the database and every enabled chain answer."""
    chains = request.app.state.registry.enabled
    async with httpx.AsyncClient(timeout=RPC_TIMEOUT_SECONDS) as http:
        results = await asyncio.gather(check_database(request), *(check_chain(http, c) for c in chains))
    checks = {"database": results[0]} | {f"chain:{c.name}": r for c, r in zip(chains, results[1:], strict=True)}
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
