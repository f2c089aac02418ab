"""The fee oracle: what to pay per gas for a new transaction, and for a replacement of one.

Every amount is an integer number of wei (money rule 1). The chain registry's caps
(`Chain.max_fee_per_gas`, `Chain.max_priority_fee_per_gas`) bound every suggestion and every
bump; when a cap binds, the result says so (`capped`) so the caller can alert. A replacement
that the caps make impossible is None: the caller keeps the old transaction, never drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median_low
from typing import Any

from app.registry import Chain
from jobs.rpc import FeeHistory, RpcClient, RpcError

# Empty blocks report a zero reward and some nodes refuse zero-tip transactions; a tiny
# floor (0.001 gwei) keeps tips non-zero without overpaying on chains with cheap blocks.
DEFAULT_MIN_TIP = 1_000_000
DEFAULT_BUMP_PERCENT = 10


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees (max_fee_per_gas, max_priority_fee_per_gas) or a legacy gas_price."""

    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None
    capped: bool = False  # a registry cap lowered what the market asked for

    def __post_init__(self) -> None:
        values = (self.max_fee_per_gas, self.max_priority_fee_per_gas, self.gas_price)
        for value in values:
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"fees must be non-negative ints (wei), got {value!r}")
        max_fee, tip = self.max_fee_per_gas, self.max_priority_fee_per_gas
        if self.gas_price is not None:
            if (max_fee, tip) != (None, None):
                raise ValueError("legacy fees have a gas_price and no EIP-1559 fields")
        elif max_fee is None or tip is None:
            raise ValueError("fees need max_fee_per_gas and max_priority_fee_per_gas, or gas_price")
        elif tip > max_fee:
            raise ValueError(f"max_priority_fee_per_gas {tip} exceeds max_fee_per_gas {max_fee}")

    @classmethod
    def eip1559(cls, max_fee: int, tip: int, capped: bool = False) -> Fees:
        return cls(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip, capped=capped)

    @classmethod
    def legacy(cls, gas_price: int, capped: bool = False) -> Fees:
        return cls(gas_price=gas_price, capped=capped)

    @property
    def is_eip1559(self) -> bool:
        return self.gas_price is None

    def tx_fields(self) -> dict[str, Any]:
        """The fee fields of a transaction dict for eth-account's sign_transaction."""
        if self.gas_price is not None:
            return {"gasPrice": self.gas_price}
        return {
            "type": 2,
            "maxFeePerGas": self.max_fee_per_gas,
            "maxPriorityFeePerGas": self.max_priority_fee_per_gas,
        }

    def max_cost_per_gas(self) -> int:
        """The most one unit of gas can cost: what balance checks must reserve."""
        cost = self.gas_price if self.gas_price is not None else self.max_fee_per_gas
        assert cost is not None  # guaranteed by __post_init__
        return cost


async def suggest_fees(
    rpc: RpcClient,
    chain: Chain,
    *,
    tip_percentile: float = 50,
    blocks: int = 10,
    min_tip: int = DEFAULT_MIN_TIP,
) -> Fees:
    """Fees for a new transaction on `chain`, within the registry's caps.

    EIP-1559: tip = the median, over the last `blocks` blocks that carried transactions, of each
    block's `tip_percentile` reward (the node's eth_maxPriorityFeePerGas when all were empty),
    at least `min_tip`; maxFee = 2 * next base fee + tip, which survives about six full blocks
    of base-fee growth (+12.5% each). Legacy: eth_gasPrice.
    """
    if chain.fee_model == "legacy":
        return _legacy_within_caps(await rpc.gas_price(), chain)
    if chain.fee_model != "eip1559":
        raise ValueError(f"chain {chain.name} has unknown fee model {chain.fee_model!r}")
    if blocks < 1 or not 0 <= tip_percentile <= 100:
        raise ValueError("blocks must be >= 1 and tip_percentile within 0..100")
    history = await rpc.fee_history(blocks, "latest", [tip_percentile])
    if not history.base_fees:
        raise RpcError(f"{chain.name}: eth_feeHistory returned no base fees")
    tip = max(await _market_tip(rpc, history), min_tip)
    return _eip1559_within_caps(history.base_fees[-1], tip, chain)


async def _market_tip(rpc: RpcClient, history: FeeHistory) -> int:
    # Empty blocks report a zero reward that says nothing about what gets included.
    rewards = [row[0] for row, used in zip(history.rewards, history.gas_used_ratios, strict=False) if row and used > 0]
    if rewards:
        return int(median_low(rewards))
    return await rpc.max_priority_fee()


def _eip1559_within_caps(next_base_fee: int, tip: int, chain: Chain) -> Fees:
    capped_tip = min(tip, chain.max_priority_fee_per_gas)
    wanted_max_fee = 2 * next_base_fee + capped_tip
    max_fee = min(wanted_max_fee, chain.max_fee_per_gas)
    final_tip = min(capped_tip, max_fee)
    return Fees.eip1559(max_fee, final_tip, capped=final_tip != tip or max_fee != wanted_max_fee)


def _legacy_within_caps(gas_price: int, chain: Chain) -> Fees:
    capped = min(gas_price, chain.max_fee_per_gas)
    return Fees.legacy(capped, capped=capped != gas_price)


def min_replacement(old: int, percent: int = DEFAULT_BUMP_PERCENT) -> int:
    """The smallest fee a node accepts as a replacement for `old`: +percent%, rounded up, +1 wei
    (nodes differ in rounding and some also demand strictly more than the old fee)."""
    return -(-old * (100 + percent) // 100) + 1


def bump_fees(old: Fees, suggested: Fees, chain: Chain, *, percent: int = DEFAULT_BUMP_PERCENT) -> Fees | None:
    """Fees for a replacement of a transaction sent with `old`: each field raised by at least
    `percent`% and at least to today's suggestion, within the caps; None if the caps forbid it."""
    if percent < 0:
        raise ValueError(f"percent must be >= 0, got {percent}")
    if old.is_eip1559 != suggested.is_eip1559:
        raise ValueError("old and suggested fees use different fee models")
    if old.gas_price is not None:
        assert suggested.gas_price is not None
        price = _bumped(old.gas_price, suggested.gas_price, chain.max_fee_per_gas, percent)
        return None if price is None else Fees.legacy(price[0], capped=price[1])
    assert old.max_fee_per_gas is not None and old.max_priority_fee_per_gas is not None
    assert suggested.max_fee_per_gas is not None and suggested.max_priority_fee_per_gas is not None
    max_fee = _bumped(old.max_fee_per_gas, suggested.max_fee_per_gas, chain.max_fee_per_gas, percent)
    tip = _bumped(
        old.max_priority_fee_per_gas,
        suggested.max_priority_fee_per_gas,
        chain.max_priority_fee_per_gas,
        percent,
    )
    if max_fee is None or tip is None:
        return None
    # Never lowers the tip below its minimum bump: max_fee >= min_replacement(old max fee).
    final_tip = min(tip[0], max_fee[0])
    return Fees.eip1559(max_fee[0], final_tip, capped=max_fee[1] or tip[1] or final_tip != tip[0])


def _bumped(old: int, suggested: int, cap: int, percent: int) -> tuple[int, bool] | None:
    """(new fee, whether the cap lowered it), or None when even the minimum bump exceeds `cap`."""
    floor = min_replacement(old, percent)
    if floor > cap:
        return None
    wanted = max(floor, suggested)
    return min(wanted, cap), wanted > cap
