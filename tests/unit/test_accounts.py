"""Choosing top-ups: who is low, how much, within the daily limit and the main account's spare."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.registry import Asset, load_registry
from jobs.accounts import Rule, TopUp, choose_topups, effective_rule, gas_floor
from jobs.fees import Fees

ETH = Asset(symbol="ETH", decimals=18, min_units=1, max_units=10**24)
USDT = Asset(symbol="USDT", decimals=6, min_units=1, max_units=10**15, address="0x" + "11" * 20)


def rule(threshold: int = 50, target: int = 100, daily_limit: int = 10**9, asset: Asset = ETH) -> Rule:
    return Rule(asset=asset, threshold=threshold, target=target, daily_limit=daily_limit, main_alert_below=0)


def test_wallets_under_the_threshold_are_filled_to_the_target_lowest_first() -> None:
    chosen, limited, short = choose_topups(
        rule(), {"a": 40, "b": 10, "c": 50, "d": 99}, set(), daily_left=10**9, main_spare=10**9
    )
    assert chosen == [TopUp("b", 90, 10), TopUp("a", 60, 40)]  # c is at the threshold, not under it
    assert (limited, short) == (0, 0)


def test_a_wallet_with_a_top_up_on_its_way_is_skipped() -> None:
    chosen, _, _ = choose_topups(rule(), {"a": 0, "b": 0}, {"a"}, daily_left=10**9, main_spare=10**9)
    assert [t.wallet for t in chosen] == ["b"]


def test_the_daily_limit_holds_top_ups_back_and_says_how_much() -> None:
    chosen, limited, short = choose_topups(rule(), {"a": 0, "b": 20}, set(), daily_left=130, main_spare=10**9)
    assert chosen == [TopUp("a", 100, 0), TopUp("b", 30, 20)]
    assert (limited, short) == (50, 0)


def test_a_short_main_account_is_reported_apart_from_the_limit() -> None:
    chosen, limited, short = choose_topups(rule(), {"a": 0, "b": 0}, set(), daily_left=10**9, main_spare=150)
    assert chosen == [TopUp("a", 100, 0), TopUp("b", 50, 0)]
    assert (limited, short) == (0, 50)


def test_a_negative_free_balance_is_filled_from_zero() -> None:
    # Withdrawals in flight may reserve more than the wallet holds: it needs the full target.
    chosen, _, _ = choose_topups(rule(), {"a": -30}, set(), daily_left=10**9, main_spare=10**9)
    assert chosen == [TopUp("a", 100, -30)]


@given(
    free=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(-1000, 1000), max_size=8),
    daily_left=st.integers(0, 5000),
    main_spare=st.integers(0, 5000),
    threshold=st.integers(0, 500),
    extra=st.integers(1, 500),
)
def test_top_ups_never_pass_the_target_the_limit_or_the_main_balance(
    free: dict[str, int], daily_left: int, main_spare: int, threshold: int, extra: int
) -> None:
    r = rule(threshold=threshold, target=threshold + extra)
    chosen, _, _ = choose_topups(r, free, set(), daily_left=daily_left, main_spare=main_spare)
    total = sum(t.amount for t in chosen)
    assert total <= min(daily_left, main_spare)
    assert len({t.wallet for t in chosen}) == len(chosen)
    for t in chosen:
        assert t.amount > 0
        assert free[t.wallet] < r.threshold
        assert max(free[t.wallet], 0) + t.amount <= r.target


def test_the_gas_station_raises_the_native_rule_only_where_tokens_are_paid() -> None:
    chain = load_registry(environ={}).chains["localhost"]
    fees = Fees(max_fee_per_gas=10 * 10**9, max_priority_fee_per_gas=10**9)
    floor = gas_floor(chain, fees)
    assert floor == chain.gas_station_transfers * 100_000 * 10 * 10**9
    native = rule(threshold=1, target=2)
    alone = effective_rule(chain, native, {"ETH": native}, fees)
    assert (alone.threshold, alone.target) == (1, 2)
    token = rule(asset=USDT)
    raised = effective_rule(chain, native, {"ETH": native, "USDT": token}, fees)
    assert (raised.threshold, raised.target) == (floor, 2 * floor)
    assert effective_rule(chain, token, {"ETH": native, "USDT": token}, fees) == token
