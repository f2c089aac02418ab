"""The nonce allocator as a state machine, against the real database: nonces are never handed
out twice, never below what the chain has used, and a failed signing burns none."""

from __future__ import annotations

import asyncio

import psycopg
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from psycopg.rows import dict_row

from app.registry import load_registry
from db.queries import query
from jobs.sign import lock_nonce

CHAIN = load_registry().get("localhost")
# A lane of its own: the machine deletes its sender's rows, which no other test writes (the
# engine tests' hot wallets have payouts with items, which cannot be deleted alone).
SENDER = "0x5E5e5E5E5e5e5e5E5E5e5E5E5e5e5e5e5E5E5E01"


class SigningFailed(Exception):
    pass


async def allocate(url: str, chain_count: int, count: int, *, fail: bool = False) -> list[int]:
    """What the sign step does: lock, take `count` nonces, store the next one, commit."""
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        try:
            async with conn.transaction():
                start = await lock_nonce(conn, CHAIN, SENDER, chain_count)  # type: ignore[arg-type]
                taken = list(range(start, start + count))
                if fail:
                    raise SigningFailed
                await conn.execute(
                    query("set_nonce"),
                    {
                        "chain": CHAIN.name,
                        "address": SENDER,  # type: ignore[union-attr]
                        "next_nonce": start + count,
                    },
                )
        except SigningFailed:
            return []
    return taken


def test_nonce_allocator_state_machine(database_url: str) -> None:
    class NonceLane(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("DELETE FROM nonces WHERE address = %s", (SENDER,))
                conn.execute("DELETE FROM payouts WHERE sender = %s", (SENDER,))
            self.chain_count = 0  # transactions of the sender the chain has mined
            self.handed_out: list[int] = []

        @rule(count=st.integers(1, 5))
        def sign(self, count: int) -> None:
            taken = asyncio.run(allocate(database_url, self.chain_count, count))
            assert taken[0] >= self.chain_count, "a nonce the chain already used"
            assert not set(taken) & set(self.handed_out), "a nonce handed out twice"
            assert not set(taken) & {n for n in getattr(self, "forgotten", []) if n < self.chain_count}
            if self.handed_out:
                assert taken[0] == max(self.handed_out[-1] + 1, self.chain_count), "a gap in the lane"
            self.handed_out += taken
            with psycopg.connect(database_url, autocommit=True) as conn:
                for n in taken:  # what the sign step stores with each nonce: a transaction on its way
                    conn.execute(
                        "INSERT INTO payouts (chain, sender, nonce, kind, status, asset, to_address)"
                        " VALUES ('localhost', %s, %s, 'withdrawal', 'SIGNED', 'ETH', %s)",
                        (SENDER, n, SENDER),
                    )

        @rule(count=st.integers(1, 5))
        def signing_fails(self, count: int) -> None:
            before = self.next_in_db()
            assert asyncio.run(allocate(database_url, self.chain_count, count, fail=True)) == []
            assert self.next_in_db() == before, "a failed signing burned a nonce"

        @rule(count=st.integers(1, 5))
        def ours_mined(self, count: int) -> None:
            ours_pending = [n for n in self.handed_out if n >= self.chain_count]
            self.chain_count += min(count, len(ours_pending))
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE payouts SET status = 'CONFIRMED' WHERE sender = %s AND nonce < %s AND status = 'SIGNED'",
                    (SENDER, self.chain_count),
                )

        @rule()
        def chain_forgets_what_is_in_flight(self) -> None:
            # A reset chain or a restored node: our transactions on their way are gone, and the
            # watcher has given them up (here: marked superseded). The next nonce is the chain's.
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE payouts SET status = 'SUPERSEDED' WHERE sender = %s AND status = 'SIGNED'", (SENDER,)
                )
            self.forgotten = [n for n in self.handed_out if n >= self.chain_count]
            self.handed_out = [n for n in self.handed_out if n < self.chain_count]

        @rule(count=st.integers(1, 3))
        def key_used_outside(self, count: int) -> None:
            # Someone else's transactions take the next nonces (ours there are superseded).
            self.chain_count += count

        @invariant()
        def lane_never_behind_what_it_handed_out(self) -> None:
            if self.handed_out and self.handed_out[-1] >= self.chain_count:
                assert self.next_in_db() == self.handed_out[-1] + 1

        def next_in_db(self) -> int | None:
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT next_nonce FROM nonces WHERE address = %s", (SENDER,)).fetchone()
            return None if row is None else row[0]

    NonceLane.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
    NonceLane.TestCase().runTest()
