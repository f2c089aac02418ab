"""Watch step: follow one chain's head and settle every transaction on its way.

For each broadcast or included transaction, look up the receipts of all its attempts (any one
may be the one mined):
- mined: INCLUDED, its withdrawals CONFIRMING; at the chain's depth, with the block hash still
  canonical, CONFIRMED (or FAILED when it reverted, or CANCELED when the cancel was mined);
- its block no longer canonical, or its receipt gone: a reorg, back to BROADCASTED and sent again;
- not mined after the chain's stuck timeout: sent again when the node forgot it (dropped), else
  replaced at the same nonce with the same payload and fees raised by at least 10 %, within the
  cap; when the cap blocks the bump, an alert, and the transaction is kept;
- its nonce used at depth by a transaction that is none of its attempts: SUPERSEDED, and its
  withdrawals are paid again (money rule 2).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.registry import Chain
from db.queries import query
from db.states import WithdrawalStatus as S
from db.withdrawals import transition, transition_of_payouts
from jobs import context
from jobs.fees import Fees, bump_fees, suggest_fees
from jobs.keys import load_signer
from jobs.queue import PRIORITY, enqueue, held, lock_of, queue
from jobs.retry import backoff
from jobs.rpc import RpcClient, RpcError, RpcErrorKind, revert_reason
from jobs.txbuild import Payload, sign, tx_fields

log = logging.getLogger("payouts.jobs.confirm")


@dataclass
class WatchResult:
    included: int = 0
    confirmed: int = 0
    reorged: int = 0
    replaced: int = 0
    rebroadcast: int = 0
    superseded: int = 0


async def withdrawals_of(conn: AsyncConnection, payout_id: uuid.UUID) -> list[uuid.UUID]:
    cur = await conn.execute(query("live_withdrawals_of_payouts"), {"ids": [payout_id]})
    return [r["withdrawal_id"] for r in await cur.fetchall()]  # type: ignore[call-overload]


async def watch_chain(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain) -> WatchResult:
    """One pass over the chain's transactions on their way; a no-op if another watcher runs."""
    # One watcher per chain at a time (two would sign the same fee bump twice).
    async with held(pool, lock_of("watch", chain.name)) as locked:
        if not locked:
            return WatchResult()
        return await _watch(pool, rpc, chain)


def _block_of(receipt: dict[str, Any]) -> int:
    return int(receipt["blockNumber"], 16)


async def _watch(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain) -> WatchResult:
    result = WatchResult()
    repay_reverted = chain.revert_policy == "repay"
    async with pool.connection() as conn:
        cur = await conn.execute(query("watched_payouts"), {"chain": chain.name})
        payouts: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
        if not payouts:
            return result
        cur = await conn.execute(query("attempts_of_payouts"), {"ids": [p["id"] for p in payouts]})
        attempts: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for a in cast(list[dict[str, Any]], await cur.fetchall()):
            attempts.setdefault(a["payout_id"], []).append(a)

    head = await rpc.block_number()
    # "No receipt" is known as of now: a pass that takes long must not judge a transaction stuck
    # by the time it reaches it (it may be mined meanwhile, and a bump would only cost a send).
    looked_at = datetime.now(UTC)
    canonical: dict[int, str | None] = {}
    await read_canonical(rpc, canonical, {p["block_number"] for p in payouts if p["status"] == "INCLUDED"})
    # Receipts are asked only where one can be: a broadcast transaction whose nonce the sender's
    # mined transactions have reached, and an included one whose block is no longer the one it
    # was found in. An included transaction whose block stands is in it (the block hash commits
    # to its transactions): its stored receipt is used. A pool of thousands in flight then costs
    # one call per sender per pass, not one per transaction.
    senders = sorted({p["sender"] for p in payouts if p["status"] == "BROADCASTED"})
    counts = await rpc.batch([("eth_getTransactionCount", [s, "latest"]) for s in senders])
    mined_count = {s: int(c, 16) for s, c in zip(senders, counts, strict=True)}
    receipts: dict[int, dict[str, Any]] = {}
    asked: set[uuid.UUID] = set()
    for p in payouts:
        if p["status"] == "INCLUDED":
            standing = canonical.get(p["block_number"])
            if standing is None:
                continue  # the node does not show that height right now: looked at again later
            asked.add(p["id"])
            if standing == p["block_hash"]:
                for attempt in attempts.get(p["id"], []):
                    if attempt["id"] == p["mined_attempt_id"] and attempt["receipt_status"] is not None:
                        receipts[attempt["id"]] = stored_receipt(attempt)
        elif p["nonce"] is not None and p["nonce"] < mined_count[p["sender"]]:
            asked.add(p["id"])
    wanted = [
        a
        for p in payouts
        if p["id"] in asked and not any(a["id"] in receipts for a in attempts.get(p["id"], []))
        for a in attempts.get(p["id"], [])
    ]
    receipts_raw = await rpc.batch([("eth_getTransactionReceipt", [a["tx_hash"]]) for a in wanted])
    receipts |= {a["id"]: r for a, r in zip(wanted, receipts_raw, strict=True) if r}
    await read_canonical(rpc, canonical, {_block_of(r) for r in receipts.values()})

    reasons = await revert_reasons(rpc, payouts, attempts, receipts)

    stuck: list[dict[str, Any]] = []
    async with pool.connection() as conn, conn.transaction():
        settled = Settled()
        for p in payouts:
            mine = attempts.get(p["id"], [])
            seen = [(a, receipts[a["id"]]) for a in mine if a["id"] in receipts]
            mined = next(((a, r) for a, r in seen if canonical.get(_block_of(r)) == r["blockHash"]), None)
            if p["status"] == "INCLUDED":
                now_at_height = canonical.get(p["block_number"])
                if now_at_height is None:
                    continue  # the node does not show that height right now: look again later
                if now_at_height != p["block_hash"]:
                    # Money rule 6: the including block is gone. Back to BROADCASTED (or straight
                    # to the new block if an attempt is already mined again).
                    await reorged(conn, p)
                    result.reorged += 1
                    if mined is None:
                        continue
                    settled.include(p, *mined, head)
                elif mined is None or mined[0]["id"] != p["mined_attempt_id"]:
                    continue  # the block stands but this node lost the receipt: look again later
                depth = head - _block_of(mined[1]) + 1
                if depth >= chain.confirmations:
                    settled.final(p, *mined, depth)
                    result.confirmed += 1
                else:
                    settled.depth(p, depth)
                continue
            if mined is not None:
                settled.include(p, *mined, head)
                result.included += 1
                depth = head - _block_of(mined[1]) + 1
                if depth >= chain.confirmations:
                    settled.final(p, *mined, depth)
                    result.confirmed += 1
                continue
            if seen:
                continue  # a receipt from a block that is not canonical (yet): look again later
            stuck.append(p)
        await settled.write(conn, chain, repay_reverted=repay_reverted, reasons=reasons)

    if stuck:
        await settle_unmined(pool, rpc, chain, stuck, attempts, head, looked_at, result, asked=asked)
    return result


async def read_canonical(rpc: RpcClient, canonical: dict[int, str | None], heights: set[int]) -> None:
    """Adds to `canonical` the hash of the block the node now has at each of `heights`."""
    wanted = sorted(heights - canonical.keys())
    if wanted:
        got = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in wanted])
        canonical |= {n: (b or {}).get("hash") for n, b in zip(wanted, got, strict=True)}


def stored_receipt(attempt: dict[str, Any]) -> dict[str, Any]:
    """What the watcher stored of a mined attempt's receipt, in the node's own spelling."""
    return {
        "blockNumber": hex(attempt["block_number"]),
        "blockHash": attempt["block_hash"],
        "status": hex(attempt["receipt_status"]),
    }


# (payout row, its mined attempt, the attempt's receipt, the head or the depth)
Mined = tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]


@dataclass
class Settled:
    """What one pass found for transactions mined as expected, written set-wise in a few
    statements (in this order: inclusions, depths, final states) rather than a few per
    transaction."""

    included: list[Mined] = field(default_factory=list)
    depths: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    finals: list[Mined] = field(default_factory=list)

    def include(self, p: dict[str, Any], attempt: dict[str, Any], receipt: dict[str, Any], head: int) -> None:
        self.included.append((p, attempt, receipt, head))

    def depth(self, p: dict[str, Any], depth: int) -> None:
        self.depths.append((p, depth))

    def final(self, p: dict[str, Any], attempt: dict[str, Any], receipt: dict[str, Any], depth: int) -> None:
        self.finals.append((p, attempt, receipt, depth))

    async def write(
        self, conn: AsyncConnection, chain: Chain, *, repay_reverted: bool, reasons: dict[int, str]
    ) -> None:
        if self.included:
            await include(conn, self.included)
        if self.depths:
            await conn.execute(
                query("set_payouts_confirmations"),
                {"ids": [p["id"] for p, _ in self.depths], "confirmations": [d for _, d in self.depths]},
            )
        # A payout whose inclusion did not move (it was no longer BROADCASTED) is not INCLUDED
        # either: the final steps' compare-and-set leaves it alone. Paid payments go together;
        # a mined cancel or a revert is settled one payout at a time.
        paid = [f for f in self.finals if int(f[2]["status"], 16) == 1 and f[1]["kind"] == "payout"]
        if paid:
            await confirm(conn, paid)
        paid_ids = {p["id"] for p, _, _, _ in paid}
        for p, attempt, receipt, depth in self.finals:
            if p["id"] not in paid_ids:
                await finalize(conn, chain, p, attempt, receipt, depth, repay_reverted=repay_reverted, reasons=reasons)


async def include(conn: AsyncConnection, mined: list[Mined]) -> None:
    """Mined attempts: their receipts, their transactions INCLUDED, their withdrawals CONFIRMING."""
    blocks = [int(receipt["blockNumber"], 16) for _, _, receipt, _ in mined]
    cur = await conn.execute(
        query("mark_payouts_included"),
        {
            "ids": [p["id"] for p, _, _, _ in mined],
            "attempt_ids": [a["id"] for _, a, _, _ in mined],
            "block_numbers": blocks,
            "block_hashes": [r["blockHash"] for _, _, r, _ in mined],
            "receipt_statuses": [int(r["status"], 16) for _, _, r, _ in mined],
            "confirmations": [head - block + 1 for (_, _, _, head), block in zip(mined, blocks, strict=True)],
        },
    )
    moved = {row["id"] for row in await cur.fetchall()}  # type: ignore[call-overload]
    notes = []
    for (p, attempt, receipt, _), block in zip(mined, blocks, strict=True):
        if p["id"] in moved:
            p.update(
                status="INCLUDED", block_number=block, block_hash=receipt["blockHash"], mined_attempt_id=attempt["id"]
            )
            notes.append(f"mined in block {block} ({attempt['tx_hash']}); waiting for confirmations")
    await transition_of_payouts(
        conn, [p["id"] for p, _, _, _ in mined if p["id"] in moved], S.BROADCASTED, S.CONFIRMING, notes=notes
    )


async def confirm(conn: AsyncConnection, finals: list[Mined]) -> None:
    """Successful payments at the confirmation depth: CONFIRMED, with their withdrawals."""
    cur = await conn.execute(
        query("confirm_payouts"),
        {"ids": [p["id"] for p, _, _, _ in finals], "confirmations": [depth for _, _, _, depth in finals]},
    )
    moved = {row["id"] for row in await cur.fetchall()}  # type: ignore[call-overload]
    done = [(p, attempt) for p, attempt, _, _ in finals if p["id"] in moved]
    await transition_of_payouts(
        conn,
        [p["id"] for p, _ in done],
        S.CONFIRMING,
        S.CONFIRMED,
        notes=[f"confirmed ({attempt['tx_hash']})" for _, attempt in done],
    )


async def reorged(conn: AsyncConnection, p: dict[str, Any]) -> None:
    log.warning("reorg: payout %s left block %s", p["id"], p["block_number"])
    await conn.execute(query("clear_attempt_receipts"), {"id": p["id"]})
    moved = await conn.execute(query("mark_payout_reorged"), {"id": p["id"]})
    if moved.rowcount:
        p.update(status="BROADCASTED", block_number=None, block_hash=None, mined_attempt_id=None)
        await transition(
            conn,
            await withdrawals_of(conn, p["id"]),
            S.CONFIRMING,
            S.BROADCASTED,
            note="the block that included it was reorganized away; waiting to be mined again",
        )


async def revert_reasons(
    rpc: RpcClient,
    payouts: list[dict[str, Any]],
    attempts: dict[uuid.UUID, list[dict[str, Any]]],
    receipts: dict[int, dict[str, Any]],
) -> dict[int, str]:
    """Why mined transactions reverted: their call replayed on the state before their block."""
    replays: list[tuple[int, tuple[str, list[Any]]]] = []
    for p in payouts:
        for a in attempts.get(p["id"], []):
            r = receipts.get(a["id"])
            if r is not None and int(r["status"], 16) == 0 and a["kind"] == "payout":
                tx = {
                    "from": p["sender"],
                    "to": p["to_address"],
                    "value": hex(int(p["value"])),
                    "data": "0x" + bytes(p["data"]).hex(),
                    "gas": hex(int(a["gas_limit"])),
                }
                replays.append((a["id"], ("eth_call", [tx, hex(max(_block_of(r) - 1, 0))])))
    if not replays:
        return {}
    answers = await rpc.batch([call for _, call in replays], return_errors=True)
    reasons = {}
    for (attempt_id, _), answer in zip(replays, answers, strict=True):
        if isinstance(answer, RpcError) and answer.kind is RpcErrorKind.EXECUTION_REVERTED:
            reasons[attempt_id] = revert_reason(answer.data) or answer.message
    return reasons


async def finalize(
    conn: AsyncConnection,
    chain: Chain,
    p: dict[str, Any],
    attempt: dict[str, Any],
    receipt: dict[str, Any],
    depth: int,
    *,
    repay_reverted: bool,
    reasons: dict[int, str],
) -> None:
    ok = int(receipt["status"], 16) == 1
    status = "CONFIRMED" if ok else "REVERTED"
    moved = await conn.execute(query("mark_payout_final"), {"id": p["id"], "status": status, "confirmations": depth})
    if not moved.rowcount:
        return
    ids = await withdrawals_of(conn, p["id"])
    tx = attempt["tx_hash"]
    if attempt["kind"] == "cancel":
        await conn.execute(query("release_payout_items"), {"id": p["id"]})
        await transition(conn, ids, S.CONFIRMING, S.CANCELED, note=f"canceled: the cancel transaction {tx} was mined")
    elif ok:
        await transition(conn, ids, S.CONFIRMING, S.CONFIRMED, note=f"confirmed ({tx})")
    elif repay_reverted:
        await conn.execute(query("release_payout_items"), {"id": p["id"]})
        why = reasons.get(attempt["id"]) or "no reason given"
        await transition(conn, ids, S.CONFIRMING, S.VALIDATING, note=f"transaction {tx} reverted ({why}); paying again")
        await enqueue(conn, "validate", chain=chain.name)
    else:
        why = reasons.get(attempt["id"]) or "no reason given"
        await transition(
            conn,
            ids,
            S.CONFIRMING,
            S.FAILED,
            note=f"transaction {tx} reverted",
            failure_code="reverted",
            failure_reason=f"transaction {tx} reverted on chain: {why}",
        )


async def settle_unmined(
    pool: AsyncConnectionPool,
    rpc: RpcClient,
    chain: Chain,
    stuck: list[dict[str, Any]],
    attempts: dict[uuid.UUID, list[dict[str, Any]]],
    head: int,
    looked_at: datetime,
    result: WatchResult,
    *,
    asked: set[uuid.UUID],
) -> None:
    """`looked_at`: when the receipts that `stuck` lacked were asked for; `asked`: the
    transactions whose receipts were (the others were not mined as far as the node knew).

    A transaction waits its turn behind the sender's earlier nonces: while the sender's lane
    moves (its mined count grew in the last `stuck_after_seconds` worth of blocks) nothing in it
    is stuck, however long ago it was sent. A large backlog keeps every lane thousands of
    transactions deep, and bumping the back of a moving queue only signs and sends for nothing.
    """
    senders = sorted({p["sender"] for p in stuck})
    # The nonce each sender has used at the confirmation depth: a transaction of ours below it
    # that none of our receipts shows was displaced by another one.
    depth_block = max(head - chain.confirmations + 1, 0)
    lookback = max(math.ceil(chain.stuck_after_seconds / chain.block_time_seconds), 1)
    # The count now at "latest": a node behind the one that gave `head` may not have that block.
    heights = (hex(depth_block), hex(max(head - lookback, 0)), "latest")
    counts = iter(await rpc.batch([("eth_getTransactionCount", [s, h]) for h in heights for s in senders]))
    used_at_depth, used_before, used_now = ({s: int(next(counts), 16) for s in senders} for _ in heights)
    moving = {s for s in senders if used_now[s] > used_before[s]}
    resent = await mend_lanes(pool, rpc, stuck, attempts, used_now)
    result.rebroadcast += len(resent)
    due: list[tuple[dict[str, Any], bool]] = []
    for p in stuck:
        if p["id"] in resent:
            continue
        if p["nonce"] is not None and p["nonce"] < used_at_depth[p["sender"]]:
            if p["id"] not in asked:
                continue  # the nonce counts disagree (another node answered): no proof either way
            # Money rule 2 wants proof: the nonce used at depth, none of our attempts mined, seen
            # at two different heads (one answer of one lagging node is not proof).
            first_seen = p["nonce_used_elsewhere_at"]
            if first_seen is not None and head > first_seen:
                await supersede(pool, chain, p)
                result.superseded += 1
            elif first_seen is None:
                async with pool.connection() as conn:
                    await conn.execute(query("note_nonce_used_elsewhere"), {"id": p["id"], "head": head})
            continue
        if p["nonce_used_elsewhere_at"] is not None:
            async with pool.connection() as conn:
                await conn.execute(query("clear_nonce_used_elsewhere"), {"id": p["id"]})
        latest = attempts[p["id"]][-1]
        sent_at = latest["broadcast_at"] or latest["created_at"]
        cancel_wanted = p["cancel_requested_at"] is not None and latest["kind"] != "cancel"
        waited = (looked_at - sent_at).total_seconds() >= chain.stuck_after_seconds
        if cancel_wanted or (waited and p["sender"] not in moving):
            due.append((p, cancel_wanted))
    if not due:
        return
    # Whether the node still holds any attempt of each, asked in one round trip for all.
    held = await held_by_node(rpc, [(p["id"], a["tx_hash"]) for p, _ in due for a in attempts[p["id"]]])
    fees: Fees | None = None
    for p, cancel_wanted in due:
        latest = attempts[p["id"]][-1]
        if not cancel_wanted and p["id"] not in held:
            # Dropped from the mempool: the stored bytes are still valid; send them again,
            # unless the node refuses their fees (then they are replaced below).
            refused = await send_again(pool, rpc, latest)
            if refused is not RpcErrorKind.FEE_TOO_LOW:
                result.rebroadcast += 1
                continue
        fees = fees or await suggest_fees(rpc, chain)
        # Once a cancel was asked for, every replacement is the cancel (same nonce, 0 value).
        if await replace(pool, rpc, chain, p, latest, fees, cancel=p["cancel_requested_at"] is not None):
            result.replaced += 1


async def mend_lanes(
    pool: AsyncConnectionPool,
    rpc: RpcClient,
    unmined: list[dict[str, Any]],
    attempts: dict[uuid.UUID, list[dict[str, Any]]],
    used_now: dict[str, int],
) -> set[uuid.UUID]:
    """Send again, at once, every unmined transaction of a sender whose next one in line (its
    nonce is the sender's mined count) the node no longer holds; returns those sent.

    Every later transaction of the sender waits behind that gap, and a node may have dropped them
    too: anvil evicts a sender's later transactions when its first one does not fit in the block
    it builds. Waiting for the stuck timer would leave the lane idle that long. The stored bytes
    are sent (money rule 3); those a node answers "already known" stay on the stuck timer.
    """
    firsts = {
        p["sender"]: p for p in unmined if p["nonce"] == used_now.get(p["sender"]) and p["cancel_requested_at"] is None
    }
    if not firsts:
        return set()
    held = await held_by_node(rpc, [(sender, a["tx_hash"]) for sender, p in firsts.items() for a in attempts[p["id"]]])
    gapped = firsts.keys() - held
    lanes = [
        p
        for p in sorted(unmined, key=lambda p: (p["sender"], p["nonce"]))
        if p["sender"] in gapped and p["nonce"] >= used_now[p["sender"]] and p["cancel_requested_at"] is None
    ]
    if not lanes:
        return set()
    latest = [attempts[p["id"]][-1] for p in lanes]
    try:
        outcomes = await rpc.batch(
            [("eth_sendRawTransaction", ["0x" + bytes(a["raw_tx"]).hex()]) for a in latest], return_errors=True
        )
    except RpcError as exc:
        log.warning("sending lost transactions again failed (%s); the stuck timer takes them up", exc.kind.name)
        return set()
    # Taken by the node, or its nonce already mined (rule 7: settled from receipts). Any other
    # answer is left to the stuck timer: "already known" from one node of several does not say
    # the one asked above holds it, and a stuck transaction must still be replaced in time.
    sent = [
        (p, a)
        for p, a, outcome in zip(lanes, latest, outcomes, strict=True)
        if not isinstance(outcome, RpcError) or outcome.kind is RpcErrorKind.NONCE_TOO_LOW
    ]
    if sent:
        async with pool.connection() as conn:
            await conn.execute(query("mark_attempts_broadcast"), {"ids": [a["id"] for _, a in sent]})
    log.info(
        "the node had lost the next transaction of %d senders: %d of their %d unmined sent again",
        len(gapped),
        len(sent),
        len(lanes),
    )
    return {p["id"] for p, _ in sent}


async def held_by_node(rpc: RpcClient, asks: list[tuple[Any, str]]) -> set[Any]:
    """The keys of the (key, transaction hash) pairs whose transaction the node holds (mined or
    in its pool), asked in one round trip."""
    answers = await rpc.batch([("eth_getTransactionByHash", [tx_hash]) for _, tx_hash in asks])
    return {key for (key, _), answer in zip(asks, answers, strict=True) if answer}


async def send_again(pool: AsyncConnectionPool, rpc: RpcClient, attempt: dict[str, Any]) -> RpcErrorKind | None:
    """Send stored bytes (always safe); returns the kind of error the node answered, if any."""
    refused = None
    try:
        await rpc.send_raw_transaction(bytes(attempt["raw_tx"]))
    except RpcError as exc:
        # "already known", "nonce too low" and the like are settled from receipts (rule 7).
        log.info("re-broadcast of %s answered %s (%s)", attempt["tx_hash"], exc.kind.name, exc.message[:120])
        refused = exc.kind
    async with pool.connection() as conn:
        await conn.execute(query("mark_attempt_broadcast"), {"id": attempt["id"]})
    return refused


def old_fees(attempt: dict[str, Any]) -> Fees:
    def opt(key: str) -> int | None:
        return None if attempt[key] is None else int(attempt[key])

    return Fees(
        max_fee_per_gas=opt("max_fee_per_gas"),
        max_priority_fee_per_gas=opt("max_priority_fee_per_gas"),
        gas_price=opt("gas_price"),
    )


async def replace(
    pool: AsyncConnectionPool,
    rpc: RpcClient,
    chain: Chain,
    p: dict[str, Any],
    latest: dict[str, Any],
    suggested: Fees,
    *,
    cancel: bool,
) -> bool:
    """Sign and send a replacement at the same nonce: the same payload with higher fees, or a
    0-value self-send when a cancel was asked for. Returns False when the fee cap blocks it."""
    new_fees = bump_fees(old_fees(latest), suggested, chain)
    if new_fees is None:
        alert = (
            f"stuck at nonce {p['nonce']}: a 10% fee bump would pass the fee cap of "
            f"{chain.max_fee_per_gas} wei; kept as is (raise the cap or wait for fees to fall)"
        )
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(query("set_payout_alert"), {"id": p["id"], "alert": alert})
            if await cur.fetchone() is not None:  # a new alert: say it once, and show it
                log.warning("payout %s on %s: %s", p["id"], chain.name, alert)
                await conn.execute(
                    query("note_withdrawals"), {"ids": await withdrawals_of(conn, p["id"]), "note": alert}
                )
        return False
    if cancel:
        payload, gas, kind = Payload(to=p["sender"], value=0, data=b""), 21_000, "cancel"
    else:
        payload = Payload(to=p["to_address"], value=int(p["value"]), data=bytes(p["data"]))
        gas, kind = int(p["gas_limit"]), "payout"
    async with pool.connection() as conn:
        cur = await conn.execute(query("wallet_key_ref"), {"chain": chain.name, "address": p["sender"]})
        wallet = await cur.fetchone()
    account = load_signer(wallet["key_ref"] if wallet else None, address=p["sender"])  # type: ignore[call-overload]
    tx = sign(
        account,
        tx_fields(chain_id=chain.chain_id, nonce=p["nonce"], payload=payload, gas=gas, fee_fields=new_fees.tx_fields()),
    )
    del account
    async with pool.connection() as conn, conn.transaction():
        # Stored before it is sent (money rules 2 and 3): any attempt may be the one mined.
        cur = await conn.execute(
            query("insert_attempt"),
            {
                "payout_id": p["id"],
                "tx_hash": tx.tx_hash,
                "kind": kind,
                "raw_tx": tx.raw,
                "gas_limit": gas,
                "max_fee_per_gas": new_fees.max_fee_per_gas,
                "max_priority_fee_per_gas": new_fees.max_priority_fee_per_gas,
                "gas_price": new_fees.gas_price,
            },
        )
        row = cast(dict[str, Any], await cur.fetchone())
    log.info("%s payout %s at nonce %s: %s", "cancel" if cancel else "fee bump", p["id"], p["nonce"], tx.tx_hash)
    await send_again(pool, rpc, {"id": row["id"], "raw_tx": tx.raw, "tx_hash": tx.tx_hash})
    return True


async def supersede(pool: AsyncConnectionPool, chain: Chain, p: dict[str, Any]) -> None:
    async with pool.connection() as conn, conn.transaction():
        moved = await conn.execute(query("mark_payout_superseded"), {"id": p["id"]})
        if not moved.rowcount:
            return
        ids = await withdrawals_of(conn, p["id"])
        await conn.execute(query("release_payout_items"), {"id": p["id"]})
        log.warning(
            "payout %s: nonce %s was used by another transaction; paying its withdrawals again", p["id"], p["nonce"]
        )
        await transition(
            conn,
            ids,
            S.BROADCASTED,
            S.VALIDATING,
            note=f"nonce {p['nonce']} was used by a transaction outside this system; paying again",
        )
        await enqueue(conn, "validate", chain=chain.name)


@queue.task(name="watch", queue="watch", priority=PRIORITY["watch"], retry=backoff(5))
async def watch_task(chain: str) -> int:
    started = time.monotonic()
    r = await watch_chain(context.pool(), context.rpc(chain), context.chain(chain))
    if r.reorged or r.replaced or r.rebroadcast or r.superseded:
        log.info("watch %s: %s (%.2fs)", chain, r, time.monotonic() - started)
    return r.confirmed
