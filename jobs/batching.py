"""Batches at signing time: token approvals for the batch contract, and finding the withdrawals
that make a batch revert (by bisection) so that only they fail and the rest are paid.

Approving our batch contract is safe where approving a public one (Multicall3) is not: its token
path only ever calls transferFrom(msg.sender, ...), so the allowance can be spent only by the hot
wallet's own transactions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from psycopg import AsyncConnection

from app.registry import Asset, Chain
from db.queries import query
from jobs.batchcontract import approve_data
from jobs.rpc import RpcClient, RpcError, RpcErrorKind, revert_reason

UNLIMITED = 2**256 - 1
ALLOWANCE_SELECTOR = "0xdd62ed3e"  # allowance(address,address)


@dataclass(frozen=True)
class Member:
    """One payment inside a transaction: a withdrawal, or a top-up (its id in `withdrawal_id`)."""

    withdrawal_id: uuid.UUID
    to: str
    amount: int


async def members_of(conn: AsyncConnection, payout_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Member]]:
    cur = await conn.execute(query("payout_members"), {"ids": payout_ids})
    found: dict[uuid.UUID, list[Member]] = {}
    for r in cast(list[dict[str, Any]], await cur.fetchall()):
        found.setdefault(r["payout_id"], []).append(Member(r["withdrawal_id"], r["to_address"], int(r["amount"])))
    return found


def is_token_batch(chain: Chain, row: dict[str, Any]) -> bool:
    return chain.batch_contract is not None and row["to_address"] == chain.batch_contract and int(row["value"]) == 0


async def lacking_allowance(
    rpc: RpcClient, chain: Chain, sender: str, rows: list[dict[str, Any]], members: dict[uuid.UUID, list[Member]]
) -> dict[uuid.UUID, Asset]:
    """Token batches whose total exceeds what the sender allows the batch contract to move."""
    batches = [r for r in rows if is_token_batch(chain, r)]
    if not batches:
        return {}
    assert chain.batch_contract is not None
    calls = []
    for r in batches:
        token = chain.asset(r["asset"])
        assert token is not None and token.address is not None
        data = ALLOWANCE_SELECTOR + "0" * 24 + sender[2:].lower() + "0" * 24 + chain.batch_contract[2:].lower()
        calls.append(("eth_call", [{"to": token.address, "data": data}, "latest"]))
    allowances = await rpc.batch(calls)
    lacking = {}
    for r, allowed in zip(batches, allowances, strict=True):
        total = sum(m.amount for m in members.get(r["id"], []))
        if int(allowed, 16) < total:
            asset = chain.asset(r["asset"])
            assert asset is not None
            lacking[r["id"]] = asset
    return lacking


async def plan_approval(conn: AsyncConnection, chain: Chain, sender: str, asset: Asset) -> bool:
    """Queue one approval of the batch contract for `asset`, unless one is on its way."""
    cur = await conn.execute(
        query("approval_in_flight"), {"chain": chain.name, "sender": sender, "asset": asset.symbol}
    )
    row = await cur.fetchone()
    if row and row["pending"]:  # type: ignore[call-overload]
        return False
    assert chain.batch_contract is not None and asset.address is not None
    await conn.execute(
        query("insert_payout"),
        {
            "chain": chain.name,
            "sender": sender,
            "kind": "approve",
            "asset": asset.symbol,
            "to_address": asset.address,
            "value": 0,
            "data": approve_data(chain.batch_contract, UNLIMITED),
        },
    )
    return True


async def find_culprits(rpc: RpcClient, sender: str, build: Any, members: list[Member]) -> dict[uuid.UUID, str]:
    """The members whose payment reverts, each with its reason, by simulating halves.

    `build(members)` gives the (to, value, data) of a transaction paying those members.
    """

    async def reverts(part: list[Member]) -> str | None:
        to, value, data = build(part)
        try:
            await rpc.eth_call({"from": sender, "to": to, "value": value, "data": data})
        except RpcError as exc:
            if exc.kind is RpcErrorKind.EXECUTION_REVERTED:
                return revert_reason(exc.data) or exc.message
            raise
        return None

    culprits: dict[uuid.UUID, str] = {}

    async def search(part: list[Member], known_reason: str | None) -> None:
        reason = known_reason if known_reason is not None else await reverts(part)
        if reason is None:
            return
        if len(part) == 1:
            culprits[part[0].withdrawal_id] = reason
            return
        half = len(part) // 2
        await search(part[:half], None)
        await search(part[half:], None)

    await search(members, await reverts(members))
    return culprits
