"""Migrations run both ways: every downgrade leaves a schema that still enforces the status machine
and records its events, and upgrading again gives back the head schema's functions, triggers and
tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command

from app.cli import alembic_config
from tests.conftest import ADMIN_URL, _with_db

# Down to the first revision, one step at a time (0001 itself is not downgraded: restore a backup).
DOWN = ["0007", "0006", "0005", "0004", "0003", "0002", "0001"]
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture
def scratch_url() -> Iterator[str]:
    name = f"payouts_test_migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def definitions(url: str) -> dict[str, str]:
    """The public schema's functions, (non-internal) triggers, tables' columns and storage settings,
    and indexes, by name."""
    with psycopg.connect(url) as conn:
        functions = conn.execute(
            "SELECT 'function ' || p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.prokind = 'f'"
        ).fetchall()
        triggers = conn.execute(
            "SELECT 'trigger ' || tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
        ).fetchall()
        tables = conn.execute(
            "SELECT 'table ' || table_name, string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)"
            " FROM information_schema.columns WHERE table_schema = 'public' GROUP BY table_name"
        ).fetchall()
        settings = conn.execute(
            "SELECT 'storage ' || relname, array_to_string(reloptions, ', ') FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL"
        ).fetchall()
        indexes = conn.execute(
            "SELECT 'index ' || indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall()
    return dict(functions + triggers + tables + settings + indexes)


def status_machine_holds(url: str, client_id: uuid.UUID) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
            " VALUES (%s, %s, '\\x00', 'localhost', 'USDT', %s, 1000000) RETURNING id",
            (client_id, uuid.uuid4().hex, ADDRESS),
        ).fetchone()
        assert row is not None
        withdrawal_id = row[0]
        conn.execute("UPDATE withdrawals SET status = 'VALIDATING' WHERE id = %s", (withdrawal_id,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE withdrawals SET status = 'CONFIRMED' WHERE id = %s", (withdrawal_id,))
        events = conn.execute(
            "SELECT from_status::text, to_status::text FROM withdrawal_events WHERE withdrawal_id = %s ORDER BY id",
            (withdrawal_id,),
        ).fetchall()
        assert events == [(None, "PENDING"), ("PENDING", "VALIDATING")]


def test_every_downgrade_keeps_the_status_machine_and_upgrading_again_restores_head(scratch_url: str) -> None:
    config = alembic_config(scratch_url)
    # The schema at each revision on the way up, to compare with the way down.
    upgraded: dict[str, dict[str, str]] = {}
    for revision in reversed(DOWN):
        command.upgrade(config, revision)
        upgraded[revision] = definitions(scratch_url)
    command.upgrade(config, "head")
    head = definitions(scratch_url)
    assert "function withdrawals_check_and_record" in head
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO api_clients (name) VALUES ('acme') RETURNING id").fetchone()
    assert row is not None
    client_id = row[0]
    status_machine_holds(scratch_url, client_id)
    seen = [head]
    for revision in DOWN:
        command.downgrade(config, revision)
        status_machine_holds(scratch_url, client_id)
        seen.append(definitions(scratch_url))
        assert seen[-1] == upgraded[revision], revision
    # Each step changed something (a downgrade that does nothing would pass the checks above).
    assert all(a != b for a, b in zip(seen, seen[1:], strict=False))
    command.upgrade(config, "head")
    assert definitions(scratch_url) == head
    status_machine_holds(scratch_url, client_id)
