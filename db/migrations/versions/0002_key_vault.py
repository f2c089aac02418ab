"""Key vault: hot-wallet private keys sealed with envelope encryption (jobs/vault.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

A new table only: the previous release's code never reads it. Plain keys are never stored: the
sealed key is 48 bytes (32-byte key + 16-byte GCM tag), so a plain 32-byte key cannot fit.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE wallet_keys (
    wallet_id uuid NOT NULL CONSTRAINT fk_wallet_keys_wallet_id_hot_wallets REFERENCES hot_wallets (id),
    key_version integer NOT NULL,
    -- AES-256-GCM of the private key under the data key; wallet id and version are its associated data.
    nonce bytea NOT NULL,
    sealed_key bytea NOT NULL,
    -- The data key, wrapped by the master key `master_key_id` of `provider` (bound to the same ids).
    sealed_data_key bytea NOT NULL,
    provider text NOT NULL,
    master_key_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rewrapped_at timestamptz,
    CONSTRAINT pk_wallet_keys PRIMARY KEY (wallet_id, key_version),
    CONSTRAINT ck_wallet_keys_key_version_positive CHECK (key_version > 0),
    CONSTRAINT ck_wallet_keys_nonce_length CHECK (octet_length(nonce) = 12),
    CONSTRAINT ck_wallet_keys_sealed_key_length CHECK (octet_length(sealed_key) = 48),
    CONSTRAINT ck_wallet_keys_provider CHECK (provider IN ('local', 'aws-secrets-manager', 'aws-kms'))
);
-- Rotation looks for keys not yet under the new master key.
CREATE INDEX ix_wallet_keys_master_key_id ON wallet_keys (master_key_id);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE wallet_keys")
