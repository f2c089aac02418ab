"""The procrastinate app: the job queues that drive the payout pipeline.

It is created without a database; the API and the worker open it on their own connection pool
(`app.open_async(pool)`), so that a job can be deferred inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from db.queries import query

queue = procrastinate.App(
    connector=procrastinate.PsycopgConnector(),
    import_paths=["jobs.validate", "jobs.sign", "jobs.broadcast", "jobs.confirm", "jobs.tick", "jobs.accounts"],
)


# Jobs with a higher priority are fetched first (procrastinate never ages a waiting job). The tick
# goes first, so that it is never stuck behind a backlog; then signing and broadcasting, which
# only drain work that planning made (so they cannot starve the rest); the steps that come back
# by themselves (watch every second per chain, intake, account checks) share one priority and
# take turns in queue order.
PRIORITY = {"tick": 30, "broadcast": 20, "sign": 15, "watch": 10, "validate": 10, "accounts": 10}


def lock_of(task: str, chain: str, sender: str | None = None) -> str:
    """The queueing lock of a step's jobs: at most one waits per step, chain (and sender)."""
    return f"{task}:{chain}" if sender is None else f"{task}:{chain}:{sender}"


async def enqueue(conn: AsyncConnection, task: str, *, chain: str, sender: str | None = None) -> None:
    """Wake a step inside the caller's transaction (the outbox), unless a job for the same step and
    key already waits: it will find this work too, since a step reads all of its key's work."""
    args = {"chain": chain} if sender is None else {"chain": chain, "sender": sender}
    await conn.execute(
        query("enqueue_once"),
        {"task": task, "priority": PRIORITY[task], "lock": lock_of(task, chain, sender), "args": Jsonb(args)},
    )


async def defer_once(task: str, *, chain: str, sender: str | None = None) -> bool:
    """Defer a job on the app's own connection unless one for the same step and key already waits
    (for the tick). Unlike `enqueue`, a job waiting out a retry backoff is left to wait: the tick
    comes every second and would otherwise undo every backoff."""
    kwargs = {"chain": chain} if sender is None else {"chain": chain, "sender": sender}
    try:
        # At most one waiting. Steps that must not run twice at once take a Postgres advisory
        # lock themselves: it dies with a killed worker's connection, a procrastinate `lock` does not.
        await queue.configure_task(
            task, queueing_lock=lock_of(task, chain, sender), priority=PRIORITY[task]
        ).defer_async(**kwargs)
    except AlreadyEnqueued:
        return False  # one is already waiting; it will see the same work
    return True


def finds(pool: AsyncConnectionPool, name: str, **params: str) -> Callable[[], Awaitable[bool]]:
    """`alone`'s `more` for a step: whether the query `name` (an EXISTS ... AS found) finds work."""

    async def more() -> bool:
        async with pool.connection() as conn:
            cur = await conn.execute(query(name), params)
            row = await cur.fetchone()
        return bool(row and row["found"])  # type: ignore[call-overload]

    return more


def queue_again(
    pool: AsyncConnectionPool, task: str, chain: str, sender: str | None = None
) -> Callable[[], Awaitable[None]]:
    """`alone`'s `again` for a step: a job for the same key, in a transaction of its own."""

    async def again() -> None:
        async with pool.connection() as conn, conn.transaction():
            await enqueue(conn, task, chain=chain, sender=sender)

    return again


@contextlib.asynccontextmanager
async def held(pool: AsyncConnectionPool, key: str) -> AsyncIterator[bool]:
    """Try to take the advisory lock `key` on a connection of its own and hold it while the block
    runs; yields whether it was taken.

    The lock is a session lock and the connection stays out of any transaction. A transaction
    left open for the block (as a transaction-scoped lock needs) keeps the snapshot of its last
    statement: Postgres then prunes no row version that any later transaction made dead, in any
    table, for as long as the block runs (up to RUN_SECONDS), and the status changes of
    withdrawals, which would fit in their page, go to every index instead. If anything goes
    wrong between taking and letting go, the connection is closed rather than given back to the
    pool: the lock, if Postgres granted it, goes with the session, as with a dead worker's.
    """
    async with pool.connection() as conn:
        try:
            cur = await conn.execute(query("try_lock_step"), {"key": key})
            row = await cur.fetchone()
            locked = bool(row and row["locked"])  # type: ignore[call-overload]
            yield locked
            if locked:
                cur = await conn.execute(query("unlock_step"), {"key": key})
                row = await cur.fetchone()
                if not row or not row["unlocked"]:  # type: ignore[call-overload]
                    raise RuntimeError(f"the advisory lock {key!r} was not held when let go")
        except BaseException:
            await conn.close()
            raise


# The longest a job runs its step in one go (seconds) before it gives its worker slot back and
# queues a fresh job for the rest: with steady work for many keys, jobs that never ended would
# take every slot (the watcher's among them, whose inclusions free the wallets' in-flight caps).
RUN_SECONDS = 5.0


async def alone(
    pool: AsyncConnectionPool,
    key: str,
    step: Callable[[], Awaitable[int]],
    more: Callable[[], Awaitable[bool]],
    again: Callable[[], Awaitable[None]],
) -> int | None:
    """Run `step` again and again while it does something, as the only job holding `key` (a
    Postgres advisory lock on a connection of its own, gone with a dead worker's connection; see
    `held`).

    Returns the sum of what the runs did, or None at once when another job holds `key`: jobs
    that waited for the lock instead held a worker slot and a connection each, and a backlog
    queued enough of them to leave none for the other steps. A job turned away needs no second
    try: its work was committed before it found `key` taken, and the holder, which asks `more`
    (is there work for `key`?) after letting `key` go, finds it and runs again. A round that did
    nothing ends it even if `more` says yes (work the step cannot do yet, e.g. a transaction that
    waits for a token approval, would keep it spinning). After RUN_SECONDS with work left, it
    calls `again` (queue a job for `key`) and ends.
    """
    done: int | None = None
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        async with held(pool, key) as locked:
            if not locked:
                return done  # another holder took over: it asks `more` itself when it is done
            first = done is None
            done = done or 0
            did_round = 0
            while time.monotonic() < deadline and (did := await step()):
                did_round += did
            done += did_round
        if time.monotonic() >= deadline:
            if await more():
                await again()
            return done
        if (not did_round and not first) or not await more():
            return done


async def step_alone(
    pool: AsyncConnectionPool,
    task: str,
    step: Callable[[], Awaitable[int]],
    finds_work: str,
    *,
    chain: str,
    sender: str | None = None,
) -> int | None:
    """`alone` for a step's job: the key, the look for more work (the query `finds_work`) and the
    fresh job are all the step's own for this chain (and sender)."""
    params = {"chain": chain} if sender is None else {"chain": chain, "sender": sender}
    return await alone(
        pool,
        lock_of(task, chain, sender),
        step,
        finds(pool, finds_work, **params),
        queue_again(pool, task, chain, sender),
    )
