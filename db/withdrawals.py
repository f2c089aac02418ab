"""Withdrawal rows: create (idempotently), read, page, cancel and move through the status machine.

Every function takes an open connection so that callers decide the transaction: creating a
withdrawal and deferring its first job commit together (the transactional outbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg import AsyncConnection
from pydantic_core import to_json

from db.queries import query
from db.states import CANCELABLE_BY_CLIENT, WithdrawalStatus, check_transition

Row = dict[str, Any]


class StaleStatus(Exception):
    """A compare-and-set found the withdrawal in another status than expected."""


@dataclass(frozen=True)
class NewWithdrawal:
    idempotency_key: str
    request_hash: bytes
    chain: str
    asset: str
    to_address: str
    amount: int
    reference: str | None


def insert_params(creates: Sequence[tuple[bytes, NewWithdrawal]]) -> dict[str, str]:
    """The parameters of the `insert_withdrawal` query: the creates as one JSON text."""
    payload = [
        {
            "ordinal": ordinal,
            "key_hash": key_hash.hex(),
            "idempotency_key": w.idempotency_key,
            "request_hash": w.request_hash.hex(),
            "chain": w.chain,
            "asset": w.asset,
            "to_address": w.to_address,
            "amount": str(w.amount),
            "reference": w.reference,
        }
        for ordinal, (key_hash, w) in enumerate(creates)
    ]
    # pydantic_core writes it in a third of json.dumps's time; every text here is ASCII (the API
    # refuses other idempotency keys and references), so the two write the same JSON.
    return {"creates": to_json(payload).decode()}


async def insert_withdrawals(conn: AsyncConnection, creates: Sequence[tuple[bytes, NewWithdrawal]]) -> list[Row | None]:
    """Insert each (API key hash, withdrawal) for the client behind the key, with the job that
    takes them into the pipeline, in one statement. Per create, a row: the new withdrawal, with
    `replayed` false; or, with `replayed` true, the one its client created earlier with its
    idempotency key (a retry; its body may differ, see request_hash). None, with nothing written
    for it, when the key is unknown or revoked, the recipient is our own wallet, or the
    idempotency key was taken by a create that committed while this one ran or by an earlier
    create of the same call."""
    cur = await conn.execute(query("insert_withdrawal"), insert_params(creates))
    rows: list[Row | None] = [None] * len(creates)
    taken: set[Any] = set()
    found = cast(list[Row], await cur.fetchall())  # the pool's connections make dict rows
    for row in sorted(found, key=lambda r: r["ordinal"]):
        ordinal = row.pop("ordinal")
        if rows[ordinal] is not None:
            continue
        if row["replayed"]:
            rows[ordinal] = row
        # Two creates of one client with one idempotency key and body match the same new row:
        # the first gets it; the other is told about it as a replay, as a racing duplicate is.
        elif row["id"] not in taken:
            rows[ordinal] = row
            taken.add(row["id"])
    return rows


async def get_by_idempotency_key(conn: AsyncConnection, client_id: uuid.UUID, key: str) -> Row | None:
    cur = await conn.execute(
        query("get_withdrawal_by_idempotency_key"), {"client_id": client_id, "idempotency_key": key}
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def get_withdrawal(conn: AsyncConnection, client_id: uuid.UUID, withdrawal_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(query("get_withdrawal"), {"id": withdrawal_id, "client_id": client_id})
    return await cur.fetchone()  # type: ignore[return-value]


@dataclass(frozen=True)
class PageQuery:
    client_id: uuid.UUID
    limit: int
    statuses: list[str] | None = None
    chain: str | None = None
    asset: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    after_created_at: datetime | None = None
    after_id: uuid.UUID | None = None


async def list_withdrawals(conn: AsyncConnection, page: PageQuery) -> list[Row]:
    cur = await conn.execute(query("list_withdrawals"), page.__dict__)
    return await cur.fetchall()  # type: ignore[return-value]


async def cancel_withdrawal(
    conn: AsyncConnection, client_id: uuid.UUID, withdrawal_id: uuid.UUID, note: str
) -> Row | None:
    """Cancel if nothing is signed yet; None when the withdrawal is missing or past that point."""
    cur = await conn.execute(
        query("cancel_withdrawal"),
        {
            "id": withdrawal_id,
            "client_id": client_id,
            "note": note,
            "cancelable": [s.value for s in CANCELABLE_BY_CLIENT],
        },
    )
    return await cur.fetchone()  # type: ignore[return-value]


# Signed but not mined: a 0-value self-send at the same nonce may still take its place.
CANCELABLE_ON_CHAIN = frozenset({WithdrawalStatus.SIGNED, WithdrawalStatus.BROADCASTING, WithdrawalStatus.BROADCASTED})
CANCEL_REQUESTED_NOTE = (
    "cancel requested: a 0-value transaction at the same nonce competes with the payment; "
    "the withdrawal ends CANCELED if the cancel is mined, CONFIRMED if the payment is"
)


async def request_onchain_cancel(conn: AsyncConnection, withdrawal_id: uuid.UUID) -> str:
    """Ask the engine to cancel a signed withdrawal on chain: "requested", "in_batch" (its
    transaction pays others too) or "too_late" (already mined)."""
    async with conn.transaction():
        cur = await conn.execute(query("payout_of_withdrawal"), {"id": withdrawal_id})
        payout = await cur.fetchone()
        if payout is None:
            return "too_late"
        if payout["withdrawals"] > 1:  # type: ignore[call-overload]
            return "in_batch"
        cur = await conn.execute(query("request_payout_cancel"), {"id": payout["id"]})  # type: ignore[call-overload]
        if await cur.fetchone() is None:
            return "too_late"
        await conn.execute(query("note_withdrawals"), {"ids": [withdrawal_id], "note": CANCEL_REQUESTED_NOTE})
    return "requested"


async def transition(
    conn: AsyncConnection,
    ids: Sequence[uuid.UUID],
    from_status: WithdrawalStatus,
    to_status: WithdrawalStatus,
    *,
    note: str | None = None,
    failure_code: str | None = None,
    failure_reason: str | None = None,
) -> list[uuid.UUID]:
    """Move withdrawals that are in `from_status` to `to_status` (money rule 4).

    Raises IllegalTransition for an edge the status machine does not have. Returns the ids that
    moved; a withdrawal that was no longer in `from_status` is left alone and not returned.
    """
    check_transition(from_status, to_status)
    cur = await conn.execute(
        query("transition_withdrawals"),
        {
            "ids": list(ids),
            "from_status": from_status.value,
            "to_status": to_status.value,
            "note": note,
            "failure_code": failure_code,
            "failure_reason": failure_reason,
        },
    )
    return [row["id"] for row in await cur.fetchall()]  # type: ignore[call-overload]


async def transition_of_payouts(
    conn: AsyncConnection,
    payout_ids: Sequence[uuid.UUID],
    from_status: WithdrawalStatus,
    to_status: WithdrawalStatus,
    *,
    note: str | None = None,
    notes: Sequence[str] | None = None,
) -> list[uuid.UUID]:
    """transition() for the live withdrawals of some transactions, in one statement, for moves that
    are not failures: with `note` for all, or `notes[i]` for those of `payout_ids[i]`. Returns the
    withdrawals that moved."""
    check_transition(from_status, to_status)
    if notes is None:
        notes = [note] * len(payout_ids)  # type: ignore[list-item]
    if len(notes) != len(payout_ids):
        raise ValueError("one note per transaction")
    cur = await conn.execute(
        query("transition_withdrawals_of_payouts"),
        {
            "payout_ids": list(payout_ids),
            "notes": list(notes),
            "from_status": from_status.value,
            "to_status": to_status.value,
        },
    )
    return [row["id"] for row in await cur.fetchall()]  # type: ignore[call-overload]


async def transition_one(
    conn: AsyncConnection,
    withdrawal_id: uuid.UUID,
    from_status: WithdrawalStatus,
    to_status: WithdrawalStatus,
    **kwargs: str | None,
) -> None:
    """Like transition(), for one withdrawal that must be in `from_status` (else StaleStatus)."""
    moved = await transition(conn, [withdrawal_id], from_status, to_status, **kwargs)  # type: ignore[arg-type]
    if not moved:
        raise StaleStatus(f"withdrawal {withdrawal_id} is not {from_status}")


async def events(conn: AsyncConnection, withdrawal_id: uuid.UUID) -> list[Row]:
    cur = await conn.execute(query("withdrawal_events"), {"id": withdrawal_id})
    return await cur.fetchall()  # type: ignore[return-value]


def is_transition_violation(exc: BaseException) -> bool:
    """Whether a database error is the status trigger refusing an edge."""
    return isinstance(exc, psycopg.errors.CheckViolation) and (exc.diag.constraint_name == "withdrawal_transition")
