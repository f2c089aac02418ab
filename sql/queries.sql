-- Named queries used by the application, loaded by db/queries.py.
-- Each block starts with "-- name: <name>" and a line saying what it is for.

-- name: authenticate
-- The client behind an API key (by its SHA-256), unless the key is revoked or the client disabled.
SELECT k.client_id, c.name AS client_name
FROM api_keys k JOIN api_clients c ON c.id = k.client_id
WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL AND c.disabled_at IS NULL;

-- name: is_own_wallet
-- Whether an address is one of our own wallets on a chain (a withdrawal to it would be a loop).
SELECT EXISTS (
    SELECT 1 FROM hot_wallets WHERE chain = %(chain)s AND address = %(address)s
) AS own;

-- name: insert_withdrawal
-- Create a withdrawal unless the client already used this idempotency key; returns no row then.
-- ON CONFLICT waits for a concurrent insert with the same key to commit, so duplicates that
-- race each other end with exactly one row.
INSERT INTO withdrawals (client_id, idempotency_key, request_hash, chain, asset, to_address, amount, reference)
VALUES (%(client_id)s, %(idempotency_key)s, %(request_hash)s, %(chain)s, %(asset)s, %(to_address)s,
        %(amount)s, %(reference)s)
ON CONFLICT (client_id, idempotency_key) DO NOTHING
RETURNING *;

-- name: get_withdrawal_by_idempotency_key
-- The withdrawal a client created with an idempotency key.
SELECT * FROM withdrawals WHERE client_id = %(client_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_withdrawal
-- One withdrawal of one client (another client's withdrawal is not found).
SELECT * FROM withdrawals WHERE id = %(id)s AND client_id = %(client_id)s;

-- name: list_withdrawals
-- A page of a client's withdrawals, newest first, after a (created_at, id) cursor; every filter
-- is optional (NULL means "any"). Served by ix_withdrawals_client_page.
SELECT * FROM withdrawals
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
SELECT id FROM withdrawals
WHERE chain = %(chain)s AND status = 'PENDING'
ORDER BY created_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

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
