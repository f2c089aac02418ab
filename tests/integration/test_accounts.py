"""The account manager's tables and commands: rules set by the operator, one top-up on its way per
wallet and asset (enforced by Postgres), top-ups settled with their transaction, clear errors."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row

from app.settings import Settings, SettingsError
from db.queries import query
from jobs.sign import fail_planned
from tests.integration.test_cli_jobs import payouts

WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
MAIN = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def new_topup_payout(db: psycopg.Connection) -> object:
    row = db.execute(
        "INSERT INTO payouts (chain, sender, kind, asset, to_address, value) "
        "VALUES ('localhost', %s, 'topup', 'ETH', %s, 5) RETURNING id",
        (MAIN, WALLET),
    ).fetchone()
    assert row is not None
    return row["id"]


def add_topup(db: psycopg.Connection, payout_id: object) -> None:
    db.execute(
        "INSERT INTO topups (payout_id, chain, asset, wallet, amount, balance_before) "
        "VALUES (%s, 'localhost', 'ETH', %s, 5, 1)",
        (payout_id, WALLET),
    )


def test_postgres_refuses_a_second_top_up_on_its_way_to_the_same_wallet(db: psycopg.Connection) -> None:
    first = new_topup_payout(db)
    add_topup(db, first)
    with pytest.raises(psycopg.errors.UniqueViolation, match="uq_topups_in_flight"):
        add_topup(db, new_topup_payout(db))


@pytest.mark.parametrize(
    ("payout_status", "topup_status"),
    [("CONFIRMED", "CONFIRMED"), ("REVERTED", "FAILED"), ("SUPERSEDED", "FAILED")],
)
def test_a_top_up_settles_with_its_transaction(db: psycopg.Connection, payout_status: str, topup_status: str) -> None:
    payout_id = new_topup_payout(db)
    add_topup(db, payout_id)
    db.execute("UPDATE payouts SET status = 'INCLUDED' WHERE id = %s", (payout_id,))
    assert db.execute("SELECT status FROM topups").fetchone()["status"] == "IN_FLIGHT"
    db.execute("UPDATE payouts SET status = %s WHERE id = %s", (payout_status, payout_id))
    row = db.execute("SELECT status, note FROM topups").fetchone()
    assert row["status"] == topup_status and row["note"]
    if topup_status == "FAILED":  # the wallet may be topped up again
        add_topup(db, new_topup_payout(db))


def test_rules_are_refused_unless_the_target_is_above_the_threshold(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_topup_rules_target_above_threshold"):
        db.execute(
            "INSERT INTO topup_rules (chain, asset, threshold, target, daily_limit) "
            "VALUES ('localhost', 'ETH', 5, 5, 1)"
        )


def test_the_operator_sets_lists_shows_and_deletes_rules(database_url: str, db: psycopg.Connection) -> None:
    done = payouts(
        database_url,
        "accounts", "rule", "set", "localhost", "USDT",
        "--threshold", "100", "--target", "1000.5", "--daily-limit", "5000", "--alert-below", "20000",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "set a ETH rule too" in done.stderr  # token wallets need coin for gas
    row = db.execute("SELECT * FROM topup_rules").fetchone()
    assert (row["threshold"], row["target"], row["daily_limit"], row["main_alert_below"]) == (
        100 * 10**6,
        1_000_500_000,
        5000 * 10**6,
        20_000 * 10**6,
    )
    listed = payouts(database_url, "accounts", "rule", "list")
    assert "localhost    USDT   threshold 100  target 1000.5  daily limit 5000  main alert under 20000" in listed.stdout

    db.execute(
        "INSERT INTO hot_wallets (chain, address, role) VALUES ('localhost', %s, 'hot'), ('localhost', %s, 'main')",
        (WALLET, MAIN),
    )
    db.execute(
        "INSERT INTO wallet_balances (chain, address, asset, balance) VALUES "
        "('localhost', %s, 'USDT', 99000000), ('localhost', %s, 'USDT', 30000000000)",
        (WALLET, MAIN),
    )
    shown = payouts(database_url, "accounts", "show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(WALLET in line and " 99 " in line and "LOW" in line for line in lines), shown.stdout
    assert any(MAIN in line and "30000" in line and " ok " in line for line in lines), shown.stdout
    assert "no top-ups yet" in shown.stdout

    assert payouts(database_url, "accounts", "rule", "delete", "localhost", "USDT").returncode == 0
    assert db.execute("SELECT count(*) AS n FROM topup_rules").fetchone()["n"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere", "ETH", "--threshold", "1", "--target", "2", "--daily-limit", "3"], "unknown chain 'nowhere'"),
        (["localhost", "DOGE", "--threshold", "1", "--target", "2", "--daily-limit", "3"], "has no asset 'DOGE'"),
        (["localhost", "ETH", "--threshold", "2", "--target", "2", "--daily-limit", "3"], "--target must be above"),
        (["localhost", "ETH", "--threshold", "-1", "--target", "2", "--daily-limit", "3"], "--threshold -1"),
        (["localhost", "USDT", "--threshold", "1", "--target", "2.0000001", "--daily-limit", "3"], "decimal places"),
    ],
)
def test_bad_rules_are_refused_with_a_reason(
    database_url: str, db: psycopg.Connection, args: list[str], message: str
) -> None:
    done = payouts(database_url, "accounts", "rule", "set", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert db.execute("SELECT count(*) AS n FROM topup_rules").fetchone()["n"] == 0


def test_the_alert_webhook_url_is_a_secret_setting() -> None:
    env = {"DATABASE_URL": "postgresql://x@h/db", "PAYOUTS_ALERT_WEBHOOK_URL": "https://hooks.example/T0/B0/abc"}
    settings = Settings.from_env(env)
    assert settings.alert_webhook_url is not None
    assert settings.alert_webhook_url.reveal() == env["PAYOUTS_ALERT_WEBHOOK_URL"]
    assert "abc" not in repr(settings)
    with pytest.raises(SettingsError, match="PAYOUTS_ALERT_WEBHOOK_URL must be an http"):
        Settings.from_env(env | {"PAYOUTS_ALERT_WEBHOOK_URL": "hooks.example/abc"})
    with pytest.raises(SettingsError, match="PAYOUTS_ALERT_INTERVAL_SECONDS must be between"):
        Settings.from_env(env | {"PAYOUTS_ALERT_INTERVAL_SECONDS": "0"})


def test_a_signed_top_up_is_not_failed_by_a_signer_that_simulated_it_before(
    database_url: str, db: psycopg.Connection
) -> None:
    payout_id = new_topup_payout(db)
    add_topup(db, payout_id)
    db.execute("UPDATE payouts SET status = 'SIGNED', nonce = 7 WHERE id = %s", (payout_id,))

    async def fail() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as conn:
            await fail_planned(conn, payout_id, "would revert")  # type: ignore[arg-type]

    asyncio.run(fail())
    assert db.execute("SELECT status FROM topups").fetchone()["status"] == "IN_FLIGHT"
    assert db.execute("SELECT status FROM payouts").fetchone()["status"] == "SIGNED"


def test_an_alert_is_claimed_once_per_interval_and_a_failed_send_gives_back_only_its_own_claim(
    db: psycopg.Connection,
) -> None:
    params = {"key": "main_low:localhost:ETH", "message": "low", "interval_seconds": 3600}
    db.execute(query("mark_alert_active"), params)
    first = db.execute(query("claim_alert"), params).fetchone()
    assert first is not None and first["previous_sent_at"] is None
    assert db.execute(query("claim_alert"), params).fetchone() is None  # within the interval
    # A give-back for a claim that is not the current one changes nothing.
    db.execute(
        query("give_back_alert"), {"key": params["key"], "previous_sent_at": None, "claimed_at": "2000-01-01T00:00Z"}
    )
    assert db.execute("SELECT last_sent_at FROM alert_state").fetchone()["last_sent_at"] == first["claimed_at"]
    db.execute(
        query("give_back_alert"), {"key": params["key"], "previous_sent_at": None, "claimed_at": first["claimed_at"]}
    )
    assert db.execute(query("claim_alert"), params).fetchone() is not None  # the next check sends it
