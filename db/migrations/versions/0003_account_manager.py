"""Account manager: top-up rules per chain and asset, top-ups, balance snapshots and alert state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

New tables, and a trigger on payouts that only acts on payouts of kind 'topup', which the
previous release never creates: it keeps working with this schema.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- What the account manager keeps in each hot wallet, per chain and asset (base units).
CREATE TABLE topup_rules (
    chain text NOT NULL,
    asset text NOT NULL,
    -- A hot wallet whose free balance is below `threshold` is topped up to `target`.
    threshold numeric(78, 0) NOT NULL,
    target numeric(78, 0) NOT NULL,
    -- At most this much of the asset leaves the main account for top-ups in any 24 hours.
    daily_limit numeric(78, 0) NOT NULL,
    -- Below this the main account itself is low: a warning, a metric and a webhook alert.
    main_alert_below numeric(78, 0) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_topup_rules PRIMARY KEY (chain, asset),
    CONSTRAINT ck_topup_rules_threshold_non_negative CHECK (threshold >= 0),
    CONSTRAINT ck_topup_rules_target_above_threshold CHECK (target > threshold),
    CONSTRAINT ck_topup_rules_daily_limit_non_negative CHECK (daily_limit >= 0),
    CONSTRAINT ck_topup_rules_main_alert_non_negative CHECK (main_alert_below >= 0)
);

-- One hot wallet's top-up: a member of a payout of kind 'topup' sent by the main account.
CREATE TABLE topups (
    id uuid DEFAULT gen_random_uuid() CONSTRAINT pk_topups PRIMARY KEY,
    payout_id uuid CONSTRAINT fk_topups_payout_id_payouts REFERENCES payouts (id) ON DELETE SET NULL,
    chain text NOT NULL,
    asset text NOT NULL,
    wallet text NOT NULL,
    amount numeric(78, 0) NOT NULL,
    balance_before numeric(78, 0) NOT NULL,
    status text NOT NULL DEFAULT 'IN_FLIGHT',
    note text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_topups_amount_positive CHECK (amount > 0),
    CONSTRAINT ck_topups_status CHECK (status IN ('IN_FLIGHT', 'CONFIRMED', 'FAILED'))
);
-- Never two top-ups on their way to the same wallet and asset.
CREATE UNIQUE INDEX uq_topups_in_flight ON topups (chain, wallet, asset) WHERE status = 'IN_FLIGHT';
CREATE INDEX ix_topups_payout_id ON topups (payout_id);
CREATE INDEX ix_topups_chain_asset_created_at ON topups (chain, asset, created_at);

-- A top-up settles with its transaction: confirmed at depth, or failed when it reverted or its
-- nonce went to another transaction (the next check tops the wallet up again if still low).
CREATE FUNCTION payouts_settle_topups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE topups SET
        status = CASE WHEN NEW.status = 'CONFIRMED' THEN 'CONFIRMED' ELSE 'FAILED' END,
        note = CASE NEW.status
            WHEN 'CONFIRMED' THEN 'confirmed'
            WHEN 'REVERTED' THEN 'the top-up transaction reverted'
            ELSE 'the top-up transaction was replaced by another one at its nonce'
        END,
        updated_at = now()
    WHERE payout_id = NEW.id AND status = 'IN_FLIGHT';
    RETURN NULL;
END;
$$;

CREATE TRIGGER payouts_settle_topups
    AFTER UPDATE OF status ON payouts
    FOR EACH ROW WHEN (NEW.kind = 'topup' AND NEW.status IN ('CONFIRMED', 'REVERTED', 'SUPERSEDED'))
    EXECUTE FUNCTION payouts_settle_topups();

-- The balances the account manager read last (the metrics and `payouts accounts show` use them).
CREATE TABLE wallet_balances (
    chain text NOT NULL,
    address text NOT NULL,
    asset text NOT NULL,
    balance numeric(78, 0) NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_wallet_balances PRIMARY KEY (chain, address, asset)
);

-- When an alert was last sent, so that it is not repeated more than once per interval.
CREATE TABLE alert_state (
    key text CONSTRAINT pk_alert_state PRIMARY KEY,
    active boolean NOT NULL DEFAULT false,
    last_sent_at timestamptz,
    message text
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(
        "DROP TABLE alert_state, wallet_balances; DROP TRIGGER payouts_settle_topups ON payouts;"
        " DROP FUNCTION payouts_settle_topups(); DROP TABLE topups, topup_rules"
    )
