"""The withdrawal status machine: one enum, every allowed transition in one table.

The same table is loaded into Postgres (`withdrawal_transitions`) where a trigger refuses any other
status change, so a bug in any client of the database fails loudly instead of corrupting history.
`tests/integration/test_schema.py` checks that the two copies agree.
"""

from __future__ import annotations

import enum


class WithdrawalStatus(enum.StrEnum):
    PENDING = "PENDING"
    VALIDATING = "VALIDATING"
    SIGNING = "SIGNING"
    SIGNED = "SIGNED"
    BROADCASTING = "BROADCASTING"
    BROADCASTED = "BROADCASTED"
    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


S = WithdrawalStatus

# Why each edge exists:
# - PENDING/VALIDATING -> CANCELED: nothing is signed yet, so a cancel costs nothing on chain.
# - SIGNING -> VALIDATING: signing failed before a nonce was used; the withdrawal waits again.
# - SIGNED -> BROADCASTING -> BROADCASTED: bytes are stored before any broadcast (money rule 3);
#   BROADCASTING -> SIGNED lets a broadcast that never reached a node be retried with the same bytes.
# - BROADCASTED -> CONFIRMING -> CONFIRMED: included, then at the chain's confirmation depth.
# - CONFIRMING -> BROADCASTED: a reorg removed the block (money rule 6).
# - BROADCASTED/CONFIRMING -> CANCELED: a 0-value self-send at the same nonce was what got mined.
# - BROADCASTED/CONFIRMING -> VALIDATING: the transaction reverted or its nonce was provably used by
#   a transaction that does not pay this withdrawal, so it may be paid again (money rule 2).
# - -> FAILED: a permanent reason (revert, rejected by policy) recorded on the row.
ALLOWED_TRANSITIONS: frozenset[tuple[WithdrawalStatus, WithdrawalStatus]] = frozenset(
    {
        (S.PENDING, S.VALIDATING),
        (S.PENDING, S.FAILED),
        (S.PENDING, S.CANCELED),
        (S.VALIDATING, S.SIGNING),
        (S.VALIDATING, S.FAILED),
        (S.VALIDATING, S.CANCELED),
        (S.SIGNING, S.SIGNED),
        (S.SIGNING, S.VALIDATING),
        (S.SIGNING, S.FAILED),
        (S.SIGNED, S.BROADCASTING),
        (S.BROADCASTING, S.BROADCASTED),
        (S.BROADCASTING, S.SIGNED),
        (S.BROADCASTED, S.CONFIRMING),
        (S.BROADCASTED, S.CANCELED),
        (S.BROADCASTED, S.VALIDATING),
        (S.BROADCASTED, S.FAILED),
        (S.CONFIRMING, S.CONFIRMED),
        (S.CONFIRMING, S.BROADCASTED),
        (S.CONFIRMING, S.CANCELED),
        (S.CONFIRMING, S.VALIDATING),
        (S.CONFIRMING, S.FAILED),
    }
)

TERMINAL: frozenset[WithdrawalStatus] = frozenset({S.CONFIRMED, S.FAILED, S.CANCELED})

# Before this point nothing has been signed for the withdrawal, so it can be dropped for free.
CANCELABLE_BY_CLIENT: frozenset[WithdrawalStatus] = frozenset({S.PENDING, S.VALIDATING})


class IllegalTransition(Exception):
    """A status change that the status machine does not allow."""

    def __init__(self, from_status: WithdrawalStatus, to_status: WithdrawalStatus) -> None:
        super().__init__(f"illegal withdrawal transition {from_status} -> {to_status}")
        self.from_status = from_status
        self.to_status = to_status


def check_transition(from_status: WithdrawalStatus, to_status: WithdrawalStatus) -> None:
    if (from_status, to_status) not in ALLOWED_TRANSITIONS:
        raise IllegalTransition(from_status, to_status)


def reachable_from(start: WithdrawalStatus) -> set[WithdrawalStatus]:
    """Every status some path of allowed transitions leads to from `start` (itself included)."""
    seen = {start}
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for a, b in ALLOWED_TRANSITIONS:
            if a == current and b not in seen:
                seen.add(b)
                frontier.append(b)
    return seen


def is_reachable(status: WithdrawalStatus) -> bool:
    """Whether `status` can be reached from PENDING: every status must be."""
    return status in reachable_from(S.PENDING)
