"""When a chain's next block comes, and so the last moment a waiting batch can go out and still
be in it.

A withdrawal waiting for its batch to fill (`batch_wait_seconds`) costs latency only when the
wait makes its transaction miss a block. The planner lets a batch wait until its "last call": the
time a transaction released then still reaches the node before the next block (the block time
grid, less how long this chain's transactions have lately taken from planning to broadcast). A
batch whose first withdrawal came before a last call goes out at it; one that came after waits
for the next, never past `batch_wait_seconds`. The waits only get shorter than without it: a
wrong guess costs batch size, never a longer wait.

The grid comes from when this process first saw each new head. A head is seen after it was
made (the planning pass's lag, the node's answer), never before, so of the sightings the
earliest against the grid is the best guess of it. Chains whose blocks do not keep their
`block_time_seconds` (the newest sightings disagree with the older ones) get no last call, and
neither does a grid from sightings older than KEEP blocks (a quiet spell).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from app.registry import Chain
from db.queries import query
from jobs.rpc import RpcClient, RpcError

log = logging.getLogger("payouts.jobs.blockclock")

# Heads kept per chain; the grid's guess is checked by comparing the older and the newer half.
# Sightings older than KEEP block times do not count.
KEEP = 16
# A head this many blocks below the newest one seen means the chain was reset (a dev chain).
RESET = 64
# Fewest heads seen before the grid is trusted.
LEAST = 4
# The halves' guesses of the grid may differ by this share of a block time.
DRIFT = 0.125
# How often the planning-to-broadcast time is read again (seconds; from the latest 200 attempts).
SEND_TIME_EVERY = 5.0
# A planning pass runs at most every 0.1 s (jobs.validate.PASS_EVERY): a last call is seen that
# much late.
PASS_LAG = 0.1


@dataclass
class BlockClock:
    block_time: float
    seen: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=KEEP))

    def saw(self, number: int, at: float) -> None:
        """Head `number` was in the node's answer that arrived at `at` (seconds, wall clock)."""
        if self.seen and number + RESET < self.seen[-1][0]:
            self.seen.clear()
        if not self.seen or number > self.seen[-1][0]:
            self.seen.append((number, at))

    def _origin(self, sightings: list[tuple[int, float]]) -> float:
        return min(at - number * self.block_time for number, at in sightings)

    def next_block_at(self, now: float) -> float | None:
        """When the first block after `now` is due, or None while the grid is not known."""
        sightings = [(n, at) for n, at in self.seen if at >= now - KEEP * self.block_time]
        if len(sightings) < LEAST:
            return None
        half = len(sightings) // 2
        older, newer = self._origin(sightings[:half]), self._origin(sightings[half:])
        if abs(newer - older) > DRIFT * self.block_time:
            return None  # the blocks keep another pace than block_time_seconds
        origin = min(older, newer)
        return origin + (math.floor((now - origin) / self.block_time) + 1) * self.block_time


@dataclass
class SendTime:
    seconds: float | None = None
    read_at: float = -math.inf


_clocks: dict[str, BlockClock] = {}
_send_times: dict[str, SendTime] = {}


def clock(chain: Chain) -> BlockClock:
    found = _clocks.get(chain.name)
    if found is None or found.block_time != chain.block_time_seconds:
        found = _clocks[chain.name] = BlockClock(chain.block_time_seconds)
    return found


async def send_time(conn: AsyncConnection, chain: Chain) -> float | None:
    """Seconds from planning to broadcast that 9 in 10 of the chain's recent transactions kept
    (read again every SEND_TIME_EVERY seconds); None before any was broadcast."""
    known = _send_times.setdefault(chain.name, SendTime())
    if time.monotonic() - known.read_at >= SEND_TIME_EVERY:
        cur = await conn.execute(query("recent_send_seconds"), {"chain": chain.name})
        row = await cur.fetchone()
        known.seconds = None if row is None or row["seconds"] is None else float(row["seconds"])  # type: ignore[call-overload]
        known.read_at = time.monotonic()
    return known.seconds


def last_call(chain: Chain, send_seconds: float | None, now: float) -> float | None:
    """The latest last call at or before `now` (seconds, wall clock), or None when there is none
    to go by: the grid is not known, nothing was sent yet, or sending takes a block or more."""
    if send_seconds is None:
        return None
    ahead = send_seconds + PASS_LAG
    if ahead >= chain.block_time_seconds:
        return None
    due = clock(chain).next_block_at(now)
    if due is None:
        return None
    call = due - ahead
    return call if call <= now else call - chain.block_time_seconds


async def read_head(rpc: RpcClient, chain: Chain) -> dict[str, Any] | None:
    """The chain's latest block, seen now; None when no node answered (the last call is only a
    shortcut: the wait goes on by batch_wait_seconds alone)."""
    try:
        block = await rpc.get_block("latest")
    except RpcError as exc:
        log.warning(
            "%s: the latest block could not be read (%s); batches wait by batch_wait_seconds only",
            chain.name,
            exc.kind.name,
        )
        return None
    if block is not None:
        clock(chain).saw(int(block["number"], 16), time.time())
    return block


async def last_call_now(conn: AsyncConnection, chain: Chain) -> float | None:
    """The latest last call at or before now (see last_call)."""
    return last_call(chain, await send_time(conn, chain), time.time())
