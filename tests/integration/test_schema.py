"""The migrated schema: no drift from db/models.py, and the money rules Postgres itself enforces."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from db.engine import sqlalchemy_url
from db.models import metadata
from db.queries import query
from db.states import ALLOWED_TRANSITIONS, WithdrawalStatus
from db.withdrawals import is_transition_violation
from tests.conftest import make_client

Conn = psycopg.Connection[dict[str, Any]]  # the `db` fixture's rows are dicts
S = WithdrawalStatus
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def insert_withdrawal(db: Conn, client_id: uuid.UUID, amount: int = 1_000_000) -> uuid.UUID:
    row = db.execute(
        "INSERT INTO withdrawals"
        " (client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
        " VALUES (%s, %s, %s, 'localhost', 'USDT', %s, %s) RETURNING id",
        (client_id, uuid.uuid4().hex, b"\x00" * 32, ADDRESS, amount),
    ).fetchone()
    assert row is not None
    return row["id"]


def events(db: Conn, withdrawal_id: uuid.UUID) -> list[tuple[str | None, str, str | None]]:
    rows = db.execute(
        "SELECT from_status, to_status, note FROM withdrawal_events WHERE withdrawal_id = %s ORDER BY id",
        (withdrawal_id,),
    ).fetchall()
    return [(r["from_status"], r["to_status"], r["note"]) for r in rows]


def status_of(db: Conn, withdrawal_id: uuid.UUID) -> str:
    row = db.execute("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)).fetchone()
    assert row is not None
    return row["status"]


def test_models_match_the_migrated_database(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_object": include_object,
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_transition_table_equals_the_status_machine(db: Conn) -> None:
    rows = db.execute("SELECT from_status, to_status FROM withdrawal_transitions").fetchall()
    in_database = {(S(r["from_status"]), S(r["to_status"])) for r in rows}
    assert len(rows) == len(in_database)
    assert in_database == ALLOWED_TRANSITIONS


def test_status_enum_matches_the_python_enum(db: Conn) -> None:
    rows = db.execute("SELECT unnest(enum_range(NULL::withdrawal_status))::text AS s").fetchall()
    assert [r["s"] for r in rows] == [s.value for s in S]


def test_insert_writes_a_pending_event(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id)
    assert status_of(db, withdrawal_id) == "PENDING"
    assert events(db, withdrawal_id) == [(None, "PENDING", None)]


def test_a_withdrawal_cannot_start_in_another_status(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        db.execute(
            "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset,"
            " to_address, amount, status)"
            " VALUES (%s, 'k', '\\x00', 'localhost', 'USDT', %s, 1, 'SIGNED')",
            (client_id, ADDRESS),
        )
    assert is_transition_violation(exc.value)
    assert db.execute("SELECT count(*) AS n FROM withdrawals").fetchone() == {"n": 0}


def test_trigger_refuses_an_illegal_update(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id)
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        db.execute("UPDATE withdrawals SET status = 'CONFIRMED' WHERE id = %s", (withdrawal_id,))
    assert exc.value.diag.constraint_name == "withdrawal_transition"
    assert is_transition_violation(exc.value)
    assert "PENDING -> CONFIRMED" in str(exc.value)
    assert status_of(db, withdrawal_id) == "PENDING"
    assert events(db, withdrawal_id) == [(None, "PENDING", None)]


# The trigger runs statements of up to 32 rows on cached plans and larger ones planned for their
# own row counts (migration 0007): both ways check every row and write every event.
@pytest.mark.parametrize("count", [3, 40])
def test_one_illegal_row_refuses_its_whole_statement(db: Conn, count: int) -> None:
    client_id, _ = make_client(db, "acme")
    ids = [insert_withdrawal(db, client_id) for _ in range(count)]
    db.execute("UPDATE withdrawals SET status = 'VALIDATING', status_note = 'in' WHERE id = %s", (ids[0],))
    # VALIDATING -> SIGNING is allowed for the first row, PENDING -> SIGNING is not for the others:
    # nothing of the statement is kept.
    with pytest.raises(psycopg.errors.CheckViolation, match="PENDING -> SIGNING"):
        db.execute("UPDATE withdrawals SET status = 'SIGNING' WHERE id = ANY(%s)", (ids,))
    assert [status_of(db, i) for i in ids] == ["VALIDATING"] + ["PENDING"] * (count - 1)
    moved = db.execute(
        "UPDATE withdrawals SET status = 'VALIDATING', status_note = 'batch' WHERE id = ANY(%s) AND status = 'PENDING'"
        " RETURNING id",
        (ids,),
    ).fetchall()
    assert len(moved) == count - 1
    assert events(db, ids[0]) == [(None, "PENDING", None), ("PENDING", "VALIDATING", "in")]
    for i in ids[1:]:
        assert events(db, i) == [(None, "PENDING", None), ("PENDING", "VALIDATING", "batch")]
    # A statement that changes no status writes no event.
    db.execute("UPDATE withdrawals SET status_note = 'note only' WHERE id = ANY(%s)", (ids,))
    assert sum(len(events(db, i)) for i in ids) == 2 * count


def test_other_check_violations_are_not_transition_violations(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        insert_withdrawal(db, client_id, amount=0)
    assert exc.value.diag.constraint_name == "ck_withdrawals_amount_positive"
    assert not is_transition_violation(exc.value)


def test_every_illegal_edge_is_refused_by_the_database(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id)
    refused = 0
    for from_status in S:
        db.execute("ALTER TABLE withdrawals DISABLE TRIGGER USER")
        try:
            db.execute(
                "UPDATE withdrawals SET status = %s WHERE id = %s",
                (from_status.value, withdrawal_id),
            )
        finally:
            db.execute("ALTER TABLE withdrawals ENABLE TRIGGER USER")
        for to_status in S:
            if to_status == from_status or (from_status, to_status) in ALLOWED_TRANSITIONS:
                continue
            with pytest.raises(psycopg.errors.CheckViolation) as exc:
                db.execute(
                    "UPDATE withdrawals SET status = %s WHERE id = %s",
                    (to_status.value, withdrawal_id),
                )
            assert is_transition_violation(exc.value), (from_status, to_status)
            refused += 1
    assert refused == 100 - 10 - len(ALLOWED_TRANSITIONS)


def test_a_legal_update_writes_an_event_row(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id)
    before = db.execute("SELECT updated_at FROM withdrawals WHERE id = %s", (withdrawal_id,)).fetchone()
    db.execute(
        "UPDATE withdrawals SET status = 'VALIDATING', status_note = 'taken' WHERE id = %s",
        (withdrawal_id,),
    )
    db.execute(
        "UPDATE withdrawals SET status = 'SIGNING', status_note = NULL WHERE id = %s",
        (withdrawal_id,),
    )
    assert events(db, withdrawal_id) == [
        (None, "PENDING", None),
        ("PENDING", "VALIDATING", "taken"),
        ("VALIDATING", "SIGNING", None),
    ]
    after = db.execute("SELECT updated_at FROM withdrawals WHERE id = %s", (withdrawal_id,)).fetchone()
    assert before is not None and after is not None and after["updated_at"] > before["updated_at"]


def test_an_update_that_keeps_the_status_writes_no_event(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id)
    db.execute(
        "UPDATE withdrawals SET status = 'PENDING', status_note = 'x' WHERE id = %s",
        (withdrawal_id,),
    )
    assert events(db, withdrawal_id) == [(None, "PENDING", None)]


def test_the_trigger_plans_each_statement_for_its_own_row_count(db: Conn) -> None:
    """A connection's first status change moves one withdrawal; a later statement that moves
    hundreds must not reuse a plan made for one row, which compares every old row with every new
    one (seen in the end-to-end benchmark: 360,000 pairs for 600 rows). The plans of the trigger's
    queries are read with auto_explain, as an operator would."""
    client_id, _ = make_client(db, "acme")
    count = 300
    db.execute(
        "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
        " SELECT %s, 'k' || g, '\\x00', 'localhost', 'USDT', %s, 1 FROM generate_series(1, %s) g",
        (client_id, ADDRESS, count),
    )
    first = db.execute("SELECT id FROM withdrawals ORDER BY idempotency_key LIMIT 1").fetchone()
    assert first is not None
    db.execute("UPDATE withdrawals SET status = 'VALIDATING' WHERE id = %s", (first["id"],))
    superuser = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not (superuser and superuser["rolsuper"]):
        pytest.skip("reading plans with auto_explain needs a superuser connection")
    try:
        db.execute("LOAD 'auto_explain'")
    except psycopg.errors.UndefinedFile:
        pytest.skip("this Postgres has no auto_explain module")
    plans: list[str] = []
    db.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    for setting in (
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_analyze = on",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        "SET client_min_messages = notice",
    ):
        db.execute(setting)
    moved = db.execute("UPDATE withdrawals SET status = 'VALIDATING' WHERE status = 'PENDING' RETURNING id").fetchall()
    assert len(moved) == count - 1
    on_transition_rows = [p for p in plans if "new_rows" in p and "old_rows" in p]
    assert len(on_transition_rows) == 2  # the check and the event insert
    for plan in on_transition_rows:
        removed = [int(n) for n in re.findall(r"Rows Removed by Join Filter: (\d+)", plan)]
        assert all(n < count for n in removed), plan
    assert db.execute("SELECT count(*) AS n FROM withdrawal_events WHERE to_status = 'VALIDATING'").fetchone() == {
        "n": count
    }


@pytest.mark.parametrize("amount", [0, -1])
def test_check_refuses_a_non_positive_amount(db: Conn, amount: int) -> None:
    client_id, _ = make_client(db, "acme")
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        insert_withdrawal(db, client_id, amount=amount)
    assert exc.value.diag.constraint_name == "ck_withdrawals_amount_positive"


def test_amount_holds_uint256_and_no_more(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id, amount=2**256 - 1)
    row = db.execute("SELECT amount FROM withdrawals WHERE id = %s", (withdrawal_id,)).fetchone()
    assert row is not None and int(row["amount"]) == 2**256 - 1
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        insert_withdrawal(db, client_id, amount=10**78)


def new_payout(db: Conn) -> uuid.UUID:
    row = db.execute(
        "INSERT INTO payouts (chain, sender, kind, asset, to_address)"
        " VALUES ('localhost', %s, 'withdrawal', 'USDT', %s) RETURNING id",
        (ADDRESS, ADDRESS),
    ).fetchone()
    assert row is not None
    return row["id"]


def test_a_withdrawal_has_at_most_one_live_payout_item(db: Conn) -> None:
    client_id, _ = make_client(db, "acme")
    withdrawal_id = insert_withdrawal(db, client_id)
    first, second, third = new_payout(db), new_payout(db), new_payout(db)
    add_item = "INSERT INTO payout_items (payout_id, withdrawal_id, amount, live) VALUES (%s, %s, 1000000, %s)"
    db.execute(add_item, (first, withdrawal_id, True))
    with pytest.raises(psycopg.errors.UniqueViolation) as exc:
        db.execute(add_item, (second, withdrawal_id, True))
    assert exc.value.diag.constraint_name == "uq_payout_items_live_withdrawal"
    # Once the first transaction is provably dead, the withdrawal may move to a new one.
    db.execute("UPDATE payout_items SET live = false WHERE payout_id = %s", (first,))
    db.execute(add_item, (second, withdrawal_id, True))
    db.execute(add_item, (third, withdrawal_id, False))
    live = db.execute(
        "SELECT payout_id FROM payout_items WHERE withdrawal_id = %s AND live", (withdrawal_id,)
    ).fetchall()
    assert [r["payout_id"] for r in live] == [second]


def test_one_live_transaction_per_chain_sender_nonce(db: Conn) -> None:
    first, second = new_payout(db), new_payout(db)
    db.execute("UPDATE payouts SET nonce = 7 WHERE id = %s", (first,))
    with pytest.raises(psycopg.errors.UniqueViolation) as exc:
        db.execute("UPDATE payouts SET nonce = 7 WHERE id = %s", (second,))
    assert exc.value.diag.constraint_name == "uq_payouts_live_nonce"
    db.execute("UPDATE payouts SET status = 'SUPERSEDED' WHERE id = %s", (first,))
    db.execute("UPDATE payouts SET nonce = 7 WHERE id = %s", (second,))


def scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    return [plan] + [node for child in plan.get("Plans", []) for node in scans(child)]


def test_status_changes_find_their_rows_by_id_whatever_the_statistics(db: Conn) -> None:
    """The two compare-and-set statements read the withdrawals they move and no others, even when
    the table's statistics were taken while no withdrawal was in their from-status (autovacuum
    analyzes rarely, and in-flight statuses are a sliver of a table of settled withdrawals).
    When an index held `status`, a custom plan found the rows through it: every withdrawal in that
    status, 400 here, thousands in a busy system, to move five. A status name that is not one is
    still an error."""
    client_id, _ = make_client(db, "acme")
    with db.transaction(force_rollback=True):  # the statistics too: ANALYZE is transactional
        insert = (
            "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
            " SELECT %s, %s || g, '\\x00', 'localhost', 'USDT', %s, 1000000 FROM generate_series(1, %s) g"
        )
        db.execute(insert, (client_id, "settled-", ADDRESS, 5_000))  # enough that by id beats reading the table
        db.execute("UPDATE withdrawals SET status = 'CANCELED'")
        db.execute("ANALYZE withdrawals")
        db.execute(insert, (client_id, "busy-", ADDRESS, 400))
        for status in ("VALIDATING", "SIGNING"):
            db.execute("UPDATE withdrawals SET status = %s WHERE status <> 'CANCELED'", (status,))
        busy = [r["id"] for r in db.execute("SELECT id FROM withdrawals WHERE status = 'SIGNING' ORDER BY id")]
        payout = new_payout(db)
        db.execute(
            "INSERT INTO payout_items (payout_id, withdrawal_id, amount) SELECT %s, unnest(%s::uuid[]), 1000000",
            (payout, busy[:5]),
        )
        moves = [
            ("transition_withdrawals", {"ids": busy[5:10], "note": None, "failure_code": None, "failure_reason": None}),
            ("transition_withdrawals_of_payouts", {"payout_ids": [payout], "notes": ["signed"]}),
        ]
        for name, params in moves:
            row = db.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + query(name),
                params | {"from_status": "SIGNING", "to_status": "SIGNED"},
            ).fetchone()
            assert row is not None
            plan = row["QUERY PLAN"][0]["Plan"]
            nodes = scans(plan)
            read = [n for n in nodes if n.get("Relation Name") == "withdrawals" and n["Node Type"] != "ModifyTable"]
            assert read, name
            for node in read:
                # Both are averages per loop in EXPLAIN's output.
                read_rows = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
                assert read_rows <= 5, name
            assert plan["Actual Rows"] == 5, name
        with pytest.raises(psycopg.errors.InvalidTextRepresentation), db.transaction():
            db.execute(query("transition_withdrawals"), moves[0][1] | {"from_status": "SIGNNG", "to_status": "SIGNED"})


def move(db: Conn, ids: list[uuid.UUID], from_status: S, to_status: S) -> list[dict[str, Any]]:
    """transition_withdrawals, as the pipeline runs it for moves that are not failures."""
    params = {"ids": ids, "from_status": from_status, "to_status": to_status}
    return db.execute(
        query("transition_withdrawals"), params | {"note": None, "failure_code": None, "failure_reason": None}
    ).fetchall()


def hot_and_all_updates(db: Conn) -> tuple[int, int]:
    """(HOT updates, updates) of withdrawals counted by this backend and not yet reported (from
    the current transaction and maybe recent ones: compare two readings)."""
    row = db.execute(
        "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'withdrawals'"
    ).fetchone()
    assert row is not None
    return row["n_tup_hot_upd"], row["n_tup_upd"]


def test_only_waiting_statuses_are_indexed_so_later_changes_are_hot(db: Conn) -> None:
    """queue_status is the status while a withdrawal waits (PENDING, VALIDATING) and NULL after.
    It is the only status an index holds, so from SIGNING on a status change writes no index
    entry: the row's new version is a heap-only (HOT) update on its own page."""
    client_id, _ = make_client(db, "acme")
    ids = [insert_withdrawal(db, client_id) for _ in range(5)]
    path = [S.VALIDATING, S.SIGNING, S.SIGNED, S.BROADCASTING, S.BROADCASTED, S.CONFIRMING, S.CONFIRMED]
    status = S.PENDING
    for to_status in path:
        with db.transaction():
            hot_before, updates_before = hot_and_all_updates(db)
            moved = move(db, ids, status, to_status)
            assert len(moved) == 5
            hot_after, updates_after = hot_and_all_updates(db)
        hot, updates = hot_after - hot_before, updates_after - updates_before
        assert updates == 5
        waiting = to_status in (S.PENDING, S.VALIDATING)
        # Leaving the queue changes the indexed value; every later change is HOT.
        assert hot == (0 if waiting or to_status == S.SIGNING else 5), to_status
        rows = db.execute("SELECT status, queue_status FROM withdrawals WHERE id = ANY(%s)", (ids,)).fetchall()
        assert {(r["status"], r["queue_status"]) for r in rows} == {(to_status, to_status if waiting else None)}
        status = to_status


def test_work_is_found_through_the_queue_index(db: Conn) -> None:
    """The queries that find waiting withdrawals read ix_withdrawals_queue, not the table, with a
    history of settled withdrawals around them."""
    client_id, _ = make_client(db, "acme")
    with db.transaction(force_rollback=True):
        db.execute(
            "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
            " SELECT %s, 'settled-' || g, '\\x00', 'localhost', 'USDT', %s, 1000000 FROM generate_series(1, 5000) g",
            (client_id, ADDRESS),
        )
        db.execute("UPDATE withdrawals SET status = 'CANCELED'")
        ids = [insert_withdrawal(db, client_id) for _ in range(3)]
        move(db, ids[:1], S.PENDING, S.VALIDATING)
        db.execute("ANALYZE withdrawals")
        for name, found in (
            ("claim_pending_withdrawals", 2),
            ("validating_withdrawals", 1),
            ("pending_exists", 1),
            ("chain_work", 3),
        ):
            row = db.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + query(name),
                {"chain": "localhost", "limit": 100, "stale": "1 minute"},
            ).fetchone()
            assert row is not None
            nodes = scans(row["QUERY PLAN"][0]["Plan"])
            read = [n for n in nodes if n.get("Relation Name") == "withdrawals"]
            assert read and all(n.get("Index Name") == "ix_withdrawals_queue" for n in read), name
            assert sum(n["Actual Rows"] for n in read) <= found, name


def test_withdrawal_ids_are_version_7_in_creation_order(db: Conn) -> None:
    """New withdrawals' ids sort by creation time (migration 0009), so a create writes at the
    right edge of the indexes keyed by them."""
    client_id = make_client(db, "acme")[0]
    ids = []
    for _ in range(5):
        ids.append(insert_withdrawal(db, client_id))
        db.execute("SELECT pg_sleep(0.002)")  # the time part counts milliseconds
    assert [i.version for i in ids] == [7] * 5
    assert all(i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(set(ids))
    row = db.execute("SELECT created_at FROM withdrawals WHERE id = %s", (ids[0],)).fetchone()
    assert row is not None
    assert abs((ids[0].int >> 80) / 1000 - row["created_at"].timestamp()) < 1  # the first 48 bits: ms
