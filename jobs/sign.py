"""Sign step: give planned transactions of one sender their nonces and signatures.

Money rule 3: the nonce is allocated and the signed bytes are stored in one transaction, under
the (chain, sender) advisory lock and the nonce row lock; broadcasting happens only after commit.
A failure before commit (a bad key, a crash) rolls everything back: no nonce is burned.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.registry import Asset, Chain
from db.queries import query
from db.states import WithdrawalStatus
from db.withdrawals import transition, transition_of_payouts
from jobs import context
from jobs.batching import Member, find_culprits, lacking_allowance, members_of, plan_approval
from jobs.fees import suggest_fees
from jobs.keys import load_signer
from jobs.plan import payload_for
from jobs.queue import PRIORITY, enqueue, queue, step_alone
from jobs.retry import backoff
from jobs.rpc import RpcClient, RpcError, RpcErrorKind, concurrently, revert_reason
from jobs.txbuild import NATIVE_TRANSFER_GAS, Payload, Signer, tx_fields

log = logging.getLogger("payouts.jobs.sign")

SIGN_BATCH = 200
GAS_MARGIN_PERCENT = 20


@dataclass(frozen=True)
class Prepared:
    payout_id: uuid.UUID
    payload: Payload
    gas_limit: int


def with_margin(estimate: int) -> int:
    # A plain transfer to an account costs exactly 21,000; anything else gets headroom.
    if estimate == NATIVE_TRANSFER_GAS:
        return estimate
    return estimate + (estimate * GAS_MARGIN_PERCENT + 99) // 100


async def simulate(
    rpc: RpcClient, sender: str, rows: list[dict[str, Any]]
) -> tuple[list[Prepared], dict[uuid.UUID, str]]:
    """eth_call and eth_estimateGas for each transaction, both on the latest block; returns those
    that would succeed and the revert reasons of those that would not (RpcClient.estimate_gas
    says why the estimate names its block)."""
    calls: list[tuple[str, list[Any]]] = []
    for row in rows:
        tx = {
            "from": sender,
            "to": row["to_address"],
            "value": hex(int(row["value"])),
            "data": "0x" + bytes(row["data"]).hex(),
        }
        calls.append(("eth_call", [tx, "latest"]))
        calls.append(("eth_estimateGas", [tx, "latest"]))
    results = await rpc.batch(calls, return_errors=True)
    prepared: list[Prepared] = []
    reverted: dict[uuid.UUID, str] = {}
    for i, row in enumerate(rows):
        call_result, estimate = results[2 * i], results[2 * i + 1]
        for outcome in (call_result, estimate):
            if isinstance(outcome, RpcError):
                if outcome.kind is RpcErrorKind.EXECUTION_REVERTED:
                    reverted[row["id"]] = revert_reason(outcome.data) or outcome.message
                    break
                raise outcome  # transient: the job retries
        else:
            payload = Payload(to=row["to_address"], value=int(row["value"]), data=bytes(row["data"]))
            prepared.append(Prepared(row["id"], payload, with_margin(int(estimate, 16))))
    return prepared, reverted


async def fail_planned(conn: AsyncConnection, payout_id: uuid.UUID, reason: str) -> None:
    """A transaction that would revert is never signed: fail its withdrawals (or top-ups), drop it.

    Only while it is still unsigned: another signer may have signed it since this one simulated it.
    """
    cur = await conn.execute(query("lock_planned_payout"), {"id": payout_id})
    if await cur.fetchone() is None:
        return
    cur = await conn.execute(query("live_withdrawals_of_payouts"), {"ids": [payout_id]})
    ids = [r["withdrawal_id"] for r in await cur.fetchall()]  # type: ignore[call-overload]
    await conn.execute(
        query("fail_topups_of_payout"), {"payout_id": payout_id, "note": f"the top-up would revert: {reason}"}
    )
    await conn.execute(query("delete_planned_payout"), {"id": payout_id})
    await transition(
        conn,
        ids,
        WithdrawalStatus.SIGNING,
        WithdrawalStatus.FAILED,
        note="the payment would revert",
        failure_code="simulation_reverted",
        failure_reason=reason,
    )


async def split_out(
    conn: AsyncConnection, chain: Chain, row: dict[str, Any], members: list[Member], bad: dict[uuid.UUID, str]
) -> None:
    """Fail the withdrawals that make a batch revert and rebuild the batch without them."""
    if not bad:
        log.warning("batch %s reverts but no single withdrawal in it does; it is kept for another try", row["id"])
        return
    for withdrawal_id, reason in bad.items():
        await conn.execute(query("drop_planned_member"), {"payout_id": row["id"], "withdrawal_id": withdrawal_id})
        await transition(
            conn,
            [withdrawal_id],
            WithdrawalStatus.SIGNING,
            WithdrawalStatus.FAILED,
            note="its payment would revert; the rest of its batch is paid",
            failure_code="simulation_reverted",
            failure_reason=reason,
        )
    rest = [m for m in members if m.withdrawal_id not in bad]
    if not rest:
        await conn.execute(query("delete_planned_payout"), {"id": row["id"]})
        return
    asset = chain.asset(row["asset"])
    assert asset is not None
    to, value, data = payload_for(chain, asset, [m.to for m in rest], [m.amount for m in rest])
    await conn.execute(
        query("rebuild_planned_payout"), {"id": row["id"], "to_address": to, "value": value, "data": data}
    )


async def lock_nonce(conn: AsyncConnection, chain: Chain, sender: str, chain_nonce: int) -> int:
    params = {"chain": chain.name, "address": sender}
    await conn.execute(query("insert_nonce"), params | {"next_nonce": chain_nonce})
    cur = await conn.execute(query("lock_nonce"), params)
    row = await cur.fetchone()
    assert row is not None
    ours = int(row["next_nonce"])  # type: ignore[call-overload]
    if chain_nonce > ours:
        # The key was used outside this system: those nonces are gone. Our transactions that
        # held them are settled by the watcher (mined, or superseded and paid again).
        log.warning(
            "nonce drift on %s for %s: chain is at %d, we were at %d; skipping ahead",
            chain.name,
            sender,
            chain_nonce,
            ours,
        )
        return chain_nonce
    if chain_nonce < ours:
        cur = await conn.execute(query("highest_live_nonce"), {"chain": chain.name, "sender": sender})
        row = await cur.fetchone()
        live = row["nonce"] if row else None  # type: ignore[call-overload]
        if live is None or live < chain_nonce:
            # A gap nothing of ours will fill (the chain forgot transactions, e.g. a reset dev
            # chain or a restored node): a transaction above it would wait forever. Continue
            # from the chain's count; none of the forgotten nonces is on chain, so no payment
            # can be made twice by reusing them.
            log.warning(
                "nonce gap on %s for %s: chain is at %d, we were at %d with nothing in flight; from the chain now",
                chain.name,
                sender,
                chain_nonce,
                ours,
            )
            return chain_nonce
    return ours


async def sign_sender(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain, sender: str) -> int:
    """Sign this sender's planned transactions; returns how many were signed."""
    async with pool.connection() as conn:
        cur = await conn.execute(query("planned_payouts"), {"chain": chain.name, "sender": sender, "limit": SIGN_BATCH})
        rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
        if not rows:
            return 0
        cur = await conn.execute(query("wallet_key_ref"), {"chain": chain.name, "address": sender})
        wallet = await cur.fetchone()
        members = await members_of(conn, [r["id"] for r in rows])
    # A token batch needs the batch contract approved first; it waits for the approval to be mined.
    lacking = await lacking_allowance(rpc, chain, sender, rows, members)
    if lacking:
        async with pool.connection() as conn, conn.transaction():
            for asset in {a.symbol: a for a in lacking.values()}.values():
                if await plan_approval(conn, chain, sender, asset):
                    await enqueue(conn, "sign", chain=chain.name, sender=sender)
        rows = [r for r in rows if r["id"] not in lacking]
    # Three questions to the node at once: each is a round trip; asked together they overlap.
    # As before, the fees and the nonce are read before the sender's lock (the fees are the
    # market's, not the transactions'); a bisection below takes long enough to read the nonce again.
    (prepared, reverted), fees, chain_nonce = await concurrently(
        simulate(rpc, sender, rows), suggest_fees(rpc, chain), rpc.get_transaction_count(sender, "latest")
    )
    # A batch that would revert: find the withdrawals that make it revert; fail only them.
    culprits: dict[uuid.UUID, dict[uuid.UUID, str]] = {}
    for row in rows:
        if row["id"] in reverted and row["kind"] == "withdrawal" and len(members.get(row["id"], [])) > 1:
            batch_asset = chain.asset(row["asset"])
            assert batch_asset is not None

            def build(part: list[Member], asset: Asset = batch_asset) -> tuple[str, int, bytes]:
                return payload_for(chain, asset, [m.to for m in part], [m.amount for m in part])

            culprits[row["id"]] = await find_culprits(rpc, sender, build, members[row["id"]])
            del reverted[row["id"]]
    if culprits:
        chain_nonce = await rpc.get_transaction_count(sender, "latest")

    signed = 0
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(query("lock_sender"), {"chain": chain.name, "sender": sender})
        for payout_id, reason in reverted.items():
            await fail_planned(conn, payout_id, reason)
        for payout_id, bad in culprits.items():
            row = next(r for r in rows if r["id"] == payout_id)
            await split_out(conn, chain, row, members[payout_id], bad)
        if culprits:
            await enqueue(conn, "sign", chain=chain.name, sender=sender)  # the rest, simulated again
        nonce = await lock_nonce(conn, chain, sender, chain_nonce)
        signer = Signer(load_signer(wallet["key_ref"] if wallet else None, address=sender))  # type: ignore[call-overload]
        cur = await conn.execute(query("lock_planned_payouts"), {"ids": [p.payout_id for p in prepared]})
        still_planned = {r["id"] for r in await cur.fetchall()}  # type: ignore[call-overload]
        signed_rows: dict[str, list[Any]] = {k: [] for k in ("ids", "nonces", "gas_limits", "tx_hashes", "raw_txs")}
        for p in prepared:
            if p.payout_id not in still_planned:
                continue  # another signer got it first
            tx = signer.sign(
                tx_fields(
                    chain_id=chain.chain_id,
                    nonce=nonce,
                    payload=p.payload,
                    gas=p.gas_limit,
                    fee_fields=fees.tx_fields(),
                ),
            )
            for column, value in zip(signed_rows, (p.payout_id, nonce, p.gas_limit, tx.tx_hash, tx.raw), strict=True):
                signed_rows[column].append(value)
            nonce += 1
        del signer
        payout_ids = signed_rows["ids"]
        if payout_ids:
            cur = await conn.execute(
                query("store_signed_payouts"),
                signed_rows
                | {
                    "max_fee_per_gas": fees.max_fee_per_gas,
                    "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
                    "gas_price": fees.gas_price,
                },
            )
            if len(await cur.fetchall()) != len(payout_ids):
                raise RuntimeError("a locked planned transaction was not stored as signed")  # rolls back
            await conn.execute(query("set_nonce"), {"chain": chain.name, "address": sender, "next_nonce": nonce})
            await transition_of_payouts(
                conn,
                payout_ids,
                WithdrawalStatus.SIGNING,
                WithdrawalStatus.SIGNED,
                note="signed; waiting to be broadcast",
            )
            await enqueue(conn, "broadcast", chain=chain.name, sender=sender)
        signed = len(payout_ids)
    return signed


@queue.task(name="sign", queue="sign", priority=PRIORITY["sign"], retry=backoff(10))
async def sign_task(chain: str, sender: str) -> int:
    pool, rpc, c = context.pool(), context.rpc(chain), context.chain(chain)

    # One signing job per sender at a time: two would simulate the same transactions, and the
    # second would wait for the first's sender lock only to find them signed.
    done = await step_alone(
        pool, "sign", lambda: sign_sender(pool, rpc, c, sender), "planned_exists", chain=chain, sender=sender
    )
    return done or 0
