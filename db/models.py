"""Tables, as SQLAlchemy Core metadata.

The migrations in `db/migrations/versions` create the schema; this module describes the same
schema so that Alembic can check for drift (`tests/integration/test_schema.py`). Queries that
run on hot paths are plain named SQL in `sql/queries.sql`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from db.states import WithdrawalStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Base units of any EVM amount fit in 78 decimal digits (2**256 - 1 has 78).
Amount = Numeric(78, 0)

withdrawal_status = Enum(
    WithdrawalStatus,
    name="withdrawal_status",
    values_callable=lambda e: [m.value for m in e],
    create_type=False,
)


def _uuid_pk(default: str = "gen_random_uuid()") -> Column:
    return Column("id", UUID(as_uuid=True), primary_key=True, server_default=text(default))


def _created_at() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()"))


api_clients = Table(
    "api_clients",
    metadata,
    _uuid_pk(),
    Column("name", Text, nullable=False, unique=True),
    _created_at(),
    Column("disabled_at", DateTime(timezone=True)),
)

api_keys = Table(
    "api_keys",
    metadata,
    _uuid_pk(),
    Column("client_id", UUID(as_uuid=True), ForeignKey("api_clients.id"), nullable=False, index=True),
    # SHA-256 of the whole key: keys are 256-bit random, so a fast hash is enough and a
    # database leak does not reveal usable keys.
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    _created_at(),
    Column("revoked_at", DateTime(timezone=True)),
)

withdrawals = Table(
    "withdrawals",
    metadata,
    # Time-ordered (version 7): creates write at the right edge of the indexes (migration 0009).
    _uuid_pk("uuid_time_ordered()"),
    Column("client_id", UUID(as_uuid=True), ForeignKey("api_clients.id"), nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("chain", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("to_address", Text, nullable=False),
    Column("amount", Amount, nullable=False),
    Column("reference", Text),
    Column("status", withdrawal_status, nullable=False, server_default=text("'PENDING'")),
    # The status while the withdrawal waits to be taken into a transaction, else NULL: the only
    # status an index holds, so that later status changes are HOT updates (migration 0008).
    # Written as Postgres prints it back, for the drift check.
    Column(
        "queue_status",
        withdrawal_status,
        Computed(
            "CASE WHEN (status = ANY (ARRAY['PENDING'::withdrawal_status, 'VALIDATING'::withdrawal_status]))"
            " THEN status ELSE NULL::withdrawal_status END",
            persisted=True,
        ),
    ),
    Column("status_note", Text),
    Column("failure_code", Text),
    Column("failure_reason", Text),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("amount > 0", name="amount_positive"),
    UniqueConstraint("client_id", "idempotency_key"),
    # Scanned backwards for newest-first pages.
    Index("ix_withdrawals_client_page", "client_id", "created_at", "id"),
    Index(
        "ix_withdrawals_queue",
        "chain",
        "queue_status",
        "created_at",
        postgresql_where=text("queue_status IS NOT NULL"),
    ),
    # Room on each page for a row's next version beside it (a HOT update).
    postgresql_with={"fillfactor": 70},
)

withdrawal_events = Table(
    "withdrawal_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("withdrawal_id", UUID(as_uuid=True), ForeignKey("withdrawals.id"), nullable=False),
    Column("from_status", withdrawal_status),
    Column("to_status", withdrawal_status, nullable=False),
    Column("note", Text),
    _created_at(),
    Index("ix_withdrawal_events_withdrawal_id_id", "withdrawal_id", "id"),
)

withdrawal_transitions = Table(
    "withdrawal_transitions",
    metadata,
    Column("from_status", withdrawal_status, nullable=False),
    Column("to_status", withdrawal_status, nullable=False),
    PrimaryKeyConstraint("from_status", "to_status"),
)

hot_wallets = Table(
    "hot_wallets",
    metadata,
    _uuid_pk(),
    Column("chain", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("role", Text, nullable=False),
    # Where the signer finds the key (a key-vault reference); never the key itself.
    Column("key_ref", Text),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    _created_at(),
    CheckConstraint("role IN ('main', 'hot')", name="role"),
    CheckConstraint("address ~ '^0x[0-9a-fA-F]{40}$'", name="address_format"),
    UniqueConstraint("chain", "address"),
)

# Sealed hot-wallet keys (jobs/vault.py): envelope encryption, never a plain key.
wallet_keys = Table(
    "wallet_keys",
    metadata,
    Column("wallet_id", UUID(as_uuid=True), ForeignKey("hot_wallets.id"), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("sealed_data_key", LargeBinary, nullable=False),
    Column("provider", Text, nullable=False),
    Column("master_key_id", Text, nullable=False),
    _created_at(),
    Column("rewrapped_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("wallet_id", "key_version"),
    CheckConstraint("key_version > 0", name="key_version_positive"),
    CheckConstraint("octet_length(nonce) = 12", name="nonce_length"),
    CheckConstraint("octet_length(sealed_key) = 48", name="sealed_key_length"),
    CheckConstraint("provider IN ('local', 'aws-secrets-manager', 'aws-kms')", name="provider"),
    Index("ix_wallet_keys_master_key_id", "master_key_id"),
)

nonces = Table(
    "nonces",
    metadata,
    Column("chain", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("next_nonce", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("chain", "address"),
    CheckConstraint("next_nonce >= 0", name="next_nonce_non_negative"),
)

PAYOUT_STATUSES = ("PLANNED", "SIGNED", "BROADCASTED", "INCLUDED", "CONFIRMED", "REVERTED", "SUPERSEDED")

payouts = Table(
    "payouts",
    metadata,
    _uuid_pk(),
    Column("chain", Text, nullable=False),
    Column("sender", Text, nullable=False),
    Column("nonce", BigInteger),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'PLANNED'")),
    Column("asset", Text, nullable=False),
    Column("to_address", Text, nullable=False),
    Column("value", Amount, nullable=False, server_default=text("0")),
    Column("data", LargeBinary, nullable=False, server_default=text("'\\x'::bytea")),
    Column("gas_limit", BigInteger),
    # Where the transaction was mined (any of its attempts), and how deep it is now.
    Column("block_number", BigInteger),
    Column("block_hash", Text),
    Column("confirmations", Integer),
    Column("mined_attempt_id", BigInteger),
    Column("cancel_requested_at", DateTime(timezone=True)),
    # The head at which the nonce was first seen used by another transaction (proof needs two looks).
    Column("nonce_used_elsewhere_at", BigInteger),
    # Why the engine cannot move this transaction on by itself (e.g. the fee cap blocks a bump).
    Column("alert", Text),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("kind IN ('withdrawal', 'topup', 'approve')", name="kind"),
    CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in PAYOUT_STATUSES) + ")", name="status"),
    CheckConstraint("value >= 0", name="value_non_negative"),
    # One live transaction per (chain, sender, nonce): a superseded one gave its nonce away.
    Index(
        "uq_payouts_live_nonce",
        "chain",
        "sender",
        "nonce",
        unique=True,
        postgresql_where=text("nonce IS NOT NULL AND status <> 'SUPERSEDED'"),
    ),
    Index(
        "ix_payouts_in_flight",
        "chain",
        "sender",
        "status",
        postgresql_where=text("status IN ('PLANNED', 'SIGNED', 'BROADCASTED', 'INCLUDED')"),
    ),
)

payout_items = Table(
    "payout_items",
    metadata,
    Column("payout_id", UUID(as_uuid=True), ForeignKey("payouts.id"), nullable=False),
    Column("withdrawal_id", UUID(as_uuid=True), ForeignKey("withdrawals.id"), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("live", Boolean, nullable=False, server_default=text("true")),
    PrimaryKeyConstraint("payout_id", "withdrawal_id"),
    CheckConstraint("amount > 0", name="amount_positive"),
    # Money rule 2: a withdrawal belongs to at most one live on-chain transaction.
    Index("uq_payout_items_live_withdrawal", "withdrawal_id", unique=True, postgresql_where=text("live")),
)

tx_attempts = Table(
    "tx_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("payout_id", UUID(as_uuid=True), ForeignKey("payouts.id"), nullable=False, index=True),
    Column("tx_hash", Text, nullable=False, unique=True),
    # "cancel": a 0-value self-send at the payout's nonce that, if mined, cancels it.
    Column("kind", Text, nullable=False, server_default=text("'payout'")),
    Column("raw_tx", LargeBinary, nullable=False),
    Column("gas_limit", BigInteger, nullable=False),
    Column("max_fee_per_gas", Amount),
    Column("max_priority_fee_per_gas", Amount),
    Column("gas_price", Amount),
    _created_at(),
    Column("broadcast_at", DateTime(timezone=True)),
    Column("block_number", BigInteger),
    Column("block_hash", Text),
    Column("receipt_status", SmallInteger),
    CheckConstraint("kind IN ('payout', 'cancel')", name="kind"),
)

# The account manager (jobs/accounts.py): what each hot wallet keeps, per chain and asset.
topup_rules = Table(
    "topup_rules",
    metadata,
    Column("chain", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("threshold", Amount, nullable=False),
    Column("target", Amount, nullable=False),
    Column("daily_limit", Amount, nullable=False),
    Column("main_alert_below", Amount, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("chain", "asset"),
    CheckConstraint("threshold >= 0", name="threshold_non_negative"),
    CheckConstraint("target > threshold", name="target_above_threshold"),
    CheckConstraint("daily_limit >= 0", name="daily_limit_non_negative"),
    CheckConstraint("main_alert_below >= 0", name="main_alert_non_negative"),
)

TOPUP_STATUSES = ("IN_FLIGHT", "CONFIRMED", "FAILED")

# One hot wallet's top-up, a member of a payout of kind 'topup' sent by the main account.
topups = Table(
    "topups",
    metadata,
    _uuid_pk(),
    Column("payout_id", UUID(as_uuid=True), ForeignKey("payouts.id", ondelete="SET NULL"), index=True),
    Column("chain", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("wallet", Text, nullable=False),
    Column("amount", Amount, nullable=False),
    Column("balance_before", Amount, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'IN_FLIGHT'")),
    Column("note", Text),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in TOPUP_STATUSES) + ")", name="status"),
    # Never two top-ups on their way to the same wallet and asset.
    Index(
        "uq_topups_in_flight", "chain", "wallet", "asset", unique=True, postgresql_where=text("status = 'IN_FLIGHT'")
    ),
    Index("ix_topups_chain_asset_created_at", "chain", "asset", "created_at"),
)

wallet_balances = Table(
    "wallet_balances",
    metadata,
    Column("chain", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("balance", Amount, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("chain", "address", "asset"),
)

alert_state = Table(
    "alert_state",
    metadata,
    Column("key", Text, primary_key=True),
    Column("active", Boolean, nullable=False, server_default=text("false")),
    Column("last_sent_at", DateTime(timezone=True)),
    Column("message", Text),
)
