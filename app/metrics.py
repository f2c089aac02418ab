"""Prometheus metrics (text format 0.0.4) from the database: what the account manager saw last.

Read from Postgres, so one scrape of any API process shows what every worker wrote. Balances are
in whole units of the asset. It lists our wallets, so API clients cannot read it: it answers only
the bearer token PAYOUTS_METRICS_TOKEN (and is off, 404, without one).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.amounts import format_units
from app.errors import ApiError
from app.registry import Registry
from db.queries import query


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check_token(request: Request) -> None:
    token = request.app.state.settings.metrics_token
    if token is None:
        raise ApiError(404, "metrics_disabled", "set PAYOUTS_METRICS_TOKEN to serve /metrics")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.reveal().encode()):
        raise ApiError(
            401,
            "invalid_metrics_token",
            "send the metrics token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="payouts-metrics"'},
        )


async def metrics(request: Request) -> Response:
    check_token(request)
    registry: Registry = request.app.state.registry
    async with request.app.state.pool.connection() as conn:
        balances = await (await conn.execute(query("metrics_balances"))).fetchall()
        alerts = await (await conn.execute(query("metrics_alerts"))).fetchall()
        topups = await (await conn.execute(query("metrics_topups"))).fetchall()
    lines = [
        "# HELP payouts_wallet_balance Balance of our wallet as last read by the account manager (whole units).",
        "# TYPE payouts_wallet_balance gauge",
    ]
    for r in balances:
        chain = registry.get(r["chain"])
        asset = chain.asset(r["asset"]) if chain else None
        if asset is None:
            continue
        lines.append(
            f'payouts_wallet_balance{{chain="{label(r["chain"])}",role="{r["role"]}",'
            f'address="{r["address"]}",asset="{label(r["asset"])}"}} {format_units(int(r["balance"]), asset.decimals)}'
        )
    lines += [
        "# HELP payouts_main_account_low 1 while the main account is under its alert level for the asset.",
        "# TYPE payouts_main_account_low gauge",
    ]
    for r in alerts:
        kind, _, rest = r["key"].partition(":")
        if kind != "main_low":
            continue
        chain_name, _, symbol = rest.partition(":")
        lines.append(
            f'payouts_main_account_low{{chain="{label(chain_name)}",asset="{label(symbol)}"}} {int(r["active"])}'
        )
    lines += [
        "# HELP payouts_alert_active 1 while an account manager alert's condition holds.",
        "# TYPE payouts_alert_active gauge",
    ]
    for r in alerts:
        lines.append(f'payouts_alert_active{{key="{label(r["key"])}"}} {int(r["active"])}')
    lines += [
        "# HELP payouts_topups Top-ups by chain, asset and status.",
        "# TYPE payouts_topups gauge",
    ]
    for r in topups:
        lines.append(
            f'payouts_topups{{chain="{label(r["chain"])}",asset="{label(r["asset"])}",status="{r["status"]}"}} {r["n"]}'
        )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


routes = [Route("/metrics", metrics, methods=["GET"])]
