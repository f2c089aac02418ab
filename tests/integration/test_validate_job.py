"""The validate step: PENDING withdrawals of a chain move to VALIDATING exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from db.engine import open_pool
from jobs.validate import INTAKE_NOTE, take_pending
from tests.conftest import Api, make_client

Conn = psycopg.Connection[dict[str, Any]]  # the `db` fixture's rows are dicts
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture
def http(db: Conn, api: Api) -> Iterator[httpx.Client]:
    _, key = make_client(db, "acme")
    with api.client(key) as client:
        yield client


def create(http: httpx.Client, n: int, asset: str = "USDT", amount: str = "1") -> list[str]:
    made = []
    for _ in range(n):
        response = http.post(
            "/v1/withdrawals",
            json={"chain": "localhost", "asset": asset, "to": RECIPIENT, "amount": amount},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    return made


def statuses(db: Conn) -> dict[str, str]:
    rows = db.execute("SELECT id::text AS id, status FROM withdrawals").fetchall()
    return {r["id"]: r["status"] for r in rows}


def events_by_withdrawal(
    db: Conn,
) -> dict[str, list[tuple[str | None, str, str | None]]]:
    rows = db.execute(
        "SELECT withdrawal_id::text AS withdrawal, from_status, to_status, note FROM withdrawal_events ORDER BY id"
    ).fetchall()
    found: dict[str, list[tuple[str | None, str, str | None]]] = {}
    for r in rows:
        found.setdefault(r["withdrawal"], []).append((r["from_status"], r["to_status"], r["note"]))
    return found


def test_take_pending_moves_a_chains_pending_withdrawals(http: httpx.Client, db: Conn, database_url: str) -> None:
    made = create(http, 3)
    canceled = create(http, 1)[0]
    assert http.post(f"/v1/withdrawals/{canceled}/cancel").status_code == 200

    async def run() -> tuple[int, int, int]:
        pool = await open_pool(database_url, max_size=2)
        try:
            elsewhere = await take_pending(pool, "polygon")
            moved = await take_pending(pool, "localhost")
            again = await take_pending(pool, "localhost")
        finally:
            await pool.close()
        return elsewhere, moved, again

    assert asyncio.run(run()) == (0, 3, 0)
    assert statuses(db) == {i: "VALIDATING" for i in made} | {canceled: "CANCELED"}
    events = events_by_withdrawal(db)
    for withdrawal_id in made:
        assert events[withdrawal_id] == [
            (None, "PENDING", None),
            ("PENDING", "VALIDATING", INTAKE_NOTE),
        ]
    assert [e[1] for e in events[canceled]] == ["PENDING", "CANCELED"]
    # What the client sees.
    for withdrawal_id in made:
        body = http.get(f"/v1/withdrawals/{withdrawal_id}").json()
        assert (body["status"], body["status_note"]) == ("VALIDATING", INTAKE_NOTE)


def test_take_pending_honours_the_limit_oldest_first(http: httpx.Client, db: Conn, database_url: str) -> None:
    made = create(http, 5)

    async def run() -> int:
        pool = await open_pool(database_url, max_size=2)
        try:
            return await take_pending(pool, "localhost", limit=2)
        finally:
            await pool.close()

    assert asyncio.run(run()) == 2
    now = statuses(db)
    assert [now[i] for i in made] == ["VALIDATING", "VALIDATING", "PENDING", "PENDING", "PENDING"]


def test_concurrent_takers_never_move_a_withdrawal_twice(http: httpx.Client, db: Conn, database_url: str) -> None:
    made = create(http, 30) + create(http, 10, asset="ETH", amount="0.001")

    async def drain(pool: object) -> list[int]:
        counts = []
        while True:
            moved = await take_pending(pool, "localhost", limit=3)  # type: ignore[arg-type]
            counts.append(moved)
            if moved == 0:
                return counts

    async def run() -> list[list[int]]:
        pool = await open_pool(database_url, min_size=4, max_size=4)
        try:
            return await asyncio.gather(*(drain(pool) for _ in range(4)))
        finally:
            await pool.close()

    per_taker = asyncio.run(run())
    assert sum(sum(counts) for counts in per_taker) == len(made)
    assert set(statuses(db).values()) == {"VALIDATING"}
    events = events_by_withdrawal(db)
    assert set(events) == set(made)
    for withdrawal_id in made:
        assert [(e[0], e[1]) for e in events[withdrawal_id]] == [
            (None, "PENDING"),
            ("PENDING", "VALIDATING"),
        ]
