-- Named queries used by the application, loaded by db/queries.py.
-- Each block starts with "-- name: <name>" and a line saying what it is for.

-- name: authenticate
-- The client behind an API key (by its SHA-256), unless the key is revoked or the client disabled.
SELECT k.client_id, c.name AS client_name
FROM api_keys k JOIN api_clients c ON c.id = k.client_id
WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL AND c.disabled_at IS NULL;

-- name: insert_withdrawal
-- Create withdrawals and their first job in one statement (one round trip, one transaction: the
-- outbox): the creates that API requests made at about the same time (app/intake.py), each for
-- the client behind its API key (by its SHA-256). Nothing is written for a create whose key is
-- unknown or revoked, whose client already used its idempotency key, or whose recipient is one of
-- our own wallets on that chain; no row comes back for it then (the caller tells which). Each row
-- comes back with the ordinal of its create. ON CONFLICT waits for a concurrent insert with the
-- same key to commit, so duplicates that race each other end with exactly one row.
-- The job is procrastinate's `validate` for each chain, unless one is already waiting to run (its
-- queueing lock `validate:<chain>`, the one the tick uses) or running: a job takes every PENDING
-- withdrawal of its chain, and a running one looks for new ones before it ends, so one job per
-- withdrawal would only load the queue. A job that ends between its last look and this
-- statement's commit misses these withdrawals; the next create queues a new job, and the tick
-- queues one every second while any is PENDING. Procrastinate's triggers on its table notify the
-- workers as for any defer. The priority is jobs/queue.py PRIORITY["validate"] (a test keeps the
-- two equal).
-- The creates come as one JSON array of objects (hashes in hex, the amount as a decimal string):
-- psycopg writes one JSON text in C, where nine arrays cost it about twice the client CPU.
-- A create whose client used its idempotency key before this statement began (a retry) gets
-- that withdrawal back, marked `replayed`, for the caller to answer as a replay or refuse when
-- its body differs: a burst of retries costs no round trip more than the creates. The lookup
-- sees the statement's snapshot, so a duplicate that commits while this one runs comes back
-- neither created nor replayed (the caller looks it up after the commit).
WITH input AS (
    SELECT t.ordinal, decode(t.key_hash, 'hex') AS key_hash, t.idempotency_key,
           decode(t.request_hash, 'hex') AS request_hash, t.chain, t.asset, t.to_address, t.amount, t.reference
    FROM json_to_recordset(%(creates)s::json) AS t (ordinal integer, key_hash text, idempotency_key text,
        request_hash text, chain text, asset text, to_address text, amount numeric, reference text)
), keyed AS (
    -- Each create's key by its index: the planner takes json_to_recordset for 100 rows and would
    -- rather read and hash every API key; OFFSET 0 keeps the lookup per create.
    SELECT input.*, k.client_id
    FROM input
    CROSS JOIN LATERAL (
        SELECT k.client_id
        FROM api_keys k JOIN api_clients c ON c.id = k.client_id AND c.disabled_at IS NULL
        WHERE k.key_hash = input.key_hash AND k.revoked_at IS NULL
        OFFSET 0
    ) AS k
    WHERE NOT EXISTS (SELECT 1 FROM hot_wallets h WHERE h.chain = input.chain AND h.address = input.to_address)
), created AS (
    INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount, reference)
    SELECT client_id, idempotency_key, request_hash, chain, asset, to_address, amount, reference
    FROM keyed ORDER BY client_id, idempotency_key, ordinal  -- one order for all: no deadlock between batches
    ON CONFLICT (client_id, idempotency_key) DO NOTHING
    RETURNING id, client_id, idempotency_key, request_hash, chain, asset, to_address, amount, reference, status, status_note,
    failure_code, failure_reason, created_at, updated_at
), job AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args)
    SELECT 'validate', 'validate', 10, 'validate:' || chain, jsonb_build_object('chain', chain)
    FROM (SELECT DISTINCT chain FROM created ORDER BY chain) AS chains
    WHERE NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs j
        WHERE j.queue_name = 'validate' AND j.queueing_lock = 'validate:' || chains.chain AND j.status = 'doing'
    )
    ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
)
SELECT keyed.ordinal, false AS replayed, created.*,
       NULL::text AS tx_hash, NULL::bigint AS block_number, NULL::integer AS confirmations
FROM created
JOIN keyed ON keyed.client_id = created.client_id AND keyed.idempotency_key = created.idempotency_key
    AND keyed.request_hash = created.request_hash
UNION ALL
-- The same columns, with the paying transaction's that the API shows (withdrawals_with_tx);
-- OFFSET 0 keeps the lookup an index probe per create (as for the keys above).
SELECT keyed.ordinal, true, earlier.*
FROM keyed
CROSS JOIN LATERAL (
    SELECT w.id, w.client_id, w.idempotency_key, w.request_hash, w.chain, w.asset, w.to_address, w.amount, w.reference,
           w.status, w.status_note, w.failure_code, w.failure_reason, w.created_at, w.updated_at,
           w.tx_hash, w.block_number, w.confirmations
    FROM withdrawals_with_tx w
    WHERE w.client_id = keyed.client_id AND w.idempotency_key = keyed.idempotency_key
    OFFSET 0
) AS earlier;

-- name: get_withdrawal_by_idempotency_key
-- The withdrawal a client created with an idempotency key.
SELECT * FROM withdrawals_with_tx WHERE client_id = %(client_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_withdrawal
-- One withdrawal of one client (another client's withdrawal is not found).
SELECT * FROM withdrawals_with_tx WHERE id = %(id)s AND client_id = %(client_id)s;

-- name: list_withdrawals
-- A page of a client's withdrawals, newest first, after a (created_at, id) cursor; every filter
-- is optional (NULL means "any"). Served by ix_withdrawals_client_page.
SELECT * FROM withdrawals_with_tx
WHERE client_id = %(client_id)s
  AND (%(statuses)s::withdrawal_status[] IS NULL OR status = ANY(%(statuses)s::withdrawal_status[]))
  AND (%(chain)s::text IS NULL OR chain = %(chain)s::text)
  AND (%(asset)s::text IS NULL OR asset = %(asset)s::text)
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: transition_withdrawals
-- Compare-and-set of the status of some withdrawals (money rule 4); the trigger checks the edge and
-- writes the event rows. Returns the ids that were in from_status and moved.
-- The rows are found by id: no index holds `status` (only `queue_status`, see migration 0008), so
-- no plan can read every withdrawal in from_status, thousands under load, to move a few.
UPDATE withdrawals
SET status = %(to_status)s::withdrawal_status, status_note = %(note)s,
    failure_code = %(failure_code)s, failure_reason = %(failure_reason)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s::withdrawal_status
RETURNING id;

-- name: cancel_withdrawal
-- Cancel a client's withdrawal if nothing has been signed for it yet.
UPDATE withdrawals
SET status = 'CANCELED', status_note = %(note)s
WHERE id = %(id)s AND client_id = %(client_id)s AND status = ANY(%(cancelable)s::withdrawal_status[])
RETURNING *;

-- name: claim_pending_withdrawals
-- The oldest PENDING withdrawals of a chain that no other worker holds, locked until commit.
-- Waiting withdrawals are found by queue_status (ix_withdrawals_queue), never by status.
SELECT id FROM withdrawals
WHERE chain = %(chain)s AND queue_status = 'PENDING'
ORDER BY created_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: pending_exists
-- Whether new withdrawals of a chain wait to be taken into the pipeline.
SELECT EXISTS (SELECT 1 FROM withdrawals WHERE chain = %(chain)s AND queue_status = 'PENDING') AS found;

-- name: withdrawal_events
-- The status history of a withdrawal, oldest first.
SELECT from_status, to_status, note, created_at FROM withdrawal_events
WHERE withdrawal_id = %(id)s ORDER BY id;

-- name: create_client
-- A new API client (an integrating exchange or service).
INSERT INTO api_clients (name) VALUES (%(name)s) RETURNING id;

-- name: find_client
-- An API client by name.
SELECT id FROM api_clients WHERE name = %(name)s;

-- name: create_key
-- Store a new API key by its SHA-256; the prefix helps operators tell keys apart.
INSERT INTO api_keys (client_id, key_hash, prefix) VALUES (%(client_id)s, %(key_hash)s, %(prefix)s);

-- name: revoke_keys
-- Revoke every live key of a client.
UPDATE api_keys SET revoked_at = now() WHERE client_id = %(client_id)s AND revoked_at IS NULL;

-- name: upsert_wallet
-- Register one of our wallets on a chain (idempotent).
INSERT INTO hot_wallets (chain, address, role, key_ref) VALUES (%(chain)s, %(address)s, %(role)s, %(key_ref)s)
ON CONFLICT (chain, address) DO UPDATE SET role = EXCLUDED.role, key_ref = EXCLUDED.key_ref
RETURNING id;

-- name: list_wallets
-- Our wallets, by chain.
SELECT chain, address, role, enabled, created_at FROM hot_wallets ORDER BY chain, role, address;

-- ---------------------------------------------------------------------------------------------
-- Payout engine: planning, nonces, signing, broadcasting, confirming.

-- name: lock_plan
-- One planner per chain at a time: balances and reservations are read and spent together.
SELECT pg_advisory_xact_lock(hashtextextended('plan:' || %(chain)s, 0));

-- name: enqueue_once
-- A job for a step, in the caller's transaction, unless one with the same queueing lock waits;
-- one that waits for a retry after a failure is moved to now (new work should not wait out the
-- backoff of an earlier error).
INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args)
VALUES (%(task)s, %(task)s, %(priority)s, %(lock)s, %(args)s)
ON CONFLICT (queueing_lock) WHERE status = 'todo'
DO UPDATE SET scheduled_at = NULL WHERE procrastinate_jobs.scheduled_at > now();

-- name: planned_exists
-- Whether a sender has transactions waiting for a signature.
SELECT EXISTS (
    SELECT 1 FROM payouts WHERE chain = %(chain)s AND sender = %(sender)s AND status = 'PLANNED'
) AS found;

-- name: signed_exists
-- Whether a sender has signed transactions waiting to be broadcast.
SELECT EXISTS (
    SELECT 1 FROM payouts WHERE chain = %(chain)s AND sender = %(sender)s AND status = 'SIGNED'
) AS found;

-- name: try_lock_step
-- One job at a time runs a step for a key (e.g. 'broadcast:<chain>:<sender>' or 'watch:<chain>'):
-- a session lock, held outside any transaction until unlock_step or the end of the session (a
-- dead worker's); false when another holds it. Session and transaction locks on the same key
-- exclude each other, so a worker of the previous release, which took it per transaction, and
-- one of this release never run the same step at once.
SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0)) AS locked;

-- name: unlock_step
-- Let a step's key go (try_lock_step).
SELECT pg_advisory_unlock(hashtextextended(%(key)s, 0)) AS unlocked;

-- name: lock_sender
-- One signer per (chain, sender) at a time, together with the nonce row lock (money rule 3).
SELECT pg_advisory_xact_lock(hashtextextended('sender:' || %(chain)s || ':' || %(sender)s, 0));

-- name: validating_withdrawals
-- Withdrawals of a chain waiting for a hot wallet, oldest first.
SELECT id, asset, to_address, amount, created_at FROM withdrawals
WHERE chain = %(chain)s AND queue_status = 'VALIDATING'
ORDER BY created_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: note_withdrawals
-- Say why withdrawals wait, without changing their status.
UPDATE withdrawals SET status_note = %(note)s, updated_at = now()
WHERE id = ANY(%(ids)s::uuid[]) AND status_note IS DISTINCT FROM %(note)s;

-- name: chain_hot_wallets
-- The enabled hot wallets of a chain.
SELECT address, key_ref FROM hot_wallets
WHERE chain = %(chain)s AND role = 'hot' AND enabled
ORDER BY address;

-- name: wallet_key_ref
-- Where the signer finds a wallet's key.
SELECT key_ref FROM hot_wallets WHERE chain = %(chain)s AND address = %(address)s AND enabled;

-- name: reservations
-- Per sender and asset: what payouts not yet included on chain will spend, and how many
-- transactions are in flight (money rule 5 counts both against the on-chain balance).
SELECT p.sender, p.asset, sum(i.amount) AS reserved, count(DISTINCT p.id) AS transactions
FROM payouts p JOIN payout_items i ON i.payout_id = p.id AND i.live
WHERE p.chain = %(chain)s AND p.status IN ('PLANNED', 'SIGNED', 'BROADCASTED')
GROUP BY p.sender, p.asset;

-- name: insert_payout
-- A transaction to be signed (no nonce yet).
INSERT INTO payouts (chain, sender, kind, asset, to_address, value, data)
VALUES (%(chain)s, %(sender)s, %(kind)s, %(asset)s, %(to_address)s, %(value)s, %(data)s)
RETURNING id;

-- name: insert_withdrawal_payouts
-- The transactions one planning pass made, in one statement (their ids come from the planner).
INSERT INTO payouts (id, chain, sender, kind, asset, to_address, value, data)
SELECT t.id, %(chain)s, t.sender, 'withdrawal', t.asset, t.to_address, t.value, t.data
FROM unnest(%(ids)s::uuid[], %(senders)s::text[], %(assets)s::text[], %(to_addresses)s::text[],
            %(values)s::numeric[], %(datas)s::bytea[]) AS t (id, sender, asset, to_address, value, data);

-- name: insert_payout_items
-- The withdrawals those transactions pay, with their amounts, in one statement.
INSERT INTO payout_items (payout_id, withdrawal_id, amount)
SELECT p, w, a FROM unnest(%(payout_ids)s::uuid[], %(withdrawal_ids)s::uuid[], %(amounts)s::numeric[]) AS m (p, w, a);

-- name: planned_payouts
-- Transactions of a sender waiting for a nonce and a signature, oldest first.
SELECT id, kind, asset, to_address, value, data FROM payouts
WHERE chain = %(chain)s AND sender = %(sender)s AND status = 'PLANNED'
ORDER BY created_at
LIMIT %(limit)s;

-- name: lock_planned_payout
-- Re-check under the sender lock that a transaction still waits for its signature.
SELECT id FROM payouts WHERE id = %(id)s AND status = 'PLANNED' FOR UPDATE;

-- name: lock_planned_payouts
-- The same for all the transactions a signer simulated: those that still wait for a signature.
SELECT id FROM payouts WHERE id = ANY(%(ids)s::uuid[]) AND status = 'PLANNED' ORDER BY id FOR UPDATE;

-- name: store_signed_payouts
-- Each transaction's nonce and first signed attempt, for all those one signer signed, in one
-- statement (under the locks of lock_planned_payouts).
WITH signed AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(nonces)s::bigint[], %(gas_limits)s::bigint[],
                         %(tx_hashes)s::text[], %(raw_txs)s::bytea[])
        AS t (id, nonce, gas_limit, tx_hash, raw_tx)
), attempts AS (
    INSERT INTO tx_attempts (payout_id, tx_hash, kind, raw_tx, gas_limit, max_fee_per_gas,
                             max_priority_fee_per_gas, gas_price)
    SELECT id, tx_hash, 'payout', raw_tx, gas_limit, %(max_fee_per_gas)s, %(max_priority_fee_per_gas)s,
           %(gas_price)s
    FROM signed
)
UPDATE payouts p SET status = 'SIGNED', nonce = s.nonce, gas_limit = s.gas_limit, updated_at = now()
FROM signed s
WHERE p.id = s.id AND p.status = 'PLANNED'
RETURNING p.id;

-- name: lock_nonce
-- The next nonce of a sender, locked until commit.
SELECT next_nonce FROM nonces WHERE chain = %(chain)s AND address = %(address)s FOR UPDATE;

-- name: insert_nonce
-- Start a sender's nonce lane from what the chain says.
INSERT INTO nonces (chain, address, next_nonce) VALUES (%(chain)s, %(address)s, %(next_nonce)s)
ON CONFLICT (chain, address) DO NOTHING;

-- name: set_nonce
-- Advance a sender's nonce lane.
UPDATE nonces SET next_nonce = %(next_nonce)s, updated_at = now()
WHERE chain = %(chain)s AND address = %(address)s;

-- name: mark_payout_signed
-- A transaction got its nonce and its first signed attempt.
UPDATE payouts SET status = 'SIGNED', nonce = %(nonce)s, gas_limit = %(gas_limit)s, updated_at = now()
WHERE id = %(id)s AND status = 'PLANNED'
RETURNING id;

-- name: insert_attempt
-- A signed attempt of a transaction (the first, a fee bump, or a cancel); any may be mined.
INSERT INTO tx_attempts (payout_id, tx_hash, kind, raw_tx, gas_limit, max_fee_per_gas,
                         max_priority_fee_per_gas, gas_price)
VALUES (%(payout_id)s, %(tx_hash)s, %(kind)s, %(raw_tx)s, %(gas_limit)s, %(max_fee_per_gas)s,
        %(max_priority_fee_per_gas)s, %(gas_price)s)
RETURNING id;

-- name: transition_withdrawals_of_payouts
-- transition_withdrawals for the withdrawals that some transactions pay, each transaction's with
-- its own note, in one statement (for moves that are not failures). Returns the ids that moved.
-- The rows are found from the payouts, as in transition_withdrawals.
UPDATE withdrawals w
SET status = %(to_status)s::withdrawal_status, status_note = t.note, failure_code = NULL, failure_reason = NULL
FROM payout_items i
JOIN unnest(%(payout_ids)s::uuid[], %(notes)s::text[]) AS t (payout_id, note) ON t.payout_id = i.payout_id
WHERE i.live AND w.id = i.withdrawal_id AND w.status = %(from_status)s::withdrawal_status
RETURNING w.id;

-- name: live_withdrawals_of_payouts
-- The withdrawals that transactions pay.
SELECT payout_id, withdrawal_id, amount FROM payout_items WHERE payout_id = ANY(%(ids)s::uuid[]) AND live;

-- name: delete_planned_payout
-- Drop a transaction that never got a nonce (nothing of it exists on chain).
WITH items AS (
    DELETE FROM payout_items WHERE payout_id = %(id)s
    AND EXISTS (SELECT 1 FROM payouts WHERE id = %(id)s AND status = 'PLANNED')
    RETURNING payout_id
)
DELETE FROM payouts WHERE id = %(id)s AND status = 'PLANNED';

-- name: signed_payouts
-- Signed transactions of a sender not yet accepted by a node, by nonce, with their latest attempt.
SELECT p.id, p.nonce, a.id AS attempt_id, a.raw_tx, a.tx_hash
FROM payouts p
JOIN LATERAL (SELECT id, raw_tx, tx_hash FROM tx_attempts WHERE payout_id = p.id ORDER BY id DESC LIMIT 1) a
    ON true
WHERE p.chain = %(chain)s AND p.sender = %(sender)s AND p.status = 'SIGNED'
ORDER BY p.nonce
LIMIT %(limit)s;

-- name: recent_send_seconds
-- Seconds from planning to broadcast that 9 in 10 of a chain's transactions kept, among the
-- latest 200 attempts of all chains (a chain with none there has no figure). First
-- attempts only: a replacement starts when the stuck timer says. A resend of the same bytes moves
-- broadcast_at and only lengthens the figure (an earlier last call, smaller batches). The limit is
-- written out, not a parameter: a prepared statement's generic plan would not know it and would
-- scan both tables whole.
SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM a.broadcast_at - p.created_at)) AS seconds
FROM (SELECT id, payout_id, broadcast_at FROM tx_attempts ORDER BY id DESC LIMIT 200) a
JOIN payouts p ON p.id = a.payout_id
WHERE p.chain = %(chain)s AND a.broadcast_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM tx_attempts b WHERE b.payout_id = a.payout_id AND b.id < a.id);

-- name: mark_attempt_broadcast
-- When an attempt was last handed to a node (the stuck clock starts here).
UPDATE tx_attempts SET broadcast_at = now() WHERE id = %(id)s;

-- name: mark_attempts_broadcast
-- The same for attempts sent again together.
UPDATE tx_attempts SET broadcast_at = now() WHERE id = ANY(%(ids)s::bigint[]);

-- name: mark_payouts_broadcasted
-- The transactions a node accepted (or already had) in one broadcast, and when their attempts were
-- handed to it, in one statement.
WITH attempts AS (
    UPDATE tx_attempts SET broadcast_at = now() WHERE id = ANY(%(attempt_ids)s::bigint[])
)
UPDATE payouts SET status = 'BROADCASTED', alert = NULL, updated_at = now()
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'SIGNED';

-- name: set_payout_alert
-- Why a transaction cannot move on by itself (shown to operators); returns a row only when the
-- alert is new, so it is logged once.
UPDATE payouts SET alert = %(alert)s, updated_at = now() WHERE id = %(id)s AND alert IS DISTINCT FROM %(alert)s
RETURNING id;

-- name: watched_payouts
-- Transactions of a chain that are on their way: broadcast, or included but not yet deep enough.
SELECT id, sender, nonce, status, block_number, block_hash, mined_attempt_id, cancel_requested_at,
       gas_limit, to_address, value, data, nonce_used_elsewhere_at, alert
FROM payouts
WHERE chain = %(chain)s AND status IN ('BROADCASTED', 'INCLUDED')
ORDER BY sender, nonce;

-- name: attempts_of_payouts
-- Every attempt of some transactions, oldest first.
SELECT id, payout_id, tx_hash, kind, raw_tx, gas_limit, max_fee_per_gas, max_priority_fee_per_gas,
       gas_price, broadcast_at, created_at, block_number, block_hash, receipt_status
FROM tx_attempts WHERE payout_id = ANY(%(ids)s::uuid[]) ORDER BY id;

-- name: mark_payouts_included
-- Attempts were mined: their receipts, and where their transactions are now, in one statement for
-- all those one watch pass found. Returns the transactions that moved to INCLUDED.
WITH mined AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempt_ids)s::bigint[], %(block_numbers)s::bigint[],
                         %(block_hashes)s::text[], %(receipt_statuses)s::smallint[], %(confirmations)s::integer[])
        AS t (id, attempt_id, block_number, block_hash, receipt_status, confirmations)
), receipts AS (
    UPDATE tx_attempts a
    SET block_number = m.block_number, block_hash = m.block_hash, receipt_status = m.receipt_status
    FROM mined m WHERE a.id = m.attempt_id
)
UPDATE payouts p SET status = 'INCLUDED', block_number = m.block_number, block_hash = m.block_hash,
    mined_attempt_id = m.attempt_id, confirmations = m.confirmations, alert = NULL, updated_at = now()
FROM mined m
WHERE p.id = m.id AND p.status = 'BROADCASTED'
RETURNING p.id;

-- name: set_payouts_confirmations
-- How deep included transactions are now.
UPDATE payouts p SET confirmations = t.confirmations, updated_at = now()
FROM unnest(%(ids)s::uuid[], %(confirmations)s::integer[]) AS t (id, confirmations)
WHERE p.id = t.id AND p.status = 'INCLUDED' AND p.confirmations IS DISTINCT FROM t.confirmations;

-- name: mark_payout_final
-- Included at the confirmation depth: CONFIRMED (whatever the receipt said), or REVERTED.
UPDATE payouts SET status = %(status)s, confirmations = %(confirmations)s, updated_at = now()
WHERE id = %(id)s AND status = 'INCLUDED'
RETURNING id;

-- name: confirm_payouts
-- mark_payout_final for successful payments, all those one watch pass found in one statement.
UPDATE payouts p SET status = 'CONFIRMED', confirmations = t.confirmations, updated_at = now()
FROM unnest(%(ids)s::uuid[], %(confirmations)s::integer[]) AS t (id, confirmations)
WHERE p.id = t.id AND p.status = 'INCLUDED'
RETURNING p.id;

-- name: mark_payout_reorged
-- The block that included the transaction is no longer canonical (money rule 6).
UPDATE payouts SET status = 'BROADCASTED', block_number = NULL, block_hash = NULL,
    mined_attempt_id = NULL, confirmations = NULL, updated_at = now()
WHERE id = %(id)s AND status = 'INCLUDED'
RETURNING id;

-- name: clear_attempt_receipts
-- Forget receipts of a reorged transaction's attempts.
UPDATE tx_attempts SET block_number = NULL, block_hash = NULL, receipt_status = NULL
WHERE payout_id = %(id)s;

-- name: note_nonce_used_elsewhere
-- First sighting of the payout's nonce used at depth by a transaction that is none of its
-- attempts; a second sighting at a later head is needed before it counts as proof.
UPDATE payouts SET nonce_used_elsewhere_at = %(head)s, updated_at = now()
WHERE id = %(id)s AND status = 'BROADCASTED' AND nonce_used_elsewhere_at IS NULL;

-- name: clear_nonce_used_elsewhere
-- A later look did not confirm the sighting (a lagging or inconsistent node).
UPDATE payouts SET nonce_used_elsewhere_at = NULL WHERE id = %(id)s AND nonce_used_elsewhere_at IS NOT NULL;

-- name: mark_payout_superseded
-- Another transaction used this one's nonce at depth; its withdrawals may be paid again.
UPDATE payouts SET status = 'SUPERSEDED', updated_at = now()
WHERE id = %(id)s AND status = 'BROADCASTED'
RETURNING id;

-- name: release_payout_items
-- The transaction will never pay these withdrawals (money rule 2 lets them move on).
UPDATE payout_items SET live = false WHERE payout_id = %(id)s AND live
RETURNING withdrawal_id;

-- name: request_payout_cancel
-- Ask the engine to replace a broadcast transaction by a 0-value self-send at its nonce.
UPDATE payouts SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
WHERE id = %(id)s AND status IN ('SIGNED', 'BROADCASTED')
RETURNING id;

-- name: payout_of_withdrawal
-- The live transaction paying a withdrawal, with its latest or mined attempt.
SELECT p.id, p.status, p.nonce, p.sender, p.block_number, p.confirmations, p.cancel_requested_at,
       (SELECT count(*) FROM payout_items i2 WHERE i2.payout_id = p.id AND i2.live) AS withdrawals,
       coalesce(m.tx_hash, l.tx_hash) AS tx_hash
FROM payout_items i
JOIN payouts p ON p.id = i.payout_id
LEFT JOIN tx_attempts m ON m.id = p.mined_attempt_id
LEFT JOIN LATERAL (SELECT tx_hash FROM tx_attempts WHERE payout_id = p.id ORDER BY id DESC LIMIT 1) l ON true
WHERE i.withdrawal_id = %(id)s AND i.live;

-- name: chain_work
-- What needs a nudge on a chain: withdrawals waiting for a wallet, and senders whose planned or
-- signed transactions have waited longer than a job normally takes (their job may have died).
SELECT 'validate' AS task, NULL AS sender FROM withdrawals
    WHERE chain = %(chain)s AND queue_status IS NOT NULL
    HAVING count(*) > 0
UNION ALL
SELECT DISTINCT 'sign', sender FROM payouts
    WHERE chain = %(chain)s AND status = 'PLANNED' AND created_at < now() - %(stale)s::interval
UNION ALL
SELECT DISTINCT 'broadcast', sender FROM payouts
    WHERE chain = %(chain)s AND status = 'SIGNED' AND updated_at < now() - %(stale)s::interval;

-- ---------------------------------------------------------------------------------------------
-- Job queue (procrastinate's tables), for the `payouts jobs` operator commands.

-- name: jobs_failed
-- Dead letters: jobs that failed their last try, latest failure first. procrastinate keeps no
-- exception text, only the status and a 'failed' event with its time; the error is in the log.
SELECT j.id, j.queue_name, j.task_name, j.args, j.attempts, e.failed_at
FROM procrastinate_jobs j
LEFT JOIN LATERAL (
    SELECT max(at) AS failed_at FROM procrastinate_events WHERE job_id = j.id AND type = 'failed'
) e ON true
WHERE j.status = 'failed'
ORDER BY e.failed_at DESC NULLS LAST, j.id DESC
LIMIT %(limit)s;

-- name: jobs_lock_one
-- One job, locked until commit so that its status cannot change under a retry.
SELECT id, task_name, status::text AS status, queueing_lock FROM procrastinate_jobs
WHERE id = %(id)s
FOR UPDATE;

-- name: jobs_waiting_with_queueing_lock
-- A job waiting with a queueing lock: only one may wait per lock.
SELECT id FROM procrastinate_jobs WHERE queueing_lock = %(queueing_lock)s AND status = 'todo';

-- name: jobs_retry
-- Queue a failed job again now, through procrastinate's own function (the one its
-- JobManager.retry_job_by_id calls): status todo, attempts + 1, a 'retried' event.
SELECT procrastinate_retry_job_v2(%(id)s, now(), NULL, NULL, NULL);

-- name: jobs_counts
-- Jobs per queue and status; "stalled" counts running jobs whose worker is gone or silent past
-- procrastinate's stalled-worker timeout (30 s): nothing will finish them.
SELECT j.queue_name, j.status::text AS status, count(*) AS jobs,
       count(*) FILTER (
           WHERE j.status = 'doing'
             AND (w.id IS NULL OR w.last_heartbeat < now() - interval '30 seconds')
       ) AS stalled
FROM procrastinate_jobs j
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
GROUP BY j.queue_name, j.status
ORDER BY j.queue_name, j.status;

-- name: payout_members
-- What a transaction pays, in the order its calldata lists it: the withdrawals of a payout, or
-- the hot wallets of a top-up (their id in place of the withdrawal's).
-- Each withdrawal is read by its primary key (LIMIT 1 keeps the planner from turning the lateral
-- into a join): with thousands of members a join hashes a full scan of `withdrawals`, whose cost
-- grows with the history (183 ms for 20,000 members among 1,000,000 withdrawals; 82 ms this way).
SELECT * FROM (
    SELECT i.payout_id, i.withdrawal_id, i.amount, w.to_address, w.created_at, w.id AS sort_id
    FROM payout_items i
    CROSS JOIN LATERAL (
        SELECT to_address, created_at, id FROM withdrawals WHERE id = i.withdrawal_id LIMIT 1
    ) w
    WHERE i.payout_id = ANY(%(ids)s::uuid[]) AND i.live
    UNION ALL
    SELECT t.payout_id, t.id, t.amount, t.wallet, t.created_at, t.id
    FROM topups t
    WHERE t.payout_id = ANY(%(ids)s::uuid[]) AND t.status = 'IN_FLIGHT'
) m
ORDER BY created_at, sort_id;

-- name: drop_planned_member
-- Take a withdrawal out of a transaction that has no nonce yet (its batch would revert with it).
DELETE FROM payout_items i USING payouts p
WHERE i.payout_id = %(payout_id)s AND i.withdrawal_id = %(withdrawal_id)s
  AND p.id = i.payout_id AND p.status = 'PLANNED';

-- name: rebuild_planned_payout
-- New calldata for a transaction without a nonce after members were taken out.
UPDATE payouts SET to_address = %(to_address)s, value = %(value)s, data = %(data)s, updated_at = now()
WHERE id = %(id)s AND status = 'PLANNED';

-- name: approval_in_flight
-- Whether a token approval of a sender is on its way (then no second one is made).
SELECT EXISTS (
    SELECT 1 FROM payouts WHERE chain = %(chain)s AND sender = %(sender)s AND asset = %(asset)s
    AND kind = 'approve' AND status IN ('PLANNED', 'SIGNED', 'BROADCASTED', 'INCLUDED')
) AS pending;

-- name: highest_live_nonce
-- The highest nonce a sender's transactions on their way hold (NULL when none is).
SELECT max(nonce) AS nonce FROM payouts
WHERE chain = %(chain)s AND sender = %(sender)s AND status IN ('SIGNED', 'BROADCASTED', 'INCLUDED');

-- ---------------------------------------------------------------------------------------------
-- Key vault (jobs/vault.py): sealed hot-wallet keys. Plain keys never reach these tables.

-- name: find_wallet
-- One of our wallets and how many sealed key versions it has.
SELECT w.id, w.key_ref, (SELECT count(*) FROM wallet_keys k WHERE k.wallet_id = w.id) AS sealed_versions
FROM hot_wallets w WHERE w.chain = %(chain)s AND w.address = %(address)s;

-- name: set_wallet_key_ref
-- Point a wallet at its key (a reference such as vault:<wallet id>, never the key).
UPDATE hot_wallets SET key_ref = %(key_ref)s WHERE id = %(id)s;

-- name: insert_wallet_key
-- Store a sealed key: the key sealed by a data key, the data key sealed by a master key.
INSERT INTO wallet_keys (wallet_id, key_version, nonce, sealed_key, sealed_data_key, provider, master_key_id)
VALUES (%(wallet_id)s, %(key_version)s, %(nonce)s, %(sealed_key)s, %(sealed_data_key)s, %(provider)s,
        %(master_key_id)s);

-- name: latest_wallet_key
-- The sealed key a signer opens: the wallet's latest version.
SELECT wallet_id, key_version, nonce, sealed_key, sealed_data_key, provider, master_key_id
FROM wallet_keys WHERE wallet_id = %(wallet_id)s
ORDER BY key_version DESC LIMIT 1;

-- name: wallet_keys_to_rewrap
-- Sealed keys whose data key is not yet wrapped by the current master key (rotation).
SELECT wallet_id, key_version, provider FROM wallet_keys
WHERE master_key_id <> %(master_key_id)s
ORDER BY wallet_id, key_version;

-- name: lock_wallet_key
-- Hold one sealed key while its data key is re-wrapped (signers still read the committed row).
SELECT sealed_data_key, master_key_id FROM wallet_keys
WHERE wallet_id = %(wallet_id)s AND key_version = %(key_version)s
FOR UPDATE;

-- name: rewrap_wallet_key
-- The same data key, wrapped by the new master key (compare-and-set on the old one).
UPDATE wallet_keys SET sealed_data_key = %(sealed_data_key)s, master_key_id = %(master_key_id)s, rewrapped_at = now()
WHERE wallet_id = %(wallet_id)s AND key_version = %(key_version)s AND master_key_id = %(old_master_key_id)s;

-- name: list_wallets_with_keys
-- Our wallets with where their key is (the scheme and the master key, never the key).
SELECT w.chain, w.address, w.role, w.enabled, w.key_ref, k.provider, k.master_key_id
FROM hot_wallets w
LEFT JOIN LATERAL (
    SELECT provider, master_key_id FROM wallet_keys
    WHERE wallet_id = w.id ORDER BY key_version DESC LIMIT 1
) k ON true
ORDER BY w.chain, w.role, w.address;

-- name: wallet_keys_by_master_key
-- How many sealed keys each master key wraps (rotation is done when only the new one is left).
SELECT provider, master_key_id, count(*) AS keys FROM wallet_keys GROUP BY 1, 2 ORDER BY 1, 2;

-- ---------------------------------------------------------------------------------------------
-- Account manager (jobs/accounts.py): hot-wallet balances, top-ups from the main account, alerts.

-- name: try_lock_accounts
-- One account check per chain at a time, for as long as the calling transaction lasts.
SELECT pg_try_advisory_xact_lock(hashtextextended('accounts:' || %(chain)s, 0)) AS locked;

-- name: topup_rules_of_chain
-- What hot wallets keep on a chain, per asset.
SELECT asset, threshold, target, daily_limit, main_alert_below FROM topup_rules WHERE chain = %(chain)s;

-- name: chain_wallets
-- A chain's enabled wallets: the main account and the hot wallets.
SELECT address, role FROM hot_wallets WHERE chain = %(chain)s AND enabled ORDER BY role, address;

-- name: topups_in_flight
-- Top-ups on their way (no second one goes to the same wallet and asset until they settle).
SELECT wallet, asset, amount FROM topups WHERE chain = %(chain)s AND status = 'IN_FLIGHT';

-- name: unmined_gas_of_sender
-- The gas a sender's transactions not yet mined may still burn (their gas limit, or `default_gas`
-- for those not signed yet): a balance check keeps it aside.
SELECT coalesce(sum(coalesce(gas_limit, %(default_gas)s)), 0) AS gas FROM payouts
WHERE chain = %(chain)s AND sender = %(sender)s AND status IN ('PLANNED', 'SIGNED', 'BROADCASTED');

-- name: topped_up_last_day
-- Per asset, what top-ups took from the main account in the last 24 hours (the daily limit).
SELECT asset, sum(amount) AS spent FROM topups
WHERE chain = %(chain)s AND status IN ('IN_FLIGHT', 'CONFIRMED') AND created_at > now() - interval '24 hours'
GROUP BY asset;

-- name: insert_topups
-- The wallets a payout of kind 'topup' pays, with their amounts and balances before.
INSERT INTO topups (payout_id, chain, asset, wallet, amount, balance_before)
SELECT %(payout_id)s, %(chain)s, %(asset)s, w, a, b
FROM unnest(%(wallets)s::text[], %(amounts)s::numeric[], %(balances_before)s::numeric[]) AS t (w, a, b);

-- name: fail_topups_of_payout
-- The top-ups of a transaction that will never be sent (it would revert).
UPDATE topups SET status = 'FAILED', note = %(note)s, updated_at = now()
WHERE payout_id = %(payout_id)s AND status = 'IN_FLIGHT';

-- name: save_wallet_balances
-- The balances the account manager read last.
INSERT INTO wallet_balances (chain, address, asset, balance, checked_at)
SELECT %(chain)s, a, s, b, now()
FROM unnest(%(addresses)s::text[], %(assets)s::text[], %(balances)s::numeric[]) AS t (a, s, b)
ON CONFLICT (chain, address, asset) DO UPDATE SET balance = EXCLUDED.balance, checked_at = EXCLUDED.checked_at;

-- name: claim_alert
-- Take the right to send an alert: granted when it was never sent or last sent more than
-- `interval_seconds` ago. Returns the previous send time so that a failed send can give it back.
WITH previous AS (
    SELECT last_sent_at FROM alert_state WHERE key = %(key)s
), upsert AS (
    INSERT INTO alert_state AS a (key, active, last_sent_at, message)
    VALUES (%(key)s, true, now(), %(message)s)
    ON CONFLICT (key) DO UPDATE SET active = true, last_sent_at = now(), message = EXCLUDED.message
    WHERE a.last_sent_at IS NULL OR a.last_sent_at < now() - make_interval(secs => %(interval_seconds)s)
    RETURNING last_sent_at
)
SELECT (SELECT last_sent_at FROM previous) AS previous_sent_at, upsert.last_sent_at AS claimed_at FROM upsert;

-- name: mark_alert_active
-- The condition holds (whether or not an alert is sent now): the metric shows it.
INSERT INTO alert_state (key, active, message) VALUES (%(key)s, true, %(message)s)
ON CONFLICT (key) DO UPDATE SET active = true, message = EXCLUDED.message;

-- name: give_back_alert
-- A send failed: the next check tries again (unless another worker has claimed it since).
UPDATE alert_state SET last_sent_at = %(previous_sent_at)s WHERE key = %(key)s AND last_sent_at = %(claimed_at)s;

-- name: clear_alert
-- The condition is over; returns the key when it was active.
UPDATE alert_state SET active = false WHERE key = %(key)s AND active RETURNING key;

-- name: accounts_overview
-- Each wallet's last-read balance against its chain's rule for the asset.
SELECT b.chain, w.role, b.address, b.asset, b.balance, b.checked_at,
       r.threshold, r.target, r.daily_limit, r.main_alert_below
FROM wallet_balances b
JOIN hot_wallets w ON w.chain = b.chain AND w.address = b.address
LEFT JOIN topup_rules r ON r.chain = b.chain AND r.asset = b.asset
WHERE %(chain)s::text IS NULL OR b.chain = %(chain)s
ORDER BY b.chain, w.role, b.address, b.asset;

-- name: topup_history
-- The latest top-ups with their transaction.
SELECT t.created_at, t.chain, t.asset, t.wallet, t.amount, t.balance_before, t.status, t.note,
       p.sender, (SELECT a.tx_hash FROM tx_attempts a
                  WHERE a.payout_id = p.id ORDER BY (a.id = p.mined_attempt_id) DESC, a.id DESC LIMIT 1) AS tx_hash
FROM topups t LEFT JOIN payouts p ON p.id = t.payout_id
WHERE %(chain)s::text IS NULL OR t.chain = %(chain)s
ORDER BY t.created_at DESC
LIMIT %(limit)s;

-- name: upsert_topup_rule
-- Set what hot wallets keep of an asset on a chain.
INSERT INTO topup_rules (chain, asset, threshold, target, daily_limit, main_alert_below, updated_at)
VALUES (%(chain)s, %(asset)s, %(threshold)s, %(target)s, %(daily_limit)s, %(main_alert_below)s, now())
ON CONFLICT (chain, asset) DO UPDATE SET
    threshold = EXCLUDED.threshold, target = EXCLUDED.target, daily_limit = EXCLUDED.daily_limit,
    main_alert_below = EXCLUDED.main_alert_below, updated_at = now();

-- name: list_topup_rules
SELECT chain, asset, threshold, target, daily_limit, main_alert_below, updated_at FROM topup_rules
ORDER BY chain, asset;

-- name: delete_topup_rule
DELETE FROM topup_rules WHERE chain = %(chain)s AND asset = %(asset)s RETURNING asset;

-- name: metrics_balances
-- Gauges for /metrics: last-read balances, active alerts, top-ups by status.
SELECT b.chain, w.role, b.address, b.asset, b.balance FROM wallet_balances b
JOIN hot_wallets w ON w.chain = b.chain AND w.address = b.address;

-- name: metrics_alerts
SELECT key, active FROM alert_state;

-- name: metrics_topups
SELECT chain, asset, status, count(*) AS n FROM topups GROUP BY chain, asset, status;
