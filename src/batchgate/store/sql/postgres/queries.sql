-- PostgreSQL queries, positional ($1...) for asyncpg. Every write that queues work calls
-- pg_notify in its own statement, so the notification is sent exactly when it commits.
-- Channels: batchgate_batches (a batch became runnable), batchgate_deliveries (a callback is due).

-- migrations ------------------------------------------------------------------

-- name: lock_migrations
-- Held to the end of the transaction: processes starting together migrate one after another.
SELECT pg_advisory_xact_lock(hashtext('batchgate.migrations'));

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY);

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version) VALUES ($1);

-- name: database_time
SELECT extract(epoch FROM clock_timestamp())::float8;

-- name: ping
SELECT 1;

-- name: insert_key
INSERT INTO api_keys (key, secret, account, created_at) VALUES ($1, $2, $3, $4);

-- name: get_key
SELECT key, secret, account, created_at, revoked_at FROM api_keys WHERE key = $1;

-- name: list_keys
SELECT key, secret, account, created_at, revoked_at FROM api_keys ORDER BY created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = $2 WHERE key = $1 AND revoked_at IS NULL RETURNING key;

-- name: insert_batch
-- The batch and all its jobs in one statement (one round trip, one commit); the foreign key is
-- checked at the end of the statement, when the batch row exists.
WITH batch AS (
    INSERT INTO batches (id, account, key, callback_url, job_count, status, run, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id
), new_jobs AS (
    INSERT INTO jobs (batch_id, idx, namespace, action, params)
    SELECT batch.id, j.ordinality - 1, j.namespace, j.action, j.params
    FROM batch, unnest($9::text[], $10::text[], $11::text[]) WITH ORDINALITY AS j (namespace, action, params)
)
SELECT pg_notify('batchgate_batches', id) FROM batch;

-- name: get_batch
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at
FROM batches
WHERE id = $1 AND account = $2 AND (expires_at IS NULL OR expires_at > $3);

-- name: job_results
SELECT namespace, action, params, response FROM jobs WHERE batch_id = $1 ORDER BY idx;

-- name: restart_batch
-- The jobs are cleared through the batch's RETURNING, so the batch row is locked first, in the
-- same order as record_jobs takes its locks: a restart and a record never deadlock. The callback
-- still waiting for the previous run is superseded by the next run's.
WITH batch AS (
    UPDATE batches
    SET status = 'queued', run = run + 1, done_count = 0, completed_at = NULL, expires_at = NULL,
        lease_owner = NULL, lease_token = NULL, lease_expires = NULL
    WHERE id = $1
    RETURNING id
), cleared AS (
    UPDATE jobs SET response = NULL FROM batch WHERE jobs.batch_id = batch.id
), superseded AS (
    UPDATE deliveries SET status = 'superseded', lease_token = NULL
    FROM batch WHERE deliveries.batch_id = batch.id AND deliveries.status = 'pending'
)
SELECT pg_notify('batchgate_batches', id) FROM batch;

-- name: insert_delivery
WITH delivery AS (
    INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at)
    SELECT $1, id, callback_url, 'pending', $3, $3 FROM batches WHERE id = $2
    RETURNING id
)
SELECT pg_notify('batchgate_deliveries', id) FROM delivery;

-- name: claim_batches
-- SKIP LOCKED: concurrent claimers pass over each other's rows instead of waiting or sharing;
-- FOR UPDATE rechecks the WHERE against the latest row, so a batch claimed a moment ago is left.
-- Returns each leased batch with the jobs still to run, as three arrays in job order.
WITH runnable AS (
    SELECT id FROM batches
    WHERE status <> 'complete' AND (status = 'queued' OR lease_expires < $2)
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE batches b
    SET status = 'running', lease_owner = $1, lease_expires = $4,
        lease_token = replace(gen_random_uuid()::text, '-', '')
    FROM runnable
    WHERE b.id = runnable.id
    RETURNING b.id, b.account, b.callback_url, b.run, b.done_count, b.job_count, b.lease_token, b.created_at
)
SELECT l.id, l.account, l.callback_url, l.run, l.done_count, l.job_count, l.lease_token,
       array_agg(j.namespace ORDER BY j.idx), array_agg(j.action ORDER BY j.idx),
       array_agg(j.params ORDER BY j.idx)
FROM leased l
JOIN jobs j ON j.batch_id = l.id AND j.idx >= l.done_count
GROUP BY l.id, l.account, l.callback_url, l.run, l.done_count, l.job_count, l.lease_token, l.created_at
ORDER BY l.created_at;

-- name: record_jobs
-- Fenced: nothing is written unless the lease token still matches. The job rows are reached only
-- through the batch's RETURNING, so the batch row is always locked before the job rows.
-- $5 holds the responses of jobs $3, $3 + 1, ...; no row back means the lease was lost.
WITH advanced AS (
    UPDATE batches SET done_count = $3::integer + cardinality($5::text[]), lease_expires = $4
    WHERE id = $1 AND lease_token = $2
    RETURNING id
)
UPDATE jobs SET response = r.response
FROM advanced, unnest($5::text[]) WITH ORDINALITY AS r (response, n)
WHERE jobs.batch_id = advanced.id AND jobs.idx = $3::integer + r.n::integer - 1
RETURNING jobs.idx;

-- name: complete_jobs
-- record_jobs for the batch's last jobs: also completes the batch and drops the lease, so the
-- same lease can never complete it twice, and queues the callback ($7, its id, when there is
-- one). One statement: one round trip, one commit. No row back means the lease was lost.
WITH completed AS (
    UPDATE batches
    SET done_count = $3::integer + cardinality($6::text[]), status = 'complete', completed_at = $4,
        expires_at = $5, lease_owner = NULL, lease_token = NULL, lease_expires = NULL
    WHERE id = $1 AND lease_token = $2
    RETURNING id, callback_url
), written AS (
    UPDATE jobs SET response = r.response
    FROM completed, unnest($6::text[]) WITH ORDINALITY AS r (response, n)
    WHERE jobs.batch_id = completed.id AND jobs.idx = $3::integer + r.n::integer - 1
), delivery AS (
    INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at)
    SELECT $7::text, id, callback_url, 'pending', $4, $4 FROM completed WHERE $7::text IS NOT NULL
    RETURNING id
)
SELECT completed.id, (SELECT pg_notify('batchgate_deliveries', delivery.id) FROM delivery)
FROM completed;

-- name: renew_leases
UPDATE batches SET lease_expires = $2 WHERE lease_token = ANY($1::text[]);

-- name: claim_deliveries
WITH due AS (
    SELECT id FROM deliveries
    WHERE status = 'pending' AND next_at <= $1
    ORDER BY next_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET next_at = $3, lease_token = replace(gen_random_uuid()::text, '-', '')
FROM due
WHERE d.id = due.id
RETURNING d.id, d.batch_id, d.url, d.body, d.attempts,
          (SELECT k.secret FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = d.batch_id),
          d.lease_token;

-- name: finish_attempt
WITH attempt AS (
    INSERT INTO attempts (delivery_id, number, at, status_code, error, duration_ms)
    VALUES ($1, $5, $6, $7, $8, $9)
)
UPDATE deliveries
SET status = $3, attempts = $5, next_at = coalesce($4, next_at), lease_token = NULL
WHERE id = $1 AND lease_token = $2;

-- name: next_delivery_at
SELECT min(next_at) FROM deliveries WHERE status = 'pending';

-- name: attempts_of_batch
SELECT a.delivery_id, a.number, a.at, a.status_code, a.error, a.duration_ms
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.batch_id = $1
ORDER BY a.at, a.number;

-- name: purge_batches
WITH purged AS (DELETE FROM batches WHERE expires_at <= $1 RETURNING 1)
SELECT count(*) FROM purged;
