"""Planning: give VALIDATING withdrawals a hot wallet that can pay them, as transactions to sign.

Money rule 5: a withdrawal goes only to a hot wallet whose on-chain balance, minus what
in-flight transactions have reserved, covers it and the gas. A shortfall is not a failure: the
withdrawal stays VALIDATING with a note saying what it waits for, and planning runs again.

One planner per chain runs at a time (an advisory lock), so two workers never spend the same
balance twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.amounts import format_units
from app.registry import Asset, Chain
from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition
from jobs import blockclock
from jobs.batchcontract import is_our_contract, pay_native_data, pay_token_data
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
    full: bool = False  # the pass read as many withdrawals as it takes: more may be waiting


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
    balances = await read_balances(rpc, wallets, chain.assets)
    budgets: dict[str, WalletBudget] = {}
    worst_gas = TOKEN_TRANSFER_GAS_RESERVE * fees.max_cost_per_gas()
    for address in wallets:
        available = balances[address]
        for (sender, symbol), amount in reserved.items():
            if sender == address and symbol in available:
                available[symbol] -= amount
        # Gas of the transactions already in flight is spent from the native balance too.
        available[chain.native.symbol] -= in_flight[address] * worst_gas
        budgets[address] = WalletBudget(address=address, available=available, in_flight=in_flight[address])
    return budgets


def balance_of_data(owner: str) -> str:
    return "0x70a08231" + "0" * 24 + owner[2:].lower()


async def read_balances(rpc: RpcClient, addresses: list[str], assets: list[Asset]) -> dict[str, dict[str, int]]:
    """address -> asset symbol -> on-chain balance in base units, in one batch of calls."""
    calls: list[tuple[str, list[Any]]] = []
    for address in addresses:
        for asset in assets:
            if asset.is_native:
                calls.append(("eth_getBalance", [address, "latest"]))
            else:
                calls.append(("eth_call", [{"to": asset.address, "data": balance_of_data(address)}, "latest"]))
    answers = iter(await rpc.batch(calls))
    balances: dict[str, dict[str, int]] = {}
    for address in addresses:
        balances[address] = {}
        for asset in assets:
            raw = next(answers)
            balances[address][asset.symbol] = int(raw, 16) if raw not in (None, "0x") else 0
    return balances


# Gas one more withdrawal adds to a batch, with headroom over what docs/gas.md measured.
BATCH_ITEM_GAS = {"native": 12_000, "token": 32_000}
# Smallest batch that costs less than single transfers (docs/gas.md): a batch costs about 36,000
# gas plus 10,200 per native payment (21,000 each alone: 4 pay it back) and about 45,600 plus
# 9,100 to 26,200 per token payment (34,000 to 51,000 each alone: 2 pay it back).
MIN_BATCH = {"native": 4, "token": 2}


async def existing_accounts(rpc: RpcClient, addresses: list[str]) -> set[str]:
    """Recipients that are not empty (balance, nonce or code): paying an empty account costs the
    25,000-gas new-account charge inside a contract call too, so batching it costs more."""
    unique = sorted(set(addresses))
    calls: list[tuple[str, list[Any]]] = []
    for a in unique:
        calls += [
            ("eth_getBalance", [a, "latest"]),
            ("eth_getTransactionCount", [a, "latest"]),
            ("eth_getCode", [a, "latest"]),
        ]
    answers = await rpc.batch(calls)
    found = set()
    for i, a in enumerate(unique):
        balance, nonce, code = answers[3 * i : 3 * i + 3]
        if int(balance, 16) or int(nonce, 16) or code not in ("0x", "0x0", None):
            found.add(a)
    return found


_verified: set[tuple[int, str]] = set()


async def batch_contract_verified(rpc: RpcClient, chain: Chain) -> bool:
    """The registry's batch_contract holds our contract's code (checked once per process).

    A wrong address would take the coins of a native batch and pay nobody, while the transaction
    still succeeds: batches go only to code that is exactly ours.
    """
    assert chain.batch_contract is not None
    if (chain.chain_id, chain.batch_contract) in _verified:
        return True
    code = await rpc.call("eth_getCode", [chain.batch_contract, "latest"])
    if not is_our_contract(code):
        log.error(
            "batch_contract %s on %s is not our batch contract (deploy it with `payouts contract deploy`);"
            " paying one withdrawal per transaction",
            chain.batch_contract,
            chain.name,
        )
        return False
    _verified.add((chain.chain_id, chain.batch_contract))
    return True


def batch_size(chain: Chain, asset: Asset, block_gas_limit: int) -> int:
    per_item = BATCH_ITEM_GAS["native" if asset.is_native else "token"]
    return max(1, min(chain.batch_max, int(block_gas_limit * chain.batch_gas_share) // per_item))


def waiting_for_batch(
    chain: Chain, rows: list[dict[str, Any]], *, now: float | None = None, last_call: float | None = None
) -> set[str]:
    """Assets whose ready withdrawals are too few for a full batch and young enough to wait: the
    oldest came less than batch_wait_seconds before `now` and after `last_call`, if there is one
    (seconds of the wall clock; jobs/blockclock.py)."""
    if chain.batch_contract is None or chain.batch_wait_seconds <= 0:
        return set()
    now = time.time() if now is None else now
    by_asset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_asset[r["asset"]].append(r)
    held = set()
    for symbol, items in by_asset.items():
        oldest = min(i["created_at"] for i in items).timestamp()
        if (
            len(items) < chain.batch_max
            and now - oldest < chain.batch_wait_seconds
            and (last_call is None or oldest > last_call)
        ):
            held.add(symbol)
    return held


async def plan(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain, *, max_in_flight: int) -> PlanResult:
    result = PlanResult()
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(query("lock_plan"), {"chain": chain.name})
        cur = await conn.execute(query("validating_withdrawals"), {"chain": chain.name, "limit": PLAN_BATCH})
        pending: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
        if not pending:
            return result
        result.full = len(pending) == PLAN_BATCH
        cur = await conn.execute(query("chain_hot_wallets"), {"chain": chain.name})
        wallets = [row["address"] for row in await cur.fetchall()]  # type: ignore[call-overload]
        if not wallets:
            await note(conn, [r["id"] for r in pending], f"waiting: no hot wallet is registered on {chain.name}")
            result.waiting = len(pending)
            return result
        latest, call = None, None
        if chain.batch_contract is not None and chain.batch_wait_seconds > 0:
            # The head first, on every pass (the batch reads its gas limit from it later): the
            # earliest sightings mark the block grid (jobs/blockclock.py). Read only on passes that
            # held a batch, the 2 s chain's inclusion p95 at 100/s was 2.8-3.1 s instead of 2.6-2.7.
            latest = await blockclock.read_head(rpc, chain)
            call = await blockclock.last_call_now(conn, chain)
        hold = waiting_for_batch(chain, pending, last_call=call)
        pending = [r for r in pending if r["asset"] not in hold]
        if not pending:
            return result
        fees = await suggest_fees(rpc, chain)
        budgets = await read_budgets(conn, rpc, chain, wallets, fees)
        if all(b.in_flight >= max_in_flight for b in budgets.values()):
            # Nothing can be assigned before some transactions land: spare the node the recipient
            # checks and this pass the choice (a large backlog would pay them on every pass).
            await note(conn, [r["id"] for r in pending], shortfall_note(chain, chain.native, budgets, 0, max_in_flight))
            result.waiting = len(pending)
            return result
        existing: set[str] = set()
        block_gas_limit = 30_000_000
        if chain.batch_contract is not None and not await batch_contract_verified(rpc, chain):
            chain = replace(chain, batch_contract=None)  # pay one by one rather than into the void
        if chain.batch_contract is not None:
            native = [r["to_address"] for r in pending if r["asset"] == chain.native.symbol]
            existing = await existing_accounts(rpc, native) if native else set()
            latest = latest or await rpc.get_block("latest")
            block_gas_limit = int(latest["gasLimit"], 16) if latest else block_gas_limit

        def batchable(asset: Asset, recipient: str) -> bool:
            return chain.batch_contract is not None and (not asset.is_native or recipient in existing)

        groups: dict[tuple[str, str], list[tuple[dict[str, Any], int]]] = defaultdict(list)
        singles: list[tuple[str, Asset, dict[str, Any], int]] = []
        waiting: dict[str, list[uuid.UUID]] = defaultdict(list)
        for row in pending:
            asset = chain.asset(row["asset"])
            if asset is None:
                waiting[f"waiting: asset {row['asset']} is no longer in the registry"].append(row["id"])
                continue
            amount = int(row["amount"])
            native_need = gas_reserve(asset, fees) + (amount if asset.is_native else 0)
            token_need = 0 if asset.is_native else amount
            batch = batchable(asset, row["to_address"])
            size = batch_size(chain, asset, block_gas_limit)

            def opens(b: WalletBudget, batch: bool = batch, symbol: str = asset.symbol, size: int = size) -> int:
                """1 when the withdrawal would open a transaction of the wallet, 0 when it joins
                one of its batches with room (a group that ends up too small for a batch is
                counted exactly when it is written, below)."""
                if not batch:
                    return 1
                return 1 if len(groups[(b.address, symbol)]) % size == 0 else 0

            candidates = [
                b
                for b in budgets.values()
                if b.in_flight + opens(b) <= max_in_flight
                and b.available[chain.native.symbol] >= native_need
                and (asset.is_native or b.available[asset.symbol] >= token_need)
            ]
            if not candidates:
                waiting[shortfall_note(chain, asset, budgets, amount, max_in_flight)].append(row["id"])
                continue
            # A batch with room first (one more transaction costs its base gas and its own sign,
            # broadcast and receipt work), then the fewest transactions in flight: wallets are
            # parallel nonce lanes.
            symbol = asset.symbol
            wallet = min(candidates, key=lambda b: (opens(b), b.in_flight, -b.available[symbol]))
            wallet.in_flight += opens(wallet)
            wallet.available[chain.native.symbol] -= native_need
            if not asset.is_native:
                wallet.available[asset.symbol] -= token_need
            if batch:
                groups[(wallet.address, asset.symbol)].append((row, amount))
            else:
                singles.append((wallet.address, asset, row, amount))
            result.senders.add(wallet.address)

        writer = PayoutWriter(chain)
        for sender, asset, row, amount in singles:
            writer.add(sender, asset, [(row, amount)])
        for (sender, symbol), members in groups.items():
            asset = chain.asset(symbol)
            assert asset is not None
            size = batch_size(chain, asset, block_gas_limit)
            wallet = budgets[sender]
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                if len(chunk) >= MIN_BATCH["native" if asset.is_native else "token"]:
                    writer.add(sender, asset, chunk)
                    continue
                # Too few to pay the batch call's overhead back: single transfers. The pass counted
                # the chunk as one transaction; each further transfer counts against the cap too,
                # and those beyond it wait for the next pass.
                room = max_in_flight - wallet.in_flight + 1
                for member in chunk[:room]:
                    writer.add(sender, asset, [member])
                wallet.in_flight += min(len(chunk), room) - 1
                for row, _ in chunk[room:]:
                    waiting[f"waiting: wallet {sender} has {max_in_flight} transactions in flight"].append(row["id"])
        assigned = await writer.write(conn)

        if assigned:
            await transition(
                conn,
                assigned,
                WithdrawalStatus.VALIDATING,
                WithdrawalStatus.SIGNING,
                note="assigned to a hot wallet; waiting for its signature",
            )
        for text, ids in waiting.items():
            await note(conn, ids, text)
        for sender in sorted(result.senders):
            await enqueue(conn, "sign", chain=chain.name, sender=sender)
        result.assigned = len(assigned)
        result.waiting = sum(len(ids) for ids in waiting.values())
    if result.waiting:
        log.info("plan %s: %d assigned, %d waiting", chain.name, result.assigned, result.waiting)
    return result


def payload_for(chain: Chain, asset: Asset, recipients: list[str], amounts: list[int]) -> tuple[str, int, bytes]:
    """(to, value, data) of a transaction paying `amounts` to `recipients`: a plain transfer for
    one, a call of our batch contract for several."""
    if len(recipients) == 1:
        if asset.is_native:
            return recipients[0], amounts[0], b""
        assert asset.address is not None
        return asset.address, 0, erc20_transfer_data(recipients[0], amounts[0])
    assert chain.batch_contract is not None
    if asset.is_native:
        return chain.batch_contract, sum(amounts), pay_native_data(recipients, amounts)
    assert asset.address is not None
    return chain.batch_contract, 0, pay_token_data(asset.address, recipients, amounts)


async def insert_payment(
    conn: AsyncConnection, chain: Chain, sender: str, kind: str, asset: Asset, recipients: list[str], amounts: list[int]
) -> uuid.UUID:
    """A payout (to be signed) of `kind` paying `amounts` to `recipients` (payload_for)."""
    to, value, data = payload_for(chain, asset, recipients, amounts)
    cur = await conn.execute(
        query("insert_payout"),
        {
            "chain": chain.name,
            "sender": sender,
            "kind": kind,
            "asset": asset.symbol,
            "to_address": to,
            "value": value,
            "data": data,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row["id"]  # type: ignore[call-overload,no-any-return]


class PayoutWriter:
    """The transactions of one planning pass, written with two statements whatever their number."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.payouts: dict[str, list[Any]] = defaultdict(list)
        self.items: dict[str, list[Any]] = defaultdict(list)

    def add(self, sender: str, asset: Asset, members: list[tuple[dict[str, Any], int]]) -> None:
        amounts = [amount for _, amount in members]
        to, value, data = payload_for(self.chain, asset, [r["to_address"] for r, _ in members], amounts)
        payout_id = uuid.uuid4()
        for column, v in (
            ("ids", payout_id),
            ("senders", sender),
            ("assets", asset.symbol),
            ("to_addresses", to),
            ("values", value),
            ("datas", data),
        ):
            self.payouts[column].append(v)
        for row, amount in members:
            self.items["payout_ids"].append(payout_id)
            self.items["withdrawal_ids"].append(row["id"])
            self.items["amounts"].append(amount)

    async def write(self, conn: AsyncConnection) -> list[uuid.UUID]:
        """Inserts the payouts and their items; returns the withdrawals they pay."""
        if not self.payouts:
            return []
        await conn.execute(query("insert_withdrawal_payouts"), {"chain": self.chain.name, **self.payouts})
        await conn.execute(query("insert_payout_items"), dict(self.items))
        return list(self.items["withdrawal_ids"])


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
