"""Planning: give VALIDATING withdrawals a hot wallet that can pay them, as transactions to sign.

Money rule 5: a withdrawal goes only to a hot wallet whose on-chain balance, minus what
in-flight transactions have reserved, covers it and the gas. A shortfall is not a failure: the
withdrawal stays VALIDATING with a note saying what it waits for, and planning runs again.

One planner per chain runs at a time (an advisory lock), so two workers never spend the same
balance twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.amounts import format_units
from app.registry import Asset, Chain
from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition
from jobs.fees import Fees, suggest_fees
from jobs.queue import enqueue
from jobs.rpc import RpcClient
from jobs.txbuild import NATIVE_TRANSFER_GAS, erc20_transfer_data

log = logging.getLogger("payouts.jobs.plan")

PLAN_BATCH = 2_000
# Gas reserved per transaction while planning; the signer estimates the real figure.
TOKEN_TRANSFER_GAS_RESERVE = 100_000


@dataclass
class WalletBudget:
    address: str
    available: dict[str, int]  # asset symbol -> base units still free
    in_flight: int
    new_payouts: list[uuid.UUID] = field(default_factory=list)


@dataclass
class PlanResult:
    assigned: int = 0
    waiting: int = 0
    senders: set[str] = field(default_factory=set)


def gas_reserve(asset: Asset, fees: Fees) -> int:
    units = NATIVE_TRANSFER_GAS if asset.is_native else TOKEN_TRANSFER_GAS_RESERVE
    return units * fees.max_cost_per_gas()


async def read_budgets(
    conn: AsyncConnection, rpc: RpcClient, chain: Chain, wallets: list[str], fees: Fees
) -> dict[str, WalletBudget]:
    # Reservations first, balances second: a transaction mined in between is then counted twice
    # (safe), never not at all.
    cur = await conn.execute(query("reservations"), {"chain": chain.name})
    reserved: dict[tuple[str, str], int] = {}
    in_flight: dict[str, int] = defaultdict(int)
    for row in await cur.fetchall():
        reserved[(row["sender"], row["asset"])] = int(row["reserved"])  # type: ignore[call-overload]
        in_flight[row["sender"]] += row["transactions"]  # type: ignore[call-overload]
    calls: list[tuple[str, list[Any]]] = []
    for address in wallets:
        calls.append(("eth_getBalance", [address, "latest"]))
        for token in chain.tokens.values():
            calls.append(("eth_call", [{"to": token.address, "data": balance_of_data(address)}, "latest"]))
    results = await rpc.batch(calls)
    budgets: dict[str, WalletBudget] = {}
    i = 0
    worst_gas = TOKEN_TRANSFER_GAS_RESERVE * fees.max_cost_per_gas()
    for address in wallets:
        available = {chain.native.symbol: int(results[i], 16)}
        i += 1
        for token in chain.tokens.values():
            raw = results[i]
            available[token.symbol] = int(raw, 16) if raw not in (None, "0x") else 0
            i += 1
        for (sender, symbol), amount in reserved.items():
            if sender == address and symbol in available:
                available[symbol] -= amount
        # Gas of the transactions already in flight is spent from the native balance too.
        available[chain.native.symbol] -= in_flight[address] * worst_gas
        budgets[address] = WalletBudget(address=address, available=available, in_flight=in_flight[address])
    return budgets


def balance_of_data(owner: str) -> str:
    return "0x70a08231" + "0" * 24 + owner[2:].lower()


async def plan(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain, *, max_in_flight: int) -> PlanResult:
    result = PlanResult()
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(query("lock_plan"), {"chain": chain.name})
        cur = await conn.execute(query("validating_withdrawals"), {"chain": chain.name, "limit": PLAN_BATCH})
        pending = await cur.fetchall()
        if not pending:
            return result
        cur = await conn.execute(query("chain_hot_wallets"), {"chain": chain.name})
        wallets = [row["address"] for row in await cur.fetchall()]  # type: ignore[call-overload]
        if not wallets:
            await note(conn, [r["id"] for r in pending], f"waiting: no hot wallet is registered on {chain.name}")  # type: ignore[call-overload]
            result.waiting = len(pending)
            return result
        fees = await suggest_fees(rpc, chain)
        budgets = await read_budgets(conn, rpc, chain, wallets, fees)

        assigned: list[uuid.UUID] = []
        waiting: dict[str, list[uuid.UUID]] = defaultdict(list)
        for row in pending:
            asset = chain.asset(row["asset"])  # type: ignore[call-overload]
            if asset is None:
                waiting[f"waiting: asset {row['asset']} is no longer in the registry"].append(row["id"])  # type: ignore[call-overload]
                continue
            amount = int(row["amount"])  # type: ignore[call-overload]
            native_need = gas_reserve(asset, fees) + (amount if asset.is_native else 0)
            token_need = 0 if asset.is_native else amount
            candidates = [
                b for b in budgets.values()
                if b.in_flight < max_in_flight
                and b.available[chain.native.symbol] >= native_need
                and (asset.is_native or b.available[asset.symbol] >= token_need)
            ]
            if not candidates:
                waiting[shortfall_note(chain, asset, budgets, amount, max_in_flight)].append(row["id"])  # type: ignore[call-overload]
                continue
            # Fewest transactions in flight first: wallets are parallel nonce lanes.
            wallet = min(candidates, key=lambda b: (b.in_flight, -b.available[asset.symbol]))
            wallet.available[chain.native.symbol] -= native_need
            if not asset.is_native:
                wallet.available[asset.symbol] -= token_need
            wallet.in_flight += 1
            payout_id = await insert_payout(conn, chain, wallet.address, asset, row["to_address"], amount)  # type: ignore[call-overload]
            await conn.execute(
                query("insert_payout_item"),
                {"payout_id": payout_id, "withdrawal_id": row["id"], "amount": amount},  # type: ignore[call-overload]
            )
            assigned.append(row["id"])  # type: ignore[call-overload]
            result.senders.add(wallet.address)

        if assigned:
            await transition(conn, assigned, WithdrawalStatus.VALIDATING, WithdrawalStatus.SIGNING,
                             note="assigned to a hot wallet; waiting for its signature")
        for text, ids in waiting.items():
            await note(conn, ids, text)
        for sender in sorted(result.senders):
            await enqueue(conn, "sign", chain=chain.name, sender=sender)
        result.assigned = len(assigned)
        result.waiting = sum(len(ids) for ids in waiting.values())
    if result.waiting:
        log.info("plan %s: %d assigned, %d waiting", chain.name, result.assigned, result.waiting)
    return result


async def insert_payout(
    conn: AsyncConnection, chain: Chain, sender: str, asset: Asset, recipient: str, amount: int
) -> uuid.UUID:
    if asset.is_native:
        to, value, data = recipient, amount, b""
    else:
        assert asset.address is not None
        to, value, data = asset.address, 0, erc20_transfer_data(recipient, amount)
    cur = await conn.execute(
        query("insert_payout"),
        {"chain": chain.name, "sender": sender, "kind": "withdrawal", "asset": asset.symbol,
         "to_address": to, "value": value, "data": data},
    )
    row = await cur.fetchone()
    assert row is not None
    return row["id"]  # type: ignore[call-overload,no-any-return]


def shortfall_note(chain: Chain, asset: Asset, budgets: dict[str, WalletBudget], amount: int, cap: int) -> str:
    if all(b.in_flight >= cap for b in budgets.values()):
        return f"waiting: every hot wallet has {cap} transactions in flight"
    best = max(b.available[asset.symbol] for b in budgets.values())
    return (
        f"waiting for hot wallet balance: needs {format_units(amount, asset.decimals)} {asset.symbol} "
        f"plus gas; the best wallet has {format_units(max(best, 0), asset.decimals)} {asset.symbol} free"
    )


async def note(conn: AsyncConnection, ids: list[Any], text: str) -> None:
    await conn.execute(query("note_withdrawals"), {"ids": ids, "note": text})
