"""History rows for the benchmarks: CONFIRMED withdrawals with their events, payouts, attempts
and items, written straight by SQL (generate_series), as if they had gone the whole way.

bench/growth.py fills 100,000 and 1,000,000 to see how cost grows; bench/ingest.py and
bench/e2e.py start from a smaller history (SEED) so that they measure tables of a running system,
not a new database's first minute: Postgres plans a query on a table for the size its statistics
give, and keeps a connection's plans of foreign-key checks and prepared statements until the
statistics change; autovacuum's first ANALYZE of a new table comes when it holds about 50 rows
and the next up to a minute later, so plans made in between (a scan of the whole table for one
key) stay while the table grows to tens of thousands of rows.
"""

from __future__ import annotations

import time

import psycopg

# History withdrawals that bench/ingest.py and bench/e2e.py write first (see the docstring).
SEED = 20_000
BIG_TABLES = ("withdrawals", "withdrawal_events", "payouts", "payout_items", "tx_attempts")
PER_PAYOUT = 100  # history withdrawals per batch transaction
SINGLE_EVERY = 4  # one history withdrawal in this many is paid alone (native coin to a new account)
HISTORY_SENDERS = 8

# ------------------------------------------------------------------------------------------------
# Filling the history

# Withdrawals are inserted as CONFIRMED with their eight event rows, as if they had gone the whole
# way. The guard trigger only lets rows in as PENDING and the event trigger would write one PENDING
# event, so USER triggers on withdrawals are disabled for the fill, inside its transaction (this
# is a scratch database; nothing else writes to it then). Constraint triggers (foreign keys) stay.
#
# The mix is the benchmarks' own traffic: one in SINGLE_EVERY is native coin to a new account,
# paid by a transaction of its own (batches never pay those); the others go in batches of
# PER_PAYOUT, USDT and ETH in turn. The planner's estimates come from this history (how many items
# a payout holds, for one), so a history of batches only would make it plan for batches only.
# Each payout is numbered by its first withdrawal (pn): its sender, nonce and hashes derive from it.
# The events' times are those of the end-to-end benchmark at 100/s on the 2 s chain (p50 of each
# status); a payout's follow its newest member's: planned at SIGNING, signed 0.3 s and broadcast
# 0.5 s later (the planner reads the recent planning-to-broadcast times: jobs/blockclock.py).
FILL = """
CREATE TEMP TABLE fill_w ON COMMIT DROP AS
SELECT g AS n, gen_random_uuid() AS id, g %% %(single_every)s = 0 AS single,
       now() - interval '1 hour' - g * interval '2 seconds' AS created_at
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g;

CREATE TEMP TABLE fill_m ON COMMIT DROP AS
SELECT n, CASE WHEN single THEN n ELSE min(n) OVER (PARTITION BY grp) END AS pn,
       CASE WHEN single OR grp %% 2 = 1 THEN 'ETH' ELSE 'USDT' END AS asset
FROM (SELECT n, single, CASE WHEN NOT single
                             THEN (row_number() OVER (PARTITION BY single ORDER BY n) - 1) / %(per_payout)s END AS grp
      FROM fill_w) b;

CREATE TEMP TABLE fill_p ON COMMIT DROP AS
SELECT m.pn, gen_random_uuid() AS id, min(m.asset) AS asset, count(*) AS members, bool_and(w.single) AS single,
       max(w.created_at) + interval '1 second' AS created_at
FROM fill_m m JOIN fill_w w USING (n)
GROUP BY m.pn;

ALTER TABLE withdrawals DISABLE TRIGGER USER;

INSERT INTO withdrawals (id, client_id, idempotency_key, request_hash, chain, asset, to_address, amount,
                         status, status_note, created_at, updated_at)
SELECT f.id, %(client_id)s, 'history-' || f.n, sha256(f.n::text::bytea), 'localhost', m.asset,
       '0x' || md5(f.n::text) || substr(md5('to' || f.n), 1, 8),
       CASE WHEN m.asset = 'USDT' THEN 1500000 ELSE 1000000000000000 END,
       'CONFIRMED', 'confirmed', f.created_at, f.created_at + interval '5 seconds'
FROM fill_w f JOIN fill_m m USING (n);

INSERT INTO withdrawal_events (withdrawal_id, from_status, to_status, note, created_at)
SELECT f.id, s.from_status::withdrawal_status, s.to_status::withdrawal_status, s.note,
       f.created_at + s.at * interval '1 second'
FROM fill_w f CROSS JOIN (VALUES
    (0, 0.0, NULL, 'PENDING', NULL),
    (1, 0.1, 'PENDING', 'VALIDATING', 'accepted; looking for a hot wallet that can pay it'),
    (2, 1.0, 'VALIDATING', 'SIGNING', 'assigned to a hot wallet; waiting for its signature'),
    (3, 1.3, 'SIGNING', 'SIGNED', 'signed'),
    (4, 1.4, 'SIGNED', 'BROADCASTING', 'broadcasting'),
    (5, 1.5, 'BROADCASTING', 'BROADCASTED', 'broadcast'),
    (6, 3.0, 'BROADCASTED', 'CONFIRMING', 'included'),
    (7, 5.0, 'CONFIRMING', 'CONFIRMED', 'confirmed')
) s(k, at, from_status, to_status, note)
ORDER BY f.n, s.k;

ALTER TABLE withdrawals ENABLE TRIGGER USER;

INSERT INTO payouts (id, chain, sender, nonce, kind, status, asset, to_address, value, data, gas_limit,
                     block_number, block_hash, confirmations, created_at, updated_at)
SELECT p.id, 'localhost', '0x' || lpad(to_hex(4096 + p.pn %% %(senders)s), 40, '0'), p.pn / %(senders)s,
       'withdrawal', 'CONFIRMED', p.asset,
       CASE WHEN p.single THEN '0x' || md5(p.pn::text) || substr(md5('to' || p.pn), 1, 8) ELSE %(batch_contract)s END,
       CASE WHEN p.asset = 'ETH' THEN p.members * 1000000000000000 ELSE 0 END,
       CASE WHEN p.single THEN ''::bytea ELSE decode(repeat(md5(p.pn::text), 200), 'hex') END,
       CASE WHEN p.single THEN 21000 ELSE 3000000 END,
       1000000 + p.pn, '0x' || md5('block' || p.pn) || md5('hash' || p.pn), 2,
       p.created_at, p.created_at + interval '4 seconds'
FROM fill_p p;

INSERT INTO tx_attempts (payout_id, tx_hash, raw_tx, gas_limit, max_fee_per_gas, max_priority_fee_per_gas,
                         created_at, broadcast_at, block_number, block_hash, receipt_status)
SELECT p.id, '0x' || md5('tx' || p.pn) || md5('tx2' || p.pn),
       decode(repeat(md5(p.pn::text), CASE WHEN p.single THEN 7 ELSE 210 END), 'hex'),
       CASE WHEN p.single THEN 21000 ELSE 3000000 END, 2000000000, 1000000000,
       p.created_at + interval '0.3 seconds', p.created_at + interval '0.5 seconds',
       1000000 + p.pn, '0x' || md5('block' || p.pn) || md5('hash' || p.pn), 1
FROM fill_p p;

UPDATE payouts p SET mined_attempt_id = a.id
FROM fill_p f JOIN tx_attempts a ON a.payout_id = f.id
WHERE p.id = f.id;

INSERT INTO payout_items (payout_id, withdrawal_id, amount)
SELECT p.id, f.id, CASE WHEN p.asset = 'USDT' THEN 1500000 ELSE 1000000000000000 END
FROM fill_w f JOIN fill_m m USING (n) JOIN fill_p p USING (pn);
"""


def fill(url: str, client_id: str, have: int, want: int, batch_contract: str) -> float:
    """Add history withdrawals have+1 .. want (multiples of PER_PAYOUT); returns seconds taken."""
    started = time.monotonic()
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 0")
        params = {
            "first": have + 1,
            "last": want,
            "client_id": client_id,
            "per_payout": PER_PAYOUT,
            "single_every": SINGLE_EVERY,
            "senders": HISTORY_SENDERS,
            "batch_contract": batch_contract,
        }
        cur = psycopg.ClientCursor(conn)  # client-side values: CREATE TABLE AS takes no bind parameters
        for statement in FILL.split(";\n\n"):
            cur.execute(statement, params)  # type: ignore[call-overload]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) " + ", ".join(BIG_TABLES))
        # The fill leaves up to 2 GB written but not yet on disk (a million withdrawals); the
        # kernel writing it out during a measurement can hold commits waiting on their WAL flush
        # (ingest at 100 connections, 1,000,000 stored: p95 34-55 ms in three runs of four,
        # 12.7 ms in the fourth; 11.8-12.3 ms with this). A running system's writes reach the
        # disk as they come.
        conn.execute("CHECKPOINT")
    return time.monotonic() - started
