"""Initial schema: clients and keys, withdrawals with their status history, wallets, nonces,
on-chain transactions and their attempts, and procrastinate's job queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Every migration must work with the previous release's code still running: add first, backfill,
switch readers, and only drop in a later release.
"""

from alembic import op
from procrastinate.schema import SchemaManager

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TYPE withdrawal_status AS ENUM (
    'PENDING', 'VALIDATING', 'SIGNING', 'SIGNED', 'BROADCASTING', 'BROADCASTED',
    'CONFIRMING', 'CONFIRMED', 'FAILED', 'CANCELED'
);

CREATE TABLE api_clients (
    id uuid DEFAULT gen_random_uuid() CONSTRAINT pk_api_clients PRIMARY KEY,
    name text NOT NULL CONSTRAINT uq_api_clients_name UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

CREATE TABLE api_keys (
    id uuid DEFAULT gen_random_uuid() CONSTRAINT pk_api_keys PRIMARY KEY,
    client_id uuid NOT NULL CONSTRAINT fk_api_keys_client_id_api_clients REFERENCES api_clients (id),
    key_hash bytea NOT NULL CONSTRAINT uq_api_keys_key_hash UNIQUE,
    prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX ix_api_keys_client_id ON api_keys (client_id);

CREATE TABLE withdrawals (
    id uuid DEFAULT gen_random_uuid() CONSTRAINT pk_withdrawals PRIMARY KEY,
    client_id uuid NOT NULL CONSTRAINT fk_withdrawals_client_id_api_clients REFERENCES api_clients (id),
    idempotency_key text NOT NULL,
    request_hash bytea NOT NULL,
    chain text NOT NULL,
    asset text NOT NULL,
    to_address text NOT NULL,
    amount numeric(78, 0) NOT NULL CONSTRAINT ck_withdrawals_amount_positive CHECK (amount > 0),
    reference text,
    status withdrawal_status NOT NULL DEFAULT 'PENDING',
    status_note text,
    failure_code text,
    failure_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_withdrawals_client_id_idempotency_key UNIQUE (client_id, idempotency_key)
);
CREATE INDEX ix_withdrawals_client_page ON withdrawals (client_id, created_at, id);
CREATE INDEX ix_withdrawals_active ON withdrawals (chain, status, created_at)
    WHERE status NOT IN ('CONFIRMED', 'FAILED', 'CANCELED');

CREATE TABLE withdrawal_events (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_withdrawal_events PRIMARY KEY,
    withdrawal_id uuid NOT NULL
        CONSTRAINT fk_withdrawal_events_withdrawal_id_withdrawals REFERENCES withdrawals (id),
    from_status withdrawal_status,
    to_status withdrawal_status NOT NULL,
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_withdrawal_events_withdrawal_id_id ON withdrawal_events (withdrawal_id, id);

-- A copy of db/states.py ALLOWED_TRANSITIONS (a test keeps the two equal).
CREATE TABLE withdrawal_transitions (
    from_status withdrawal_status NOT NULL,
    to_status withdrawal_status NOT NULL,
    CONSTRAINT pk_withdrawal_transitions PRIMARY KEY (from_status, to_status)
);
INSERT INTO withdrawal_transitions (from_status, to_status) VALUES
    ('BROADCASTED', 'CANCELED'),
    ('BROADCASTED', 'CONFIRMING'),
    ('BROADCASTED', 'FAILED'),
    ('BROADCASTED', 'VALIDATING'),
    ('BROADCASTING', 'BROADCASTED'),
    ('BROADCASTING', 'SIGNED'),
    ('CONFIRMING', 'BROADCASTED'),
    ('CONFIRMING', 'CANCELED'),
    ('CONFIRMING', 'CONFIRMED'),
    ('CONFIRMING', 'FAILED'),
    ('CONFIRMING', 'VALIDATING'),
    ('PENDING', 'CANCELED'),
    ('PENDING', 'FAILED'),
    ('PENDING', 'VALIDATING'),
    ('SIGNED', 'BROADCASTING'),
    ('SIGNING', 'FAILED'),
    ('SIGNING', 'SIGNED'),
    ('SIGNING', 'VALIDATING'),
    ('VALIDATING', 'CANCELED'),
    ('VALIDATING', 'FAILED'),
    ('VALIDATING', 'SIGNING');

-- Money rule 4 in the database itself: a status change that the machine does not allow raises
-- (SQLSTATE 23514, constraint withdrawal_transition), and every change writes its event row.
CREATE FUNCTION withdrawals_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'PENDING' THEN
            RAISE EXCEPTION 'a withdrawal starts as PENDING, not %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawal_transition';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM 1 FROM withdrawal_transitions
            WHERE from_status = OLD.status AND to_status = NEW.status;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'illegal withdrawal transition % -> %', OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawal_transition';
        END IF;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION withdrawals_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note)
    VALUES (NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status, NEW.status_note);
    RETURN NULL;
END;
$$;

CREATE TRIGGER withdrawals_guard_status
    BEFORE INSERT OR UPDATE OF status ON withdrawals
    FOR EACH ROW EXECUTE FUNCTION withdrawals_guard_status();

CREATE TRIGGER withdrawals_record_event_insert
    AFTER INSERT ON withdrawals
    FOR EACH ROW EXECUTE FUNCTION withdrawals_record_event();

CREATE TRIGGER withdrawals_record_event_update
    AFTER UPDATE OF status ON withdrawals
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION withdrawals_record_event();

CREATE TABLE hot_wallets (
    id uuid DEFAULT gen_random_uuid() CONSTRAINT pk_hot_wallets PRIMARY KEY,
    chain text NOT NULL,
    address text NOT NULL,
    role text NOT NULL,
    key_ref text,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_hot_wallets_role CHECK (role IN ('main', 'hot')),
    CONSTRAINT ck_hot_wallets_address_format CHECK (address ~ '^0x[0-9a-fA-F]{40}$'),
    CONSTRAINT uq_hot_wallets_chain_address UNIQUE (chain, address)
);

CREATE TABLE nonces (
    chain text NOT NULL,
    address text NOT NULL,
    next_nonce bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_nonces PRIMARY KEY (chain, address),
    CONSTRAINT ck_nonces_next_nonce_non_negative CHECK (next_nonce >= 0)
);

CREATE TABLE payouts (
    id uuid DEFAULT gen_random_uuid() CONSTRAINT pk_payouts PRIMARY KEY,
    chain text NOT NULL,
    sender text NOT NULL,
    nonce bigint,
    kind text NOT NULL,
    status text NOT NULL DEFAULT 'PLANNED',
    asset text NOT NULL,
    to_address text NOT NULL,
    value numeric(78, 0) NOT NULL DEFAULT 0,
    data bytea NOT NULL DEFAULT '\x'::bytea,
    gas_limit bigint,
    block_number bigint,
    block_hash text,
    confirmations integer,
    mined_attempt_id bigint,
    cancel_requested_at timestamptz,
    nonce_used_elsewhere_at bigint,
    alert text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_payouts_kind CHECK (kind IN ('withdrawal', 'topup', 'approve')),
    CONSTRAINT ck_payouts_status CHECK (status IN (
        'PLANNED', 'SIGNED', 'BROADCASTED', 'INCLUDED', 'CONFIRMED', 'REVERTED', 'SUPERSEDED')),
    CONSTRAINT ck_payouts_value_non_negative CHECK (value >= 0)
);
-- One live transaction per (chain, sender, nonce): a superseded one gave its nonce away.
CREATE UNIQUE INDEX uq_payouts_live_nonce ON payouts (chain, sender, nonce)
    WHERE nonce IS NOT NULL AND status <> 'SUPERSEDED';
CREATE INDEX ix_payouts_in_flight ON payouts (chain, sender, status)
    WHERE status IN ('PLANNED', 'SIGNED', 'BROADCASTED', 'INCLUDED');

CREATE TABLE payout_items (
    payout_id uuid NOT NULL CONSTRAINT fk_payout_items_payout_id_payouts REFERENCES payouts (id),
    withdrawal_id uuid NOT NULL
        CONSTRAINT fk_payout_items_withdrawal_id_withdrawals REFERENCES withdrawals (id),
    amount numeric(78, 0) NOT NULL,
    live boolean NOT NULL DEFAULT true,
    CONSTRAINT pk_payout_items PRIMARY KEY (payout_id, withdrawal_id),
    CONSTRAINT ck_payout_items_amount_positive CHECK (amount > 0)
);
-- Money rule 2: a withdrawal belongs to at most one live on-chain transaction.
CREATE UNIQUE INDEX uq_payout_items_live_withdrawal ON payout_items (withdrawal_id) WHERE live;

CREATE TABLE tx_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_tx_attempts PRIMARY KEY,
    payout_id uuid NOT NULL CONSTRAINT fk_tx_attempts_payout_id_payouts REFERENCES payouts (id),
    tx_hash text NOT NULL CONSTRAINT uq_tx_attempts_tx_hash UNIQUE,
    kind text NOT NULL DEFAULT 'payout',
    raw_tx bytea NOT NULL,
    gas_limit bigint NOT NULL,
    max_fee_per_gas numeric(78, 0),
    max_priority_fee_per_gas numeric(78, 0),
    gas_price numeric(78, 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    broadcast_at timestamptz,
    block_number bigint,
    block_hash text,
    receipt_status smallint,
    CONSTRAINT ck_tx_attempts_kind CHECK (kind IN ('payout', 'cancel'))
);
CREATE INDEX ix_tx_attempts_payout_id ON tx_attempts (payout_id);

-- Withdrawals with the transaction that pays them (the mined attempt once mined, else the
-- latest attempt): what the API and reports show.
CREATE VIEW withdrawals_with_tx AS
SELECT w.*, t.tx_hash, t.block_number, t.confirmations, t.sender
FROM withdrawals w
LEFT JOIN LATERAL (
    SELECT coalesce(m.tx_hash, l.tx_hash) AS tx_hash, p.block_number, p.confirmations, p.sender
    FROM payout_items i
    JOIN payouts p ON p.id = i.payout_id
    LEFT JOIN tx_attempts m ON m.id = p.mined_attempt_id
    LEFT JOIN LATERAL (
        SELECT a.tx_hash FROM tx_attempts a WHERE a.payout_id = p.id ORDER BY a.id DESC LIMIT 1
    ) l ON true
    WHERE i.withdrawal_id = w.id AND i.live
) t ON true;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    # procrastinate's own tables, functions and triggers (the version is pinned in pyproject.toml;
    # a procrastinate upgrade brings its own migration files, applied by a new revision here).
    op.execute(SchemaManager.get_schema())


def downgrade() -> None:
    raise NotImplementedError("the initial schema is not downgraded; restore from a backup instead")
