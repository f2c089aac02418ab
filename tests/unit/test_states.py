"""The withdrawal status machine: reachability, terminal statuses, and every refused edge."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from db.states import (
    ALLOWED_TRANSITIONS,
    CANCELABLE_BY_CLIENT,
    TERMINAL,
    IllegalTransition,
    WithdrawalStatus,
    check_transition,
    is_reachable,
    reachable_from,
)

S = WithdrawalStatus
ALL_PAIRS = list(itertools.product(S, S))
REFUSED_PAIRS = [pair for pair in ALL_PAIRS if pair not in ALLOWED_TRANSITIONS]


def test_there_are_ten_statuses_and_a_hundred_pairs() -> None:
    assert len(S) == 10
    assert len(ALL_PAIRS) == 100
    assert len(ALLOWED_TRANSITIONS) + len(REFUSED_PAIRS) == 100


def test_the_public_pipeline_is_a_path_of_allowed_edges() -> None:
    path = [
        S.PENDING,
        S.VALIDATING,
        S.SIGNING,
        S.SIGNED,
        S.BROADCASTING,
        S.BROADCASTED,
        S.CONFIRMING,
        S.CONFIRMED,
    ]
    for edge in itertools.pairwise(path):
        assert edge in ALLOWED_TRANSITIONS


@pytest.mark.parametrize("status", list(S))
def test_every_status_is_reachable_from_pending(status: WithdrawalStatus) -> None:
    assert is_reachable(status)


def test_every_non_terminal_status_can_end() -> None:
    # From any live status some path leads to a terminal one (no trap cycles).
    for start in S:
        assert reachable_from(start) & TERMINAL, start


def test_terminal_statuses_have_no_outgoing_edges() -> None:
    assert TERMINAL == {S.CONFIRMED, S.FAILED, S.CANCELED}
    assert [edge for edge in ALLOWED_TRANSITIONS if edge[0] in TERMINAL] == []


def test_nothing_goes_back_to_pending_and_no_edge_is_a_self_loop() -> None:
    assert [edge for edge in ALLOWED_TRANSITIONS if edge[1] == S.PENDING] == []
    assert [edge for edge in ALLOWED_TRANSITIONS if edge[0] == edge[1]] == []


def test_client_cancelable_statuses_can_move_to_canceled() -> None:
    for status in CANCELABLE_BY_CLIENT:
        assert (status, S.CANCELED) in ALLOWED_TRANSITIONS


@pytest.mark.parametrize(("from_status", "to_status"), sorted(ALLOWED_TRANSITIONS))
def test_allowed_edges_pass(from_status: WithdrawalStatus, to_status: WithdrawalStatus) -> None:
    check_transition(from_status, to_status)


@pytest.mark.parametrize(("from_status", "to_status"), REFUSED_PAIRS)
def test_every_other_pair_is_refused(from_status: WithdrawalStatus, to_status: WithdrawalStatus) -> None:
    with pytest.raises(IllegalTransition) as exc:
        check_transition(from_status, to_status)
    assert (exc.value.from_status, exc.value.to_status) == (from_status, to_status)
    assert f"{from_status} -> {to_status}" in str(exc.value)


class WithdrawalModel(RuleBasedStateMachine):
    """A withdrawal pushed around by random status changes, legal or not."""

    def __init__(self) -> None:
        super().__init__()
        self.status = S.PENDING
        self.ended_as: WithdrawalStatus | None = None
        self.history = [S.PENDING]

    @rule(to_status=st.sampled_from(list(S)))
    def move(self, to_status: WithdrawalStatus) -> None:
        try:
            check_transition(self.status, to_status)
        except IllegalTransition:
            assert (self.status, to_status) not in ALLOWED_TRANSITIONS
            return
        assert (self.status, to_status) in ALLOWED_TRANSITIONS
        self.status = to_status
        self.history.append(to_status)
        if to_status in TERMINAL and self.ended_as is None:
            self.ended_as = to_status

    @invariant()
    def a_terminal_status_is_final(self) -> None:
        if self.ended_as is not None:
            assert self.status == self.ended_as
            assert self.history[-1] == self.ended_as
            assert self.history.count(self.ended_as) == 1

    @invariant()
    def history_is_a_walk_along_allowed_edges(self) -> None:
        assert self.history[0] == S.PENDING
        for edge in itertools.pairwise(self.history):
            assert edge in ALLOWED_TRANSITIONS


TestWithdrawalModel = WithdrawalModel.TestCase
