"""The statement-level trigger plans its queries on the transition tables for each statement.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

PL/pgSQL keeps the plan of each query of a function for the life of the connection, made for the
row counts of the first statement that ran it. The transition tables' counts are known only when a
statement runs, so a pooled connection whose first status change moved one withdrawal kept a
nested loop over the old and new rows for good, and later moved 642 withdrawals by comparing
411,522 pairs (seen in the end-to-end benchmark: 150 ms for one event insert; which plan a
connection got depended on its first statement, so it varied from run to run). The check and
the event insert now run through EXECUTE, planned for each statement with its own row counts.
Same errors, same events.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION withdrawals_check_and_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note)
        SELECT n.id, NULL, n.status, n.status_note FROM new_rows n;
        RETURN NULL;
    END IF;
    -- EXECUTE: planned for this statement's row counts, not the first statement's (see 0006).
    EXECUTE $q$
        SELECT e.from_status, e.to_status
        FROM (
            SELECT DISTINCT o.status AS from_status, n.status AS to_status
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.status <> n.status
        ) e
        WHERE NOT EXISTS (
            SELECT 1 FROM withdrawal_transitions t WHERE t.from_status = e.from_status AND t.to_status = e.to_status)
        LIMIT 1
    $q$ INTO bad;
    IF bad.from_status IS NOT NULL THEN
        RAISE EXCEPTION 'illegal withdrawal transition % -> %', bad.from_status, bad.to_status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawal_transition';
    END IF;
    EXECUTE $q$
        INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note)
        SELECT n.id, o.status, n.status, n.status_note
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.status <> n.status
    $q$;
    RETURN NULL;
END;
$$;
"""

# 0005's function, word for word.
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION withdrawals_check_and_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note)
        SELECT n.id, NULL, n.status, n.status_note FROM new_rows n;
        RETURN NULL;
    END IF;
    SELECT e.from_status, e.to_status INTO bad
    FROM (
        SELECT DISTINCT o.status AS from_status, n.status AS to_status
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.status <> n.status
    ) e
    WHERE NOT EXISTS (
        SELECT 1 FROM withdrawal_transitions t WHERE t.from_status = e.from_status AND t.to_status = e.to_status)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'illegal withdrawal transition % -> %', bad.from_status, bad.to_status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawal_transition';
    END IF;
    INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note)
    SELECT n.id, o.status, n.status, n.status_note
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.status <> n.status;
    RETURN NULL;
END;
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
