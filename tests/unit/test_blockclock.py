"""The block clock: the chain's block grid from head sightings, the last call before a block, and
how the planner's batch wait uses it."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.registry import load_registry
from jobs import blockclock
from jobs.blockclock import LEAST, BlockClock, last_call
from jobs.plan import waiting_for_batch

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


def localhost(**changes: object) -> object:
    chain = load_registry().get("localhost")
    assert chain is not None
    return replace(chain, block_time_seconds=2.0, **changes)  # type: ignore[arg-type]


def warm(chain: object) -> None:
    blockclock._clocks.pop(chain.name, None)  # type: ignore[attr-defined]
    clock = blockclock.clock(chain)  # type: ignore[arg-type]
    rng = random.Random(7)
    for n in range(1, 17):
        clock.saw(n, ORIGIN + n * 2.0 + rng.uniform(0.0, 0.1))


def test_the_last_call_is_the_send_time_and_a_pass_before_the_block() -> None:
    chain = localhost()
    warm(chain)
    send = 0.4
    block_17 = ORIGIN + 17 * 2.0
    ahead = send + blockclock.PASS_LAG
    # Before block 17's last call, the latest last call is block 16's.
    call = last_call(chain, send, block_17 - ahead - 0.3)  # type: ignore[arg-type]
    assert call == pytest.approx(block_17 - 2.0 - ahead, abs=0.11)
    # After it, block 17's.
    call = last_call(chain, send, block_17 - ahead + 0.2)  # type: ignore[arg-type]
    assert call == pytest.approx(block_17 - ahead, abs=0.11)


def test_no_last_call_without_a_send_time_or_when_sending_takes_a_block() -> None:
    chain = localhost()
    warm(chain)
    now = ORIGIN + 17 * 2.0 - 0.2
    assert last_call(chain, None, now) is None  # type: ignore[arg-type]
    assert last_call(chain, 1.95, now) is None  # type: ignore[arg-type]


def rows(asset: str, count: int, created: float) -> list[dict[str, object]]:
    return [{"asset": asset, "created_at": datetime.fromtimestamp(created, UTC)} for _ in range(count)]


def test_a_batch_goes_out_at_the_last_call_after_its_first_withdrawal() -> None:
    chain = localhost(batch_contract="0x" + "11" * 20, batch_wait_seconds=1.0, batch_max=100)
    now = ORIGIN + 100.0
    came = now - 0.3  # young: batch_wait_seconds alone would hold it 0.7 s more
    pending = rows("USDT", 5, came)
    assert waiting_for_batch(chain, pending, now=now) == {"USDT"}  # type: ignore[arg-type]
    # A last call passed since it came: it goes now, in time for the next block.
    assert waiting_for_batch(chain, pending, now=now, last_call=came + 0.1) == set()  # type: ignore[arg-type]
    # The last call came before it: it waits for the next, or batch_wait_seconds.
    assert waiting_for_batch(chain, pending, now=now, last_call=came - 0.1) == {"USDT"}  # type: ignore[arg-type]
    # batch_wait_seconds still ends every wait, last call or not.
    old = rows("USDT", 5, now - 1.01)
    assert waiting_for_batch(chain, old, now=now, last_call=now - 1.5) == set()  # type: ignore[arg-type]
    # So does a full batch.
    full = rows("ETH", 100, came)
    assert waiting_for_batch(chain, full, now=now, last_call=came - 0.1) == set()  # type: ignore[arg-type]
