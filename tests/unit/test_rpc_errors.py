"""Node error classification, revert reasons and the fee-bump rule, as pure functions."""

from __future__ import annotations

import pytest
import yarl
from eth_abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st

from app.registry import Asset, Chain
from jobs.fees import Fees, bump_fees, min_replacement
from jobs.rpc import (
    RpcError,
    RpcErrorKind,
    _Endpoint,
    _scrub,
    classify_rpc_error,
    is_maybe_mined,
    revert_reason,
)

K = RpcErrorKind
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

CLASSIFIED = [
    # anvil 1.7, as answered to the integration tests (tests/integration/test_rpc.py)
    (-32003, "nonce too low", K.NONCE_TOO_LOW),
    (-32003, "transaction already imported", K.ALREADY_KNOWN),
    (-32003, "replacement transaction underpriced", K.REPLACEMENT_UNDERPRICED),
    (-32003, "Insufficient funds for gas * price + value", K.INSUFFICIENT_FUNDS),
    (-32003, "max fee per gas less than block base fee", K.FEE_TOO_LOW),
    (-32003, "max priority fee per gas higher than max fee per gas", K.OTHER),
    (-32003, "invalid chain id for signer", K.OTHER),
    (-32000, "intrinsic gas too low", K.OTHER),
    (-32000, "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit", K.OTHER),
    (3, "execution reverted: insufficient allowance", K.EXECUTION_REVERTED),
    # geth and bsc
    (-32000, f"nonce too low: address {ADDRESS}, tx: 5 state: 7", K.NONCE_TOO_LOW),
    (-32000, "already known", K.ALREADY_KNOWN),
    (-32000, "replacement transaction underpriced", K.REPLACEMENT_UNDERPRICED),
    (
        -32000,
        f"insufficient funds for gas * price + value: address {ADDRESS} have 0 want 21000",
        K.INSUFFICIENT_FUNDS,
    ),
    (-32000, "insufficient funds for transfer", K.INSUFFICIENT_FUNDS),
    (
        -32000,
        f"max fee per gas less than block base fee: address {ADDRESS}, maxFeePerGas: 1, baseFee: 7",
        K.FEE_TOO_LOW,
    ),
    (-32000, "transaction underpriced: tip needed 1, tip permitted 0", K.FEE_TOO_LOW),
    (
        -32000,
        "transaction gas price below minimum: gas tip cap 0, minimum needed 1000000000",
        K.FEE_TOO_LOW,
    ),
    (-32000, "intrinsic gas too low: gas 20000, minimum needed 21000", K.OTHER),
    (-32000, "exceeds block gas limit", K.OTHER),
    (-32000, "nonce too high", K.NONCE_TOO_HIGH),
    (-32000, "tx fee (1.10 ether) exceeds the configured cap (1.00 ether)", K.OTHER),
    (-32000, "header not found", K.OTHER),
    (3, "execution reverted", K.EXECUTION_REVERTED),
    (3, "", K.EXECUTION_REVERTED),
    # erigon, nethermind, besu, openethereum
    (-32000, "FeeTooLow", K.FEE_TOO_LOW),
    (-32010, "AlreadyKnown", K.ALREADY_KNOWN),
    (-32010, "OldNonce, Current nonce: 5, nonce of rejected tx: 3", K.NONCE_TOO_LOW),
    (-32010, "NonceGap, Future nonce. Expected nonce: 5", K.NONCE_TOO_HIGH),
    (-32010, "InsufficientFunds, Account balance: 0, cumulative cost: 21000", K.INSUFFICIENT_FUNDS),
    (-32010, "ReplacementNotAllowed", K.REPLACEMENT_UNDERPRICED),
    (-32010, "FeeTooLowToCompete", K.FEE_TOO_LOW),
    (-32000, "Known transaction", K.ALREADY_KNOWN),
    (-32000, "unknown transaction", K.OTHER),
    (-32000, "nonce has already been used", K.NONCE_TOO_LOW),
    (-32000, "Upfront cost exceeds account balance", K.INSUFFICIENT_FUNDS),
    (-32000, "Transaction nonce is too distant from current sender nonce", K.NONCE_TOO_HIGH),
    (-32010, "Transaction with the same hash was already imported.", K.ALREADY_KNOWN),
    (-32010, "Transaction nonce is too low. Try incrementing the nonce.", K.NONCE_TOO_LOW),
    (
        -32010,
        "Transaction gas price is too low. There is another transaction with same nonce in "
        "the queue. Try increasing the gas price or incrementing the nonce.",
        K.REPLACEMENT_UNDERPRICED,
    ),
    (
        -32010,
        "Transaction gas price is too low. It does not satisfy your node's minimal gas price "
        "(minimal: 1, got: 0). Try increasing the gas price.",
        K.FEE_TOO_LOW,
    ),
    (-32015, "VM execution error.", K.EXECUTION_REVERTED),
    # rate limits
    (-32005, "daily request count exceeded, request rate limited", K.RATE_LIMITED),
    (-32005, "limit exceeded", K.RATE_LIMITED),
    (429, "Your app has exceeded its compute units per second capacity.", K.RATE_LIMITED),
    (-32007, "15/second request limit reached - reduce calls per second", K.RATE_LIMITED),
    (None, "Too Many Requests", K.RATE_LIMITED),
    # a contract's reason is its own text: it must not read as a node error
    (3, "execution reverted: nonce too low", K.EXECUTION_REVERTED),
    (None, "", K.OTHER),
    (-32601, "Method not found", K.OTHER),
]


@pytest.mark.parametrize(("code", "message", "kind"), CLASSIFIED)
def test_classifies_what_nodes_answer(code: int | None, message: str, kind: RpcErrorKind) -> None:
    assert classify_rpc_error(code, message) is kind


def test_maybe_mined_kinds_are_exactly_the_three_of_money_rule_7() -> None:
    maybe_mined = {kind for kind in RpcErrorKind if is_maybe_mined(kind)}
    assert maybe_mined == {K.NONCE_TOO_LOW, K.ALREADY_KNOWN, K.REPLACEMENT_UNDERPRICED}


def test_rpc_error_classifies_itself_and_keeps_the_node_message() -> None:
    error = RpcError("already known", code=-32000)
    assert (error.kind, error.code, error.message) == (K.ALREADY_KNOWN, -32000, "already known")
    assert "already known" in str(error)


def error_data(reason: str) -> str:
    return "0x08c379a0" + abi_encode(["string"], [reason]).hex()


def test_revert_reason_decodes_error_string() -> None:
    assert revert_reason(error_data("insufficient allowance")) == "insufficient allowance"
    assert revert_reason(error_data("")) == ""


def test_revert_reason_decodes_panic_codes() -> None:
    overflow = "0x4e487b71" + abi_encode(["uint256"], [0x11]).hex()
    assert revert_reason(overflow) == "Panic(0x11): arithmetic overflow or underflow"
    unknown = "0x4e487b71" + abi_encode(["uint256"], [0x99]).hex()
    assert revert_reason(unknown) == "Panic(0x99): unknown panic code"


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "0x",
        "0x08c379a0",
        "0x08c379a0zz",
        "0xdeadbeef" + "00" * 32,
        "08c379a0",
        error_data("cut off")[:-40],
    ],
)
def test_revert_reason_is_none_without_a_decodable_reason(data: str | None) -> None:
    assert revert_reason(data) is None


def test_min_replacement_is_ten_percent_rounded_up_plus_one_wei() -> None:
    assert min_replacement(0) == 1
    assert min_replacement(100) == 111
    assert min_replacement(101) == 113  # 111.1 rounds up to 112, +1
    assert min_replacement(10**9, percent=12) == 1_120_000_001


def chain(*, max_fee: int, max_tip: int, fee_model: str = "eip1559") -> Chain:
    return Chain(
        name="test",
        chain_id=1,
        enabled=True,
        rpc_urls=("http://127.0.0.1:1",),
        confirmations=1,
        block_time_seconds=1.0,
        fee_model=fee_model,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=max_tip,
        native=Asset(symbol="ETH", decimals=18, min_units=1, max_units=10**24),
    )


def test_bump_takes_the_suggestion_when_it_is_above_ten_percent() -> None:
    old = Fees.eip1559(100, 10)
    bumped = bump_fees(old, Fees.eip1559(500, 50), chain(max_fee=10**6, max_tip=10**6))
    assert bumped == Fees.eip1559(500, 50)


def test_bump_stops_at_the_cap_and_says_so() -> None:
    bumped = bump_fees(Fees.eip1559(100, 10), Fees.eip1559(500, 50), chain(max_fee=200, max_tip=20))
    assert bumped == Fees.eip1559(200, 20, capped=True)


def test_bump_is_none_when_the_cap_forbids_ten_percent() -> None:
    old = Fees.eip1559(100, 10)
    assert bump_fees(old, old, chain(max_fee=110, max_tip=50)) is None
    assert bump_fees(old, old, chain(max_fee=111, max_tip=12)) == Fees.eip1559(111, 12)
    assert bump_fees(Fees.legacy(100), Fees.legacy(100), chain(max_fee=110, max_tip=0)) is None


def test_bump_refuses_to_mix_fee_models() -> None:
    with pytest.raises(ValueError, match="fee models"):
        bump_fees(Fees.legacy(100), Fees.eip1559(100, 1), chain(max_fee=10**6, max_tip=10**6))


def test_fees_are_one_model_with_the_tip_under_the_max_fee() -> None:
    with pytest.raises(ValueError):
        Fees(max_fee_per_gas=1, max_priority_fee_per_gas=2)
    with pytest.raises(ValueError):
        Fees(max_fee_per_gas=1, max_priority_fee_per_gas=1, gas_price=1)
    with pytest.raises(ValueError):
        Fees(max_fee_per_gas=1)
    with pytest.raises(ValueError):
        Fees.legacy(-1)
    assert Fees.eip1559(30, 2).tx_fields() == {
        "type": 2,
        "maxFeePerGas": 30,
        "maxPriorityFeePerGas": 2,
    }
    assert Fees.legacy(7).tx_fields() == {"gasPrice": 7}
    assert (Fees.eip1559(30, 2).max_cost_per_gas(), Fees.legacy(7).max_cost_per_gas()) == (30, 7)


wei = st.integers(min_value=0, max_value=10**15)


@st.composite
def eip1559_fees(draw: st.DrawFn) -> Fees:
    max_fee = draw(wei)
    return Fees.eip1559(max_fee, draw(st.integers(min_value=0, max_value=max_fee)))


def accepted_as_replacement(new: int, old: int) -> bool:
    """geth's rule, written independently of jobs.fees: strictly more and at least +10%."""
    return new > old and new * 100 >= old * 110


@given(old=eip1559_fees(), suggested=eip1559_fees(), cap_fee=wei, cap_tip=wei)
def test_eip1559_bump_is_a_valid_replacement_within_caps(
    old: Fees, suggested: Fees, cap_fee: int, cap_tip: int
) -> None:
    new = bump_fees(old, suggested, chain(max_fee=cap_fee, max_tip=cap_tip))
    assert old.max_fee_per_gas is not None and old.max_priority_fee_per_gas is not None
    if new is None:
        assert min_replacement(old.max_fee_per_gas) > cap_fee or min_replacement(old.max_priority_fee_per_gas) > cap_tip
        return
    assert new.max_fee_per_gas is not None and new.max_priority_fee_per_gas is not None
    assert accepted_as_replacement(new.max_fee_per_gas, old.max_fee_per_gas)
    assert accepted_as_replacement(new.max_priority_fee_per_gas, old.max_priority_fee_per_gas)
    assert new.max_fee_per_gas <= cap_fee and new.max_priority_fee_per_gas <= cap_tip
    assert new.max_priority_fee_per_gas <= new.max_fee_per_gas
    assert new.max_fee_per_gas >= min(suggested.max_fee_per_gas or 0, cap_fee)


@given(old=wei, suggested=wei, cap=wei)
def test_legacy_bump_is_a_valid_replacement_within_the_cap(old: int, suggested: int, cap: int) -> None:
    new = bump_fees(Fees.legacy(old), Fees.legacy(suggested), chain(max_fee=cap, max_tip=0))
    if new is None:
        assert min_replacement(old) > cap
        return
    assert new.gas_price is not None
    assert accepted_as_replacement(new.gas_price, old)
    assert min(suggested, cap) <= new.gas_price <= cap


@pytest.mark.parametrize(
    "printed",
    [
        "https://node.example/v3/k%7Eey-SECRET?apikey=a%2FSECRET",  # as configured
        str(yarl.URL("https://node.example/v3/k%7Eey-SECRET?apikey=a%2FSECRET")),  # as aiohttp prints it
    ],
)
def test_a_network_error_names_the_url_without_its_key(printed: str) -> None:
    endpoint = _Endpoint("https://node.example/v3/k%7Eey-SECRET?apikey=a%2FSECRET")
    text = _scrub(Exception(f"400, message='Bad Request', url='{printed}'"), endpoint)
    assert "SECRET" not in text and "node.example" in text
