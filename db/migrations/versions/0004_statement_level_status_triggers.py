"""Withdrawal status checks and events once per statement instead of once per row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Money rule 4 stays in the database with the same outcome: a status change the machine does not
allow raises SQLSTATE 23514 (constraint withdrawal_transition) and nothing of its statement is
kept; every change writes its event row, in the same statement. The engine moves withdrawals a
batch per statement, and the row-level triggers ran two SPI queries per row (the edge lookup and
the event insert): the statement-level ones run one query each over the statement's transition
tables. A BEFORE row trigger still refuses an insert that is not PENDING and stamps updated_at
(no query). The previous release's code is unaffected: same tables, same errors, same events.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION withdrawals_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'PENDING' THEN
            RAISE EXCEPTION 'a withdrawal starts as PENDING, not %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawal_transition';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        -- The edge is checked once for the whole statement (withdrawals_check_and_record).
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION withdrawals_check_and_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note)
        SELECT n.id, NULL, n.status, n.status_note FROM new_rows n;
        RETURN NULL;
    END IF;
    SELECT o.status AS from_status, n.status AS to_status INTO bad
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.status <> n.status
      AND NOT EXISTS (
          SELECT 1 FROM withdrawal_transitions t WHERE t.from_status = o.status AND t.to_status = n.status)
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

DROP TRIGGER withdrawals_record_event_insert ON withdrawals;
DROP TRIGGER withdrawals_record_event_update ON withdrawals;
DROP FUNCTION withdrawals_record_event();

CREATE TRIGGER withdrawals_check_and_record_insert
    AFTER INSERT ON withdrawals REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION withdrawals_check_and_record();

CREATE TRIGGER withdrawals_check_and_record_update
    AFTER UPDATE ON withdrawals REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION withdrawals_check_and_record();
"""

DOWNGRADE = r"""
DROP TRIGGER withdrawals_check_and_record_insert ON withdrawals;
DROP TRIGGER withdrawals_check_and_record_update ON withdrawals;
DROP FUNCTION withdrawals_check_and_record();

CREATE OR REPLACE FUNCTION withdrawals_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER withdrawals_record_event_insert
    AFTER INSERT ON withdrawals
    FOR EACH ROW EXECUTE FUNCTION withdrawals_record_event();

CREATE TRIGGER withdrawals_record_event_update
    AFTER UPDATE OF status ON withdrawals
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION withdrawals_record_event();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
