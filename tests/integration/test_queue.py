"""Steps that run alone: one job holds a step's key, another returns at once and comes back later."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import pytest

import jobs.queue
from db.engine import open_pool
from jobs.queue import PRIORITY, alone, enqueue, finds, queue_again
from tests.conftest import make_client

Conn = psycopg.Connection[dict[str, Any]]


def test_a_step_runs_alone_while_it_finds_work(db: Conn, database_url: str) -> None:
    async def run() -> dict[str, Any]:
        pool = await open_pool(database_url, min_size=3, max_size=3)
        try:
            holding, release = asyncio.Event(), asyncio.Event()
            runs: list[str] = []
            work = [5, 2, 0]  # what each run of the holder finds

            async def holder() -> int:
                runs.append("holder")
                if len(runs) == 1:
                    holding.set()
                    await release.wait()
                return work.pop(0)

            async def other() -> int:
                runs.append("other")
                return 0

            async def no_more() -> bool:
                return False

            async def never() -> None:
                raise AssertionError("no job is queued again: the holder finished in time")

            held = asyncio.create_task(alone(pool, "sign:localhost:0xabc", holder, no_more, never))
            await holding.wait()
            seen = {
                "same key meanwhile": await alone(pool, "sign:localhost:0xabc", other, no_more, never),
                "other key meanwhile": await alone(pool, "sign:localhost:0xdef", other, no_more, never),
            }
            release.set()
            seen["holder"] = await held
            seen["same key after"] = await alone(pool, "sign:localhost:0xabc", other, no_more, never)
            seen["runs"] = runs
            return seen
        finally:
            await pool.close()

    assert asyncio.run(run()) == {
        "same key meanwhile": None,  # at once, without waiting for the holder
        "other key meanwhile": 0,  # another key is not held up (its step found nothing)
        "holder": 7,  # ran until a run found nothing: 5 + 2 + 0
        "same key after": 0,  # free again
        "runs": ["holder", "other", "holder", "holder", "other"],
    }


def test_a_step_is_woken_once_per_key_in_the_callers_transaction(db: Conn, database_url: str) -> None:
    async def run() -> None:
        pool = await open_pool(database_url, max_size=2)
        try:
            async with pool.connection() as conn, conn.transaction():
                await enqueue(conn, "sign", chain="localhost", sender="0xabc")
                await enqueue(conn, "sign", chain="localhost", sender="0xabc")  # one waits already
                await enqueue(conn, "sign", chain="localhost", sender="0xdef")
                await enqueue(conn, "validate", chain="localhost")
            async with pool.connection() as conn:
                with contextlib.suppress(RuntimeError):
                    async with conn.transaction():
                        await enqueue(conn, "broadcast", chain="localhost", sender="0xabc")
                        raise RuntimeError("rolled back: no job")
        finally:
            await pool.close()

    asyncio.run(run())
    rows = db.execute(
        "SELECT task_name, queue_name, args, queueing_lock, priority FROM procrastinate_jobs"
        " WHERE status = 'todo' ORDER BY id"
    ).fetchall()
    assert rows == [
        {
            "task_name": "sign",
            "queue_name": "sign",
            "args": {"chain": "localhost", "sender": "0xabc"},
            "queueing_lock": "sign:localhost:0xabc",
            "priority": PRIORITY["sign"],
        },
        {
            "task_name": "sign",
            "queue_name": "sign",
            "args": {"chain": "localhost", "sender": "0xdef"},
            "queueing_lock": "sign:localhost:0xdef",
            "priority": PRIORITY["sign"],
        },
        {
            "task_name": "validate",
            "queue_name": "validate",
            "args": {"chain": "localhost"},
            "queueing_lock": "validate:localhost",
            "priority": PRIORITY["validate"],
        },
    ]


def test_the_holder_looks_for_work_after_letting_the_key_go(db: Conn, database_url: str) -> None:
    async def run(found: list[int], answers: list[bool]) -> tuple[int | None, list[int], list[bool]]:
        pool = await open_pool(database_url, max_size=2)
        try:
            runs: list[int] = []

            async def step() -> int:
                runs.append(found.pop(0) if found else 0)
                return runs[-1]

            async def more() -> bool:
                return answers.pop(0)

            async def never() -> None:
                raise AssertionError("no job is queued again: the holder finished in time")

            return await alone(pool, "validate:localhost", step, more, never), runs, answers
        finally:
            await pool.close()

    # Work came in while it held the key (a job turned away): a second round does it.
    assert asyncio.run(run([0, 3], [True, False])) == (3, [0, 3, 0], [])
    # Work it cannot do (the step finds nothing to do with it): two rounds, then it stops.
    assert asyncio.run(run([], [True, True, True])) == (0, [0, 0], [True, True])


def test_a_holder_with_work_left_after_its_time_queues_a_job_and_ends(
    db: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.queue, "RUN_SECONDS", 0.2)

    async def run() -> int | None:
        pool = await open_pool(database_url, max_size=2)
        try:

            async def step() -> int:  # work that never runs out
                await asyncio.sleep(0.01)
                return 1

            async def more() -> bool:
                return True

            again = queue_again(pool, "sign", "localhost", "0xabc")
            return await alone(pool, "sign:localhost:0xabc", step, more, again)
        finally:
            await pool.close()

    done = asyncio.run(run())
    assert done is not None and 5 <= done <= 40  # it gave the slot back after about 0.2 s
    rows = db.execute("SELECT task_name, args, queueing_lock FROM procrastinate_jobs WHERE status = 'todo'").fetchall()
    assert rows == [
        {
            "task_name": "sign",
            "args": {"chain": "localhost", "sender": "0xabc"},
            "queueing_lock": "sign:localhost:0xabc",
        }
    ]


def test_new_work_does_not_wait_out_a_failed_jobs_backoff(db: Conn, database_url: str) -> None:
    # A broadcast job that failed waits for its retry, in 30 s: a new signed batch moves it to now.
    db.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args, attempts, scheduled_at)"
        " VALUES ('broadcast', 'broadcast', 20, 'broadcast:localhost:0xabc',"
        ' \'{"chain": "localhost", "sender": "0xabc"}\', 1, now() + interval \'30 seconds\')'
    )

    async def run() -> None:
        pool = await open_pool(database_url, max_size=2)
        try:
            async with pool.connection() as conn, conn.transaction():
                await enqueue(conn, "broadcast", chain="localhost", sender="0xabc")
        finally:
            await pool.close()

    asyncio.run(run())
    rows = db.execute("SELECT attempts, scheduled_at FROM procrastinate_jobs").fetchall()
    assert rows == [{"attempts": 1, "scheduled_at": None}]


def test_the_look_for_more_work_queries_see_their_own_step_and_key_only(db: Conn, database_url: str) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal = db.execute(
        "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
        " VALUES (%s, 'k', '\\x00', 'localhost', 'USDT', %s, 1) RETURNING id",
        (client_id, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
    ).fetchone()
    assert withdrawal is not None
    payout = db.execute(
        "INSERT INTO payouts (chain, sender, kind, asset, to_address, status)"
        " VALUES ('localhost', '0xabc', 'withdrawal', 'USDT', '0xdef', 'PLANNED') RETURNING id"
    ).fetchone()
    assert payout is not None

    async def looks() -> dict[str, bool]:
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            asks = {
                "pending localhost": finds(pool, "pending_exists", chain="localhost"),
                "pending other chain": finds(pool, "pending_exists", chain="polygon"),
                "planned 0xabc": finds(pool, "planned_exists", chain="localhost", sender="0xabc"),
                "planned other sender": finds(pool, "planned_exists", chain="localhost", sender="0x123"),
                "planned other chain": finds(pool, "planned_exists", chain="polygon", sender="0xabc"),
                "signed 0xabc": finds(pool, "signed_exists", chain="localhost", sender="0xabc"),
            }
            return {name: await ask() for name, ask in asks.items()}
        finally:
            await pool.close()

    assert asyncio.run(looks()) == {
        "pending localhost": True,
        "pending other chain": False,
        "planned 0xabc": True,
        "planned other sender": False,
        "planned other chain": False,
        "signed 0xabc": False,
    }
    # Taken into the pipeline and signed: each step's own query no longer finds it, the next one does.
    db.execute("UPDATE withdrawals SET status = 'VALIDATING' WHERE id = %s", (withdrawal["id"],))
    db.execute("UPDATE payouts SET status = 'SIGNED', nonce = 0 WHERE id = %s", (payout["id"],))
    after = asyncio.run(looks())
    assert (after["pending localhost"], after["planned 0xabc"], after["signed 0xabc"]) == (False, False, True)


async def finds_nothing() -> bool:
    """`alone`'s `more` when no work is left for the key."""
    return False


async def not_queued_again() -> None:
    """`alone`'s `again` for a step that ends in time."""
    raise AssertionError("not queued again")


def advisory_holders(db: Conn) -> list[dict[str, Any]]:
    """The sessions that hold an advisory lock: their state and whether they pin a snapshot."""
    return db.execute(
        "SELECT a.state, a.backend_xmin IS NOT NULL AS pins_snapshot FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()


def test_a_held_key_keeps_no_transaction_open(db: Conn, database_url: str) -> None:
    """Row versions made dead while a step runs can be pruned: the key's holder is not an open
    transaction holding its last statement's snapshot (which held back pruning in every table
    for the whole run, up to RUN_SECONDS)."""

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        pool = await open_pool(database_url, min_size=2, max_size=2)
        try:
            seen: list[dict[str, Any]] = []

            async def step() -> int:
                seen.extend(await asyncio.to_thread(advisory_holders, db))
                return 0

            await alone(pool, "broadcast:localhost:0xabc", step, finds_nothing, not_queued_again)
            # Looked at with the pool still open: closing it would end every session, locks and all.
            return seen, await asyncio.to_thread(advisory_holders, db)
        finally:
            await pool.close()

    during, after = asyncio.run(run())
    assert during == [{"state": "idle", "pins_snapshot": False}]
    assert after == []  # let go after the step, on a connection back in the pool


def another_session_takes(db: Conn, key: str) -> bool:
    """Whether a session other than the pool's gets `key` (and lets it go at once)."""
    row = db.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS locked", (key,)).fetchone()
    assert row is not None
    if row["locked"]:
        db.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    return bool(row["locked"])


@pytest.mark.parametrize("ending", ["raises", "is cancelled"])
def test_a_step_that_does_not_finish_lets_its_key_go(db: Conn, database_url: str, ending: str) -> None:
    key = "sign:localhost:0xabc"

    async def run() -> tuple[bool, bool, list[dict[str, Any]]]:
        # One connection: the key's holder goes back to the pool (or is replaced) and is the
        # one the next job gets, where a lock left on it would be taken again (they nest).
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            started, go_on = asyncio.Event(), asyncio.Event()

            async def stuck() -> int:
                started.set()
                await go_on.wait()
                raise RuntimeError("the node went away")

            task = asyncio.create_task(alone(pool, key, stuck, finds_nothing, not_queued_again))
            await started.wait()
            held_meanwhile = not await asyncio.to_thread(another_session_takes, db, key)
            if ending == "raises":
                go_on.set()
            else:
                task.cancel()
            with contextlib.suppress(RuntimeError, asyncio.CancelledError):
                await task
            free_after = await asyncio.to_thread(another_session_takes, db, key)
            return held_meanwhile, free_after, await asyncio.to_thread(advisory_holders, db)
        finally:
            await pool.close()

    held_meanwhile, free_after, holders = asyncio.run(run())
    assert held_meanwhile  # the step had the key
    assert free_after  # another session gets it at once: no pooled connection kept it
    assert holders == []
