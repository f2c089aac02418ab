"""Group commit for creates: the creates that requests make at about the same time are written
by one statement in one transaction (db/withdrawals.py insert_withdrawals).

A create joins a queue; a writer takes everything queued (up to MAX_BATCH) and writes it on a
pooled connection. A create that comes alone (the one before it came LINGER or more earlier) is
written at once. Under load (creates less than LINGER apart) the writer first collects: it waits
while creates keep coming, until none has come for QUIET or LINGER has passed since the oldest
waiting one came, or ENOUGH wait, so that the creates of those few milliseconds share one
statement. A statement costs the API and Postgres about 0.65 ms of CPU whatever its size and about
0.1 ms per create, so at 1,000 creates/s one create per statement would spend most of that CPU on
the statements; and a burst (a few clients each waiting for its answer) stops collecting QUIET
after its last create. With ENOUGH creates in hand the statement's own cost is 0.04 ms of each
(against 0.1 ms of the create's own), while waiting for more leaves the API and Postgres idle when
the creates' clients wait for their answers before they send again: 100 such clients, with the
writer collecting up to MAX_BATCH, had their answers and next creates trickle in until LINGER ran
out, with about 45 creates in hand at each batch (the API at 83 % CPU): 9,200 creates/s, p95
latency 15 ms; stopping at ENOUGH, 11,200/s and 10.5 ms. While a writer's batch is in flight, the
creates that come wait for its next batch: the batches grow with the load by themselves, and the
API, whose CPU is the limit at saturation, spends less of it per create (100 clients sending as
fast as they are answered, when writers collected up to MAX_BATCH, side by side with a new writer
for each create that found the others busy: batches of about 45 creates instead of 35, 9 % to 16 %
more creates per second, p95 latency 12 % to 25 % lower). Another writer starts, up to WRITERS,
each on its own connection, only when more creates wait than the running writers' next batches
hold. Each request is answered only after its batch commits, so a 201 still means the withdrawal
and its job are stored.

Two creates with the same idempotency key never share a batch (the second waits for the next),
so each learns the outcome a lone request would. When a batch fails because of what one create
holds (a data or constraint error, or a deadlock), each of its creates is written again alone, so
one bad create cannot fail the others; when it fails because the database cannot be reached, all
of them fail at once, as lone requests would. At most MAX_QUEUED creates wait: beyond that the API
answers 503 `busy` (retryable) rather than queueing work it cannot write in time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from psycopg_pool import AsyncConnectionPool

from db import withdrawals as repo

log = logging.getLogger("payouts.api.intake")

MAX_BATCH = 64
ENOUGH = 16
WRITERS = 4
LINGER = 0.003  # seconds
QUIET = 0.001  # seconds
MIN_WAIT = 0.0005  # seconds
MAX_QUEUED = 4_096
# SQLSTATE classes of errors that come from one create's data (22 data exception, 23 integrity
# constraint) and transaction conflicts worth a retry (40001 serialization, 40P01 deadlock).
RETRY_ALONE = ("22", "23", "40001", "40P01")

# (API key hash, create, its request's future, when it arrived by the loop's clock)
Pending = tuple[bytes, repo.NewWithdrawal, "asyncio.Future[dict[str, Any] | None]", float]


class Busy(Exception):
    """More creates are waiting than the writers can take in time."""


class Intake:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        max_batch: int = MAX_BATCH,
        writers: int = WRITERS,
        linger: float = LINGER,
        quiet: float = QUIET,
        enough: int = ENOUGH,
    ) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.enough = min(enough, max_batch)
        self.writers = writers
        self.linger = linger
        self.quiet = quiet
        self.running = 0
        self.collecting = 0
        self.retrying = 0  # writers writing a failed batch's creates one by one
        self.last_arrival = float("-inf")
        self.gap = float("inf")  # seconds between the last two creates
        self.queue: deque[Pending] = deque()
        self.wakers: set[asyncio.Future[None]] = set()  # the collecting writers' alarms
        self.tasks: set[asyncio.Task[None]] = set()

    async def create(self, key_hash: bytes, new: repo.NewWithdrawal) -> dict[str, Any] | None:
        """The new withdrawal's row, the earlier one of a retry (`replayed`), or None (see
        insert_withdrawals). Raises Busy when MAX_QUEUED creates are already waiting."""
        if len(self.queue) >= MAX_QUEUED:
            raise Busy(f"{len(self.queue)} creates are waiting to be written")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        now = loop.time()
        self.gap, self.last_arrival = now - self.last_arrival, now
        self.queue.append((key_hash, new, done, now))
        # A running writer takes this create in its next batch (a collecting one: in the batch it
        # collects), unless more wait than the running writers' next batches hold. A writer that
        # writes a failed batch's creates one by one takes no batch soon.
        if self.running < self.writers and len(self.queue) > self.max_batch * (self.running - self.retrying):
            self.running += 1
            task = asyncio.create_task(self._write())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if self.wakers and len(self.queue) >= self.enough:
            for waker in list(self.wakers):
                _wake(waker)  # a collecting writer has enough: it writes them now
        # A client that hangs up cancels `done` alone: the writer's task goes on, writes the
        # create with its batch, and passes over the cancelled future (_settle).
        return await done

    async def close(self) -> None:
        """Wait for the batches being written (at shutdown, after the last request)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        keys: set[tuple[bytes, str]] = set()
        later = []
        while self.queue and len(batch) < self.max_batch:
            item = self.queue.popleft()
            key = (item[0], item[1].idempotency_key)
            if key in keys:
                later.append(item)
                continue
            keys.add(key)
            batch.append(item)
        self.queue.extendleft(reversed(later))
        return batch

    async def _collect(self) -> None:
        """Under load, wait for more creates to join the batch (see above)."""
        if self.gap >= self.linger or len(self.queue) >= self.enough:
            return
        loop = asyncio.get_running_loop()
        deadline = self.queue[0][3] + self.linger
        self.collecting += 1
        try:
            while len(self.queue) < self.enough:
                wait = min(deadline, self.last_arrival + self.quiet) - loop.time()
                # uvloop's timers count whole milliseconds: a wait of a fraction of one would
                # wake at once and spin until the clock ticks.
                if wait < MIN_WAIT:
                    break
                waker = loop.create_future()
                timer = loop.call_later(wait, _wake, waker)
                self.wakers.add(waker)
                try:
                    await waker
                finally:
                    timer.cancel()
                    self.wakers.discard(waker)
        finally:
            self.collecting -= 1

    async def _write(self) -> None:
        batch: list[Pending] = []
        cancelled = False
        try:
            while self.queue:
                if self.collecting and len(self.queue) <= self.max_batch:
                    break  # the writer collecting takes them as soon as it stops waiting
                await self._collect()
                batch = self._take()
                if not batch:
                    break  # another writer took them while this one collected
                try:
                    async with self.pool.connection() as conn:
                        rows = await repo.insert_withdrawals(conn, [(k, w) for k, w, _, _ in batch])
                except Exception as exc:  # noqa: BLE001 - each create gets its own outcome below
                    await self._after_failure(batch, exc)
                else:
                    for (_, _, done, _), row in zip(batch, rows, strict=True):
                        _settle(done, row)
                batch = []
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self.running -= 1
            stopped = ConnectionError("the API stopped before the create was written")
            # Cancelled (at shutdown) with a batch in hand: its requests hear it, not silence;
            # and the last writer cancelled (one collecting holds no batch) answers the queue.
            for _, _, done, _ in batch:
                _settle(done, stopped)
            while cancelled and not self.running and self.queue:
                _settle(self.queue.popleft()[2], stopped)

    async def _after_failure(self, batch: list[Pending], exc: Exception) -> None:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if len(batch) == 1 or not sqlstate.startswith(RETRY_ALONE):
            for _, _, done, _ in batch:
                _settle(done, exc)
            return
        log.warning("a batch of %d creates failed (SQLSTATE %s); writing each alone", len(batch), sqlstate)
        self.retrying += 1
        try:
            for key_hash, new, done, _ in batch:
                try:
                    async with self.pool.connection() as conn:
                        (row,) = await repo.insert_withdrawals(conn, [(key_hash, new)])
                except Exception as alone:  # noqa: BLE001 - handed to the request
                    _settle(done, alone)
                else:
                    _settle(done, row)
        finally:
            self.retrying -= 1


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


def _settle(done: asyncio.Future[dict[str, Any] | None], outcome: dict[str, Any] | None | Exception) -> None:
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
        # Its request may have gone (a client that hung up): the error is the request's to
        # report, not asyncio's to log as never retrieved.
        done.exception()
    else:
        done.set_result(outcome)
