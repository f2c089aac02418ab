"""Operator alerts: a WARN log line and a Slack-compatible webhook, each at most once per interval.

The alert state lives in Postgres (`alert_state`), so any number of workers send an alert once:
the right to send is claimed with a compare-and-set on its last send time. A send that fails
gives the claim back, so the next check tries again. The webhook URL is a credential: it is
never logged, and neither is the body of an error answer (it may echo the URL).

`alert_state.active` says whether the condition holds now; `/metrics` shows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from psycopg_pool import AsyncConnectionPool

from app.settings import Secret
from db.queries import query

log = logging.getLogger("payouts.alerts")

WEBHOOK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class AlertSink:
    webhook_url: Secret | None
    interval_seconds: int


async def raise_alert(pool: AsyncConnectionPool, sink: AlertSink, key: str, message: str) -> bool:
    """Report that `key`'s condition holds. Returns True when the alert went out now."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(query("mark_alert_active"), {"key": key, "message": message})
        cur = await conn.execute(
            query("claim_alert"), {"key": key, "message": message, "interval_seconds": sink.interval_seconds}
        )
        claim = await cur.fetchone()
    if claim is None:
        return False  # sent less than an interval ago
    log.warning("ALERT %s: %s", key, message)
    if sink.webhook_url is None:
        return True
    error = await post_webhook(sink.webhook_url, message)
    if error is None:
        return True
    log.error("alert %s: the webhook did not take it (%s); trying again at the next check", key, error)
    async with pool.connection() as conn:
        await conn.execute(
            query("give_back_alert"),
            {
                "key": key,
                "previous_sent_at": claim["previous_sent_at"],  # type: ignore[call-overload]
                "claimed_at": claim["claimed_at"],  # type: ignore[call-overload]
            },
        )
    return False


async def clear_alert(pool: AsyncConnectionPool, key: str, message: str) -> None:
    """The condition of `key` is over (logged once, when it was active)."""
    async with pool.connection() as conn:
        cur = await conn.execute(query("clear_alert"), {"key": key})
        if await cur.fetchone() is not None:
            log.info("alert %s is over: %s", key, message)


async def post_webhook(url: Secret, message: str) -> str | None:
    """POST {"text": message}; returns None on success, else what went wrong (without the URL)."""
    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as http:
            reply = await http.post(url.reveal(), json={"text": message})
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return type(exc).__name__
    if reply.is_success:
        return None
    return f"HTTP {reply.status_code}"
