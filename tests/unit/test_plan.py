"""The planner's batch wait (jobs/plan.py waiting_for_batch): how long ready withdrawals wait for
others to fill their batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs.plan import waiting_for_batch
from tests.conftest import shipped_chain

NOW = 1_800_000_100.0
BATCHING: dict[str, Any] = {"batch_contract": "0x" + "11" * 20, "batch_wait_seconds": 1.0, "batch_max": 100}


def rows(asset: str, count: int, created: float) -> list[dict[str, object]]:
    return [{"asset": asset, "created_at": datetime.fromtimestamp(created, UTC)} for _ in range(count)]


def test_a_young_batch_waits_and_an_old_or_full_one_goes() -> None:
    chain = shipped_chain(**BATCHING)
    assert waiting_for_batch(chain, rows("USDT", 5, NOW - 0.3), now=NOW) == {"USDT"}
    assert waiting_for_batch(chain, rows("USDT", 5, NOW - 1.01), now=NOW) == set()
    assert waiting_for_batch(chain, rows("ETH", 100, NOW - 0.3), now=NOW) == set()
    # Each asset is its own batch: the oldest of each decides.
    mixed = rows("USDT", 5, NOW - 0.3) + rows("ETH", 5, NOW - 1.01)
    assert waiting_for_batch(chain, mixed, now=NOW) == {"USDT"}


def test_nothing_waits_without_a_batch_contract_or_a_wait() -> None:
    young = rows("USDT", 5, NOW)
    assert waiting_for_batch(shipped_chain(**BATCHING | {"batch_contract": None}), young, now=NOW) == set()
    assert waiting_for_batch(shipped_chain(**BATCHING | {"batch_wait_seconds": 0.0}), young, now=NOW) == set()


def test_a_batch_goes_out_at_the_last_call_after_its_first_withdrawal() -> None:
    chain = shipped_chain(**BATCHING)
    came = NOW - 0.3  # young: batch_wait_seconds alone would hold it 0.7 s more
    pending = rows("USDT", 5, came)
    # A last call passed since it came: it goes now, in time for the next block.
    assert waiting_for_batch(chain, pending, now=NOW, last_call=came + 0.1) == set()
    # The last call came before it: it waits for the next, or batch_wait_seconds.
    assert waiting_for_batch(chain, pending, now=NOW, last_call=came - 0.1) == {"USDT"}
    # batch_wait_seconds still ends every wait, last call or not.
    assert waiting_for_batch(chain, rows("USDT", 5, NOW - 1.01), now=NOW, last_call=NOW - 1.5) == set()
