"""Group commit of creates (app/intake.py): creates that arrive together are written together,
and each request still gets the answer it would get alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from app.intake import Busy, Intake
from db import wallets
from db import withdrawals as repo
from db.clients import hash_key
from db.engine import open_pool
from db.queries import query
from db.withdrawals import NewWithdrawal
from tests.conftest import Api, make_client

Conn = psycopg.Connection[dict[str, Any]]  # the `db` fixture's rows are dicts
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OWN_WALLET = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"


def body(to: str = RECIPIENT, amount: str = "1.5") -> dict[str, str]:
    return {"chain": "localhost", "asset": "USDT", "to": to, "amount": amount}


@contextlib.asynccontextmanager
async def intake_on(database_url: str, pool_size: int, **options: Any) -> AsyncIterator[Intake]:
    pool = await open_pool(database_url, max_size=pool_size)
    try:
        yield Intake(pool, **options)
    finally:
        await pool.close()


def statements_of(db: Conn, client_id: uuid.UUID) -> list[list[int]]:
    """The client's withdrawals' amounts, grouped by the statement that wrote them (rows of one
    transaction share its timestamp), in order of their smallest amount."""
    rows = db.execute(
        "SELECT array_agg(amount::int ORDER BY amount) AS amounts FROM withdrawals WHERE client_id = %s "
        "GROUP BY created_at ORDER BY min(amount)",
        (client_id,),
    ).fetchall()
    return [r["amounts"] for r in rows]


def count(db: Conn, sql: str) -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_burst_of_mixed_creates_gets_the_answers_lone_requests_would(db: Conn, api: Api) -> None:
    _, acme = make_client(db, "acme")
    _, globex = make_client(db, "globex")
    wallets.upsert_wallet(db, "localhost", OWN_WALLET, "hot", "dev-mnemonic:9")
    # (key, idempotency key, body, expected status)
    requests: list[tuple[str, str, dict[str, str], int]] = []
    for i in range(40):
        requests.append((acme if i % 2 else globex, f"fresh-{i}", body(amount=f"{i + 1}"), 201))
    requests += [(acme, f"own-{i}", body(to=OWN_WALLET), 422) for i in range(5)]
    requests += [("pk_unknown_" + "x" * 32, f"nokey-{i}", body(), 401) for i in range(5)]
    # One idempotency key, two bodies, sent together: one is created, the other refused as reused.
    requests += [(acme, "twice", body(amount="7"), 201), (acme, "twice", body(amount="8"), 422)]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(requests))
        async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/v1/withdrawals",
                        json=b,
                        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem},
                    )
                    for key, idem, b, _ in requests
                )
            )

    responses = asyncio.run(fire())
    got = [(idem, r.status_code) for (_, idem, _, _), r in zip(requests, responses, strict=True)]
    fresh = [(idem, status) for idem, status in got if idem.startswith(("fresh", "own", "nokey"))]
    assert fresh == [
        (idem, expected) for _, idem, _, expected in requests if idem.startswith(("fresh", "own", "nokey"))
    ]
    assert sorted(status for idem, status in got if idem == "twice") == [201, 422]
    codes = {r.json()["code"] for r in responses if r.status_code == 422}
    assert codes == {"address_is_own_wallet", "idempotency_key_reused"}
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 41
    assert count(db, "SELECT count(*) AS n FROM withdrawal_events") == 41
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'") == 1
    for (_, idem, b, expected), r in zip(requests, responses, strict=True):
        if expected == 201 and idem.startswith("fresh"):
            assert r.json()["amount"] == b["amount"]
    # Written together: rows of one batch share their transaction's timestamp.
    assert count(db, "SELECT count(DISTINCT created_at) AS n FROM withdrawals") < 41


def test_a_burst_of_retries_gets_the_withdrawals_back_as_replays(db: Conn, api: Api) -> None:
    """Retries (a client resending after a timeout, say) are answered from the batch statement:
    the same answer a lone retry gets, nothing written twice."""
    _, acme = make_client(db, "acme")
    headers = {"Authorization": f"Bearer {acme}"}
    with api.client() as http:
        first = {
            f"pay-{i}": http.post(
                "/v1/withdrawals", json=body(amount=f"{i + 1}"), headers=headers | {"Idempotency-Key": f"pay-{i}"}
            )
            for i in range(20)
        }
        assert {r.status_code for r in first.values()} == {201}
        # One of them moves on, so that a replay shows its status now, not the one it was created with.
        db.execute(
            "UPDATE withdrawals SET status = 'VALIDATING', status_note = 'checking' WHERE id = %s",
            (first["pay-3"].json()["id"],),
        )
        current = {
            idem: http.get(f"/v1/withdrawals/{r.json()['id']}", headers=headers).json() for idem, r in first.items()
        }
    jobs = count(db, "SELECT count(*) AS n FROM procrastinate_jobs")
    # (idempotency key, body): each sent again as it was, and five with another amount.
    retries = [(f"pay-{i}", body(amount=f"{i + 1}")) for i in range(20)]
    retries += [(f"pay-{i}", body(amount="99")) for i in range(5)]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(retries))
        async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post("/v1/withdrawals", json=b, headers=headers | {"Idempotency-Key": idem})
                    for idem, b in retries
                )
            )

    for (idem, b), r in zip(retries, asyncio.run(fire()), strict=True):
        if b["amount"] == "99":
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "idempotency_key_reused"
        else:
            assert r.status_code == 200, r.text
            assert r.headers["idempotent-replayed"] == "true"
            assert r.json() == current[idem]
    assert current["pay-3"]["status"] == "VALIDATING"
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 20
    assert count(db, "SELECT count(*) AS n FROM withdrawal_events") == 21
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs") == jobs


def test_a_create_that_fails_does_not_fail_the_others_of_its_batch(db: Conn, database_url: str) -> None:
    client_id, key = make_client(db, "acme")

    def new(amount: int) -> NewWithdrawal:
        return NewWithdrawal(
            idempotency_key=str(uuid.uuid4()),
            request_hash=b"h" * 32,
            chain="localhost",
            asset="USDT",
            to_address=RECIPIENT,
            amount=amount,
            reference=None,
        )

    async def run() -> list[Any]:
        async with intake_on(database_url, 4, writers=1) as intake:
            creates = [intake.create(hash_key(key), new(a)) for a in (1, 2, 10**78, 3)]
            return await asyncio.gather(*creates, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert [type(o).__name__ for o in outcomes] == ["dict", "dict", "NumericValueOutOfRange", "dict"]
    assert [int(o["amount"]) for o in outcomes if isinstance(o, dict)] == [1, 2, 3]
    rows = db.execute("SELECT amount FROM withdrawals WHERE client_id = %s ORDER BY amount", (client_id,)).fetchall()
    assert [int(r["amount"]) for r in rows] == [1, 2, 3]


def test_a_batch_stores_every_field_exactly_as_given(db: Conn, database_url: str) -> None:
    """The creates travel to Postgres as one JSON text: quotes, backslashes, escape-like text and
    every byte value of a hash come back as they went in."""
    client_id, key = make_client(db, "acme")
    odd = ['a"b', "c\\d", "\\u0041", '{"x": 1}', "'; --", "tab\tand/slash", "é ü 中 🙂", "]}"]
    # Eight hashes of 32 bytes: every byte value once; every other reference NULL.
    creates = [
        NewWithdrawal(
            text,
            bytes(range(32 * i, 32 * i + 32)),
            "localhost",
            "USDT",
            RECIPIENT,
            2**256 - 1 - i,
            text if i % 2 else None,
        )
        for i, text in enumerate(odd)
    ]

    async def run() -> list[Any]:
        async with intake_on(database_url, 2, writers=1) as intake:
            return await asyncio.gather(*(intake.create(hash_key(key), new) for new in creates))

    outcomes = asyncio.run(run())
    assert [o["idempotency_key"] for o in outcomes] == odd
    rows = db.execute(
        "SELECT idempotency_key, request_hash, amount, reference FROM withdrawals WHERE client_id = %s",
        (client_id,),
    ).fetchall()
    stored = {r["idempotency_key"]: (bytes(r["request_hash"]), int(r["amount"]), r["reference"]) for r in rows}
    assert stored == {new.idempotency_key: (new.request_hash, new.amount, new.reference) for new in creates}


def test_under_load_creates_a_little_apart_share_a_statement_and_a_lone_one_does_not_wait(
    db: Conn, database_url: str
) -> None:
    client_id, key = make_client(db, "acme")
    # Long against the 100 ms the creates take to arrive and their 10 ms gaps, even on a slow machine.
    linger, quiet = 1.0, 0.5

    async def run() -> tuple[float, list[Any]]:
        async with intake_on(database_url, 4, writers=4, linger=linger, quiet=quiet) as intake:
            started = time.monotonic()
            await intake.create(hash_key(key), order_of(1))  # alone: written at once
            alone = time.monotonic() - started
            creates = []
            for amount in range(2, 12):  # 10 ms apart: each would be written alone without collecting
                creates.append(asyncio.ensure_future(intake.create(hash_key(key), order_of(amount))))
                await asyncio.sleep(0.01)
            return alone, await asyncio.gather(*creates)

    alone, rows = asyncio.run(run())
    assert alone < linger / 2
    assert [int(r["amount"]) for r in rows] == list(range(2, 12))
    # The first came alone and was written alone; the others came less than `linger` apart and
    # share one statement (without collecting, each would have its own: 10 ms apart, a statement
    # takes about 1 ms).
    assert statements_of(db, client_id) == [[1], list(range(2, 12))]


def test_a_burst_is_written_once_no_more_creates_come_without_waiting_the_whole_linger(
    db: Conn, database_url: str
) -> None:
    client_id, key = make_client(db, "acme")
    linger, quiet = 5.0, 0.05

    async def run() -> tuple[float, list[Any]]:
        async with intake_on(database_url, 4, writers=4, linger=linger, quiet=quiet) as intake:
            await intake.create(hash_key(key), order_of(1))
            started = time.monotonic()
            rows = await asyncio.gather(*(intake.create(hash_key(key), order_of(a)) for a in range(2, 7)))
            return time.monotonic() - started, rows

    took, rows = asyncio.run(run())
    assert took < linger / 2  # written once `quiet` passed without a create, not after `linger`
    assert [int(r["amount"]) for r in rows] == [2, 3, 4, 5, 6]
    assert statements_of(db, client_id) == [[1], [2, 3, 4, 5, 6]]


def test_a_writer_stops_collecting_once_enough_creates_wait(db: Conn, database_url: str) -> None:
    # Clients that each wait for their answer send no more while their creates wait: collecting
    # for `linger` would leave the API and Postgres idle for nothing.
    client_id, key = make_client(db, "acme")
    linger, quiet = 60.0, 60.0

    async def run() -> list[Any]:
        async with intake_on(database_url, 4, writers=4, linger=linger, quiet=quiet, enough=4) as intake:
            await intake.create(hash_key(key), order_of(1))  # alone: written at once
            # Three together: fewer than `enough`, the writer collects (for a minute).
            first = [asyncio.ensure_future(intake.create(hash_key(key), order_of(a))) for a in (2, 3, 4)]
            await asyncio.sleep(0.2)
            assert intake.collecting == 1
            assert not any(create.done() for create in first)
            # One more makes `enough`: the writer is woken and writes the four at once.
            last = intake.create(hash_key(key), order_of(5))
            return await asyncio.wait_for(asyncio.gather(*first, last), 10)

    rows = asyncio.run(run())
    assert [int(r["amount"]) for r in rows] == [2, 3, 4, 5]
    assert statements_of(db, client_id) == [[1], [2, 3, 4, 5]]


async def until_waiting_on_locks(watcher: psycopg.AsyncConnection[Any], statements: int) -> None:
    for _ in range(1000):
        cur = await watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
        assert row is not None
        if row[0] >= statements:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {statements} statements waited on a lock")


def test_creates_that_come_while_a_batch_is_written_wait_for_the_next_batch_not_a_new_writer(
    db: Conn, database_url: str
) -> None:
    """A writer whose batch is in flight takes the creates that came meanwhile in its next batch;
    another writer starts only when more wait than that batch holds."""
    client_id, key = make_client(db, "acme")

    async def run() -> tuple[list[int], list[Any]]:
        async with (
            intake_on(database_url, 4, writers=4, max_batch=2) as intake,
            await psycopg.AsyncConnection.connect(database_url) as blocker,
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher,
        ):
            await blocker.execute("LOCK TABLE withdrawals IN SHARE MODE")  # the batches' inserts wait
            creates = [asyncio.ensure_future(intake.create(hash_key(key), order_of(1)))]
            await until_waiting_on_locks(watcher, 1)  # [1] is in flight
            running = []
            for amount in (2, 3, 4, 5):
                creates.append(asyncio.ensure_future(intake.create(hash_key(key), order_of(amount))))
                await asyncio.sleep(0.01)  # each comes alone, no sooner than a lone create is written
                running.append(intake.running)
                if amount == 4:  # 2, 3 and 4 waited: more than one batch; a second writer took two
                    await until_waiting_on_locks(watcher, 2)
            await blocker.rollback()
            return running, await asyncio.gather(*creates)

    running, rows = asyncio.run(run())
    assert [int(r["amount"]) for r in rows] == [1, 2, 3, 4, 5]
    assert running == [1, 1, 2, 2]
    assert statements_of(db, client_id) == [[1], [2, 3], [4, 5]]


def test_a_create_that_comes_while_a_failed_batch_is_written_one_by_one_does_not_wait_for_it(
    db: Conn, database_url: str
) -> None:
    client_id, key = make_client(db, "acme")

    async def run() -> tuple[Any, list[Any]]:
        async with (
            intake_on(database_url, 4, writers=2) as intake,
            await psycopg.AsyncConnection.connect(database_url) as blocker,
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher,
        ):
            # Uncommitted, the same idempotency key as "z-held": its create waits for this transaction.
            await blocker.execute(
                "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount) "
                "VALUES (%s, 'z-held', '\\x00', 'localhost', 'USDT', %s, 1)",
                (client_id, RECIPIENT),
            )
            # One batch; its out-of-range amount fails it, and its creates are written one by one:
            # "a-bad" fails again, "z-held" waits for the blocker.
            failed = [
                asyncio.ensure_future(intake.create(hash_key(key), order_of(a, k)))
                for k, a in (("a-bad", 10**78), ("z-held", 2))
            ]
            await until_waiting_on_locks(watcher, 1)
            assert intake.retrying == 1
            later = await asyncio.wait_for(intake.create(hash_key(key), order_of(3)), 10)
            await blocker.rollback()
            return later, await asyncio.gather(*failed, return_exceptions=True)

    later, outcomes = asyncio.run(run())
    assert int(later["amount"]) == 3
    assert [type(o).__name__ for o in outcomes] == ["NumericValueOutOfRange", "dict"]
    assert statements_of(db, client_id) == [[2], [3]]


def test_creates_waiting_on_a_collecting_writer_hear_it_when_the_writers_are_cancelled(
    db: Conn, database_url: str
) -> None:
    client_id, key = make_client(db, "acme")

    async def run() -> list[Any]:
        async with intake_on(database_url, 2, writers=2, linger=60.0, quiet=60.0) as intake:
            await intake.create(hash_key(key), order_of(1))  # alone: written at once
            waiting = [asyncio.ensure_future(intake.create(hash_key(key), order_of(a))) for a in (2, 3)]
            await asyncio.sleep(0.2)  # a writer is collecting them (for a minute)
            assert intake.collecting == 1
            for task in list(intake.tasks):  # what a server's shutdown does to its tasks
                task.cancel()
            return await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 10)

    outcomes = asyncio.run(run())
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    assert count(db, f"SELECT count(*) AS n FROM withdrawals WHERE client_id = '{client_id}'") == 1


def test_a_create_whose_request_is_gone_is_still_written_with_its_batch(db: Conn, database_url: str) -> None:
    client_id, key = make_client(db, "acme")

    async def run() -> tuple[bool, list[Any], int]:
        async with (
            intake_on(database_url, 2) as intake,
            await psycopg.AsyncConnection.connect(database_url) as blocker,
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher,
        ):
            await blocker.execute("LOCK TABLE withdrawals IN SHARE MODE")  # the batch's insert waits
            creates = [asyncio.ensure_future(intake.create(hash_key(key), order_of(a))) for a in (1, 2, 3)]
            await until_waiting_on_locks(watcher, 1)  # one batch of all three, in flight
            creates[0].cancel()  # its client hung up: the request's task is cancelled
            await blocker.rollback()
            rows = await asyncio.wait_for(asyncio.gather(*creates[1:]), 10)
            await intake.close()
            return creates[0].cancelled(), rows, intake.running

    cancelled, rows, running = asyncio.run(run())
    assert cancelled
    assert [int(r["amount"]) for r in rows] == [2, 3]
    assert statements_of(db, client_id) == [[1, 2, 3]]
    assert running == 0


def create_reads(db: Conn, key: str, relation: str) -> list[tuple[str, str | None]]:
    """How the plan of one create's statement reads `relation`: (node type, index) per scan."""
    params = repo.insert_params([(hash_key(key), order_of(1))])
    plan = db.execute("EXPLAIN (FORMAT JSON) " + query("insert_withdrawal"), params).fetchone()
    assert plan is not None
    scans = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == relation and node["Node Type"] != "ModifyTable":
            scans.append((node["Node Type"], node.get("Index Name")))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["QUERY PLAN"][0]["Plan"])
    return scans


def test_with_many_api_keys_a_create_finds_its_key_by_index(db: Conn) -> None:
    """The creates' row count is unknown to the planner (it takes 100): the key lookup must stay
    an index probe per create, not a read of every API key."""
    client_id, key = make_client(db, "acme")
    db.execute(
        "INSERT INTO api_keys (client_id, key_hash, prefix) "
        "SELECT %s, sha256(i::text::bytea), 'pk_' FROM generate_series(1, 5000) AS i",
        (client_id,),
    )
    db.execute("ANALYZE api_keys")
    assert create_reads(db, key, "api_keys") == [("Index Scan", "uq_api_keys_key_hash")]


def test_with_many_withdrawals_a_retry_finds_its_withdrawal_by_index(db: Conn) -> None:
    """Every create also looks for an earlier one with its idempotency key (a retry): that must
    be an index probe per create, not a read of the client's withdrawals."""
    client_id, key = make_client(db, "acme")
    db.execute(
        "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount) "
        "SELECT %s, 'old-' || i, '\\x00', 'localhost', 'USDT', %s, 1 FROM generate_series(1, 5000) AS i",
        (client_id, RECIPIENT),
    )
    db.execute("ANALYZE withdrawals")
    assert create_reads(db, key, "withdrawals") == [("Index Scan", "uq_withdrawals_client_id_idempotency_key")]


@pytest.mark.parametrize("writers", [1, 4])
def test_creates_with_one_idempotency_key_never_share_a_batch(db: Conn, database_url: str, writers: int) -> None:
    client_id, key = make_client(db, "acme")
    same = NewWithdrawal("same-key", b"h" * 32, "localhost", "USDT", RECIPIENT, 5, None)

    async def run() -> list[Any]:
        async with intake_on(database_url, 4, writers=writers) as intake:
            return await asyncio.gather(*(intake.create(hash_key(key), same) for _ in range(10)))

    outcomes = asyncio.run(run())
    created = [o for o in outcomes if o is not None and not o["replayed"]]
    assert len(created) == 1
    # The others are retries: each gets the created withdrawal back as a replay, or None when it
    # ran while the first was committing (the API then looks it up).
    assert all(o is None or o["id"] == created[0]["id"] for o in outcomes)
    assert count(db, f"SELECT count(*) AS n FROM withdrawals WHERE client_id = '{client_id}'") == 1


def order_of(amount: int, idempotency_key: str | None = None) -> NewWithdrawal:
    return NewWithdrawal(idempotency_key or str(uuid.uuid4()), b"h" * 32, "localhost", "USDT", RECIPIENT, amount, None)


def test_too_many_waiting_creates_are_refused_as_busy(
    db: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.intake.MAX_QUEUED", 2)
    client_id, key = make_client(db, "acme")

    async def run() -> tuple[list[Any], type]:
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            intake = Intake(pool, writers=1)
            async with pool.connection():  # the writer waits for this, the only connection
                first = asyncio.ensure_future(intake.create(hash_key(key), order_of(1)))
                await asyncio.sleep(0.1)  # the writer took the first create and waits
                queued = [asyncio.ensure_future(intake.create(hash_key(key), order_of(a))) for a in (2, 3)]
                await asyncio.sleep(0)
                with pytest.raises(Busy) as refused:
                    await intake.create(hash_key(key), order_of(4))
            return await asyncio.gather(first, *queued), refused.type
        finally:
            await pool.close()

    rows, refused = asyncio.run(run())
    assert refused is Busy
    assert [int(r["amount"]) for r in rows] == [1, 2, 3]
    amounts = db.execute("SELECT amount FROM withdrawals WHERE client_id = %s ORDER BY amount", (client_id,))
    assert [int(r["amount"]) for r in amounts.fetchall()] == [1, 2, 3]


def test_when_the_database_cannot_be_reached_a_batch_fails_at_once(db: Conn, database_url: str) -> None:
    _, key = make_client(db, "acme")

    async def run() -> list[Any]:
        pool = await open_pool(database_url, min_size=1, max_size=1)
        await pool.close()
        intake = Intake(pool, writers=1)
        return await asyncio.gather(
            *(intake.create(hash_key(key), order_of(a)) for a in (1, 2, 3)), return_exceptions=True
        )

    outcomes = asyncio.run(asyncio.wait_for(run(), 10))
    assert [type(o).__name__ for o in outcomes] == ["PoolClosed"] * 3
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 0
