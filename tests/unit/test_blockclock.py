"""The block clock: the chain's block grid from head sightings, and the last call before a block."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.registry import Chain
from jobs import blockclock
from jobs.blockclock import LEAST, BlockClock, last_call
from tests.conftest import shipped_chain

ORIGIN = 1_800_000_000.25  # block n is made at ORIGIN + n * block_time


def seen_with_lags(clock: BlockClock, numbers: range, lags: list[float], block_time: float) -> None:
    for n, lag in zip(numbers, lags, strict=True):
        clock.saw(n, ORIGIN + n * block_time + lag)


@given(
    block_time=st.sampled_from([1.0, 2.0, 12.0]),
    # A pass every 0.1 s: a head is first seen at most that late (less than DRIFT of a 1 s block).
    lags=st.lists(st.floats(min_value=0.0, max_value=0.1), min_size=LEAST, max_size=40),
    now_offset=st.floats(min_value=0.0, max_value=0.999),
)
def test_the_next_block_is_due_on_the_grid_within_the_smallest_lag(
    block_time: float, lags: list[float], now_offset: float
) -> None:
    clock = BlockClock(block_time)
    first = 100
    seen_with_lags(clock, range(first, first + len(lags)), lags, block_time)
    last = first + len(lags) - 1
    truth = ORIGIN + (last + 1) * block_time
    last_seen = clock.seen[-1][1]
    now = last_seen + now_offset * (truth - last_seen)  # after the newest sighting, before the next block
    due = clock.next_block_at(now)
    assert due is not None
    kept_lags = lags[-len(clock.seen) :]
    # Never before the block: a sighting is never earlier than the head it shows.
    assert truth - 1e-6 <= due <= truth + min(kept_lags) + 1e-6


def test_no_grid_before_enough_heads_were_seen() -> None:
    clock = BlockClock(2.0)
    seen_with_lags(clock, range(10, 10 + LEAST - 1), [0.05] * (LEAST - 1), 2.0)
    assert clock.next_block_at(ORIGIN + 20 * 2.0) is None
    clock.saw(10 + LEAST - 1, ORIGIN + (10 + LEAST - 1) * 2.0 + 0.05)
    assert clock.next_block_at(ORIGIN + (10 + LEAST - 1) * 2.0 + 0.5) is not None


def test_repeated_and_older_heads_are_not_sightings() -> None:
    clock = BlockClock(2.0)
    clock.saw(5, ORIGIN + 10.0)
    clock.saw(5, ORIGIN + 10.5)  # the same head seen again, later
    clock.saw(4, ORIGIN + 10.6)  # a node behind the others
    assert list(clock.seen) == [(5, ORIGIN + 10.0)]


def test_a_chain_that_keeps_another_pace_gets_no_grid() -> None:
    # Blocks every 2.5 s on a chain registered with 2 s: the older and newer sightings disagree.
    clock = BlockClock(2.0)
    for n in range(16):
        clock.saw(n, ORIGIN + n * 2.5 + 0.02)
    assert clock.next_block_at(ORIGIN + 16 * 2.5) is None


def warm(chain: Chain) -> list[float]:
    """Sixteen heads of `chain` (2 s blocks) seen 0-0.1 s late; returns the lags."""
    blockclock._clocks.pop(chain.name, None)
    clock = blockclock.clock(chain)
    rng = random.Random(7)
    lags = [rng.uniform(0.0, 0.1) for _ in range(16)]
    for n, lag in zip(range(1, 17), lags, strict=True):
        clock.saw(n, ORIGIN + n * 2.0 + lag)
    return lags


def test_the_last_call_is_the_send_time_and_a_pass_before_the_block() -> None:
    chain = shipped_chain(block_time_seconds=2.0)
    lags = warm(chain)
    send = 0.4
    ahead = send + blockclock.PASS_LAG
    block_17 = ORIGIN + 17 * 2.0 + min(lags)  # the grid as the earliest sighting marks it
    # Before block 17's last call, the latest last call is block 16's.
    assert last_call(chain, send, block_17 - ahead - 0.3) == pytest.approx(block_17 - 2.0 - ahead, abs=1e-6)
    # From it on, block 17's.
    assert last_call(chain, send, block_17 - ahead + 0.2) == pytest.approx(block_17 - ahead, abs=1e-6)


def test_no_last_call_without_a_send_time_or_when_sending_takes_a_block() -> None:
    chain = shipped_chain(block_time_seconds=2.0)
    warm(chain)
    now = ORIGIN + 17 * 2.0 - 0.2
    assert last_call(chain, 0.4, now) is not None
    assert last_call(chain, None, now) is None
    assert last_call(chain, 1.95, now) is None


def test_old_sightings_are_not_a_grid() -> None:
    # Heads seen a while ago (a quiet chain, a worker that planned nothing for minutes): the
    # grid would be extrapolated from them; it is not.
    chain = shipped_chain(block_time_seconds=2.0)
    warm(chain)
    assert last_call(chain, 0.4, ORIGIN + 17 * 2.0) is not None
    assert last_call(chain, 0.4, ORIGIN + 17 * 2.0 + blockclock.KEEP * 2.0 * 2) is None


def test_a_reset_chain_starts_a_new_grid() -> None:
    clock = BlockClock(2.0)
    for n in range(100, 116):
        clock.saw(n, ORIGIN + n * 2.0)
    clock.saw(3, ORIGIN + 300.0)  # a dev chain restarted from block 0
    assert list(clock.seen) == [(3, ORIGIN + 300.0)]
