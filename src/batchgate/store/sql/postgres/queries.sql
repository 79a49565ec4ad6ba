-- PostgreSQL queries, positional ($1...) for asyncpg. No write notifies: PostgreSQL makes the
-- commits of all notifying transactions wait for each other, so the store sends a write's
-- notification once it has committed, many at a time (`notify`, and `Notifier` in postgres.py).
-- Channels: batchgate_batches (a batch became runnable), batchgate_deliveries (a callback is due),
-- batchgate_cancels (a client asked to cancel a running batch; the payload is its id).

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

-- name: autovacuum_on
SELECT current_setting('autovacuum')::bool;

-- name: notify
-- Writes' notifications, sent after they committed: channel $1[i], payload $2[i]. Committed without
-- waiting for the flush to disk (set_config is SET LOCAL): the transaction writes nothing a crash
-- must keep, and so holds PostgreSQL's notification lock only for a moment.
SELECT set_config('synchronous_commit', 'off', true), pg_notify(n.channel, n.payload)
FROM unnest($1::text[], $2::text[]) AS n (channel, payload);

-- keys -------------------------------------------------------------------------

-- name: insert_key
INSERT INTO api_keys (key, secret, account, created_at, webhook_secret) VALUES ($1, $2, $3, $4, $5);

-- name: get_key
SELECT key, secret, account, created_at, revoked_at, webhook_secret, webhook_secret_previous,
       webhook_previous_until, last_used_at
FROM api_keys WHERE key = $1;

-- name: list_keys
SELECT key, secret, account, created_at, revoked_at, webhook_secret, webhook_secret_previous,
       webhook_previous_until, last_used_at
FROM api_keys ORDER BY created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = $2 WHERE key = $1 AND revoked_at IS NULL RETURNING key;

-- name: update_webhook_secrets
UPDATE api_keys SET webhook_secret = $2, webhook_secret_previous = $3, webhook_previous_until = $4
WHERE key = $1;

-- name: update_secrets
UPDATE api_keys SET secret = $2, webhook_secret = $3, webhook_secret_previous = $4 WHERE key = $1;

-- replays and idempotency ------------------------------------------------------

-- name: note_request
INSERT INTO seen_requests (key, signature, expires_at, batch_id) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING 1;

-- name: seen_request
SELECT batch_id FROM seen_requests WHERE key = $1 AND signature = $2;

-- name: claim_idempotency_key
-- A concurrent claim of the same key waits for this one to commit, then inserts nothing.
INSERT INTO idempotency_keys (account, key, fingerprint, batch_id, expires_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING 1;

-- name: idempotency_key
SELECT fingerprint, batch_id FROM idempotency_keys WHERE account = $1 AND key = $2;

-- batches ----------------------------------------------------------------------

-- name: insert_batch
-- The batch, all its jobs and (given $16, the request's key) the note that its signed request
-- made it, in one statement: one round trip, one commit. When the same signed request was noted
-- before, nothing is inserted and no row comes back. The jobs' foreign key is checked at the end
-- of the statement, when the batch row exists. Given a lease ($20, $21, $22: owner, token, until),
-- the batch is written running and leased to a worker of the process that accepted it (no other
-- worker need hear of it: none may take it). $23: the traceparent of the run's span, if traced.
WITH seen AS (
    INSERT INTO seen_requests (key, signature, expires_at, batch_id)
    SELECT $16, $17, $18, $1 WHERE $16::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
), batch AS (
    INSERT INTO batches (id, account, key, callback_url, job_count, status, run, created_at, concurrency,
                         destination, started_at, lease_owner, lease_token, lease_expires, traceparent)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $19, $20, $21, $22, $23
    WHERE $16::text IS NULL OR EXISTS (SELECT 1 FROM seen)
    RETURNING id
), new_jobs AS (
    INSERT INTO jobs (batch_id, idx, namespace, action, params, job_key, depends_on)
    SELECT batch.id, j.ordinality - 1, j.namespace, j.action, j.params, j.job_key, j.depends_on
    FROM batch, unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
        WITH ORDINALITY AS j (namespace, action, params, job_key, depends_on)
)
SELECT id FROM batch;

-- name: get_batch
-- The columns of a Batch, in the model's order (store.base.BATCH_COLUMNS).
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches
WHERE id = $1 AND account = $2 AND (expires_at IS NULL OR expires_at > $3);

-- name: list_batches
-- Newest first, from after a cursor (the created_at and id the previous page ended with).
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches
WHERE account = $1
  AND (expires_at IS NULL OR expires_at > $2)
  AND ($3::text IS NULL OR status = $3)
  AND ($5::float8 IS NULL OR (created_at, id) < ($5, $6))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- name: job_results
SELECT namespace, action, coalesce(resolved_params, params), response, outcome
FROM jobs WHERE batch_id = $1 ORDER BY idx;

-- name: newest_deliveries
-- The newest delivery of each batch of an array of ids: (batch id, status, attempts, next_at, the
-- last attempt's HTTP status).
SELECT DISTINCT ON (d.batch_id) d.batch_id, d.status, d.attempts, d.next_at,
       (SELECT a.status_code FROM attempts a WHERE a.delivery_id = d.id ORDER BY a.number DESC LIMIT 1)
FROM deliveries d WHERE d.batch_id = ANY($1::text[])
ORDER BY d.batch_id, d.created_at DESC, d.id DESC;

-- name: usage
SELECT (SELECT count(*) FROM batches WHERE account = $1 AND status IN ('queued', 'running')),
       (SELECT coalesce(sum(result_bytes), 0) FROM batches
        WHERE account = $1 AND (expires_at IS NULL OR expires_at > $2));

-- name: restart_batch
-- ($2, $3, $4: the signed request, noted in the same statement; $5: failed jobs only.)
-- The jobs are changed through the batch's RETURNING, so the batch row is locked first, in the
-- same order as record_jobs takes its locks: a restart and a record never deadlock. The callback
-- still waiting for the previous run is superseded by the next run's. Answers (request noted or
-- none given, batch restarted).
WITH seen AS (
    INSERT INTO seen_requests (key, signature, expires_at, batch_id)
    SELECT $2, $3, $4, $1 WHERE $2::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
), batch AS (
    UPDATE batches
    SET status = 'queued', run = run + 1,
        done_count = CASE WHEN $5 THEN done_count - failed_count - cancelled_count ELSE 0 END,
        failed_count = 0, cancelled_count = 0,
        result_bytes = CASE WHEN $5 THEN (SELECT coalesce(sum(octet_length(response)), 0) FROM jobs
                                          WHERE jobs.batch_id = batches.id AND jobs.outcome = 'succeeded')
                            ELSE 0 END,
        started_at = NULL, completed_at = NULL, expires_at = NULL, cancel_requested_at = NULL,
        lease_owner = NULL, lease_token = NULL, lease_expires = NULL
    WHERE id = $1
      AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM seen))
      AND (NOT $5 OR failed_count + cancelled_count > 0)
    RETURNING id
), cleared AS (
    UPDATE jobs
    SET response = NULL, outcome = NULL, finished_at = NULL, duration_ms = NULL, attempts = NULL,
        resolved_params = NULL
    FROM batch
    WHERE jobs.batch_id = batch.id AND (NOT $5 OR jobs.outcome IN ('failed', 'cancelled'))
), superseded AS (
    UPDATE deliveries SET status = 'superseded', lease_token = NULL
    FROM batch WHERE deliveries.batch_id = batch.id AND deliveries.status = 'pending'
)
SELECT $2::text IS NULL OR EXISTS (SELECT 1 FROM seen), EXISTS (SELECT 1 FROM batch);

-- name: insert_delivery
-- ($4, $5, $6: the signed request, noted in the same statement.) Answers (request noted or none
-- given, delivery queued).
WITH seen AS (
    INSERT INTO seen_requests (key, signature, expires_at, batch_id)
    SELECT $4, $5, $6, $2 WHERE $4::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
), delivery AS (
    INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at, destination)
    SELECT $1, id, callback_url, 'pending', $3, $3, destination FROM batches
    WHERE id = $2 AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM seen))
    RETURNING id
)
SELECT $4::text IS NULL OR EXISTS (SELECT 1 FROM seen), EXISTS (SELECT 1 FROM delivery);

-- name: recent_deliveries
SELECT created_at FROM deliveries WHERE batch_id = $1 AND created_at >= $2 ORDER BY created_at;

-- name: cancel_unheld
-- A batch no worker holds (queued, or its lease expired) finishes as cancelled at once: every job
-- not yet run is answered $2, and (given $5) its callback is queued.
WITH batch AS (
    UPDATE batches
    SET status = 'cancelled', completed_at = $3, expires_at = $4,
        cancelled_count = cancelled_count + job_count - done_count, done_count = job_count,
        result_bytes = result_bytes + (job_count - done_count) * octet_length($2),
        cancel_requested_at = coalesce(cancel_requested_at, $3),
        lease_owner = NULL, lease_token = NULL, lease_expires = NULL
    WHERE id = $1 AND status IN ('queued', 'running') AND (lease_token IS NULL OR lease_expires < $3)
    RETURNING id, callback_url, destination
), cancelled AS (
    UPDATE jobs SET response = $2, outcome = 'cancelled', finished_at = $3, attempts = 0
    FROM batch WHERE jobs.batch_id = batch.id AND jobs.response IS NULL
), delivery AS (
    INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at, destination)
    SELECT $5::text, id, callback_url, 'pending', $3, $3, destination FROM batch WHERE $5::text IS NOT NULL
    RETURNING id
)
SELECT id, EXISTS (SELECT 1 FROM delivery) FROM batch;

-- name: request_cancel
-- A batch a worker holds: its worker stops it, told at once through batchgate_cancels.
UPDATE batches SET cancel_requested_at = coalesce(cancel_requested_at, $2)
WHERE id = $1 AND status = 'running'
RETURNING id;

-- the worker's side --------------------------------------------------------------

-- name: claim_batches
-- SKIP LOCKED: concurrent claimers pass over each other's rows instead of waiting or sharing;
-- FOR UPDATE rechecks the WHERE against the latest row, so a batch claimed a moment ago is left.
-- Returns each leased batch with all its jobs, as arrays in job order. A batch whose next job is in
-- one of the namespaces in $5 (their upstream is full in this process) is passed over.
WITH runnable AS (
    SELECT b.id FROM batches b
    WHERE b.status IN ('queued', 'running') AND (b.status = 'queued' OR b.lease_expires < $2)
      AND (cardinality($5::text[]) = 0 OR NOT EXISTS (
          SELECT 1 FROM jobs j
          WHERE j.batch_id = b.id
            AND j.idx = (SELECT min(idx) FROM jobs k WHERE k.batch_id = b.id AND k.response IS NULL)
            AND j.namespace = ANY($5::text[])
      ))
    ORDER BY b.created_at
    LIMIT $3
    FOR UPDATE OF b SKIP LOCKED
), leased AS (
    UPDATE batches b
    SET status = 'running', lease_owner = $1, lease_expires = $4,
        lease_token = replace(gen_random_uuid()::text, '-', ''), started_at = coalesce(b.started_at, $2)
    FROM runnable
    WHERE b.id = runnable.id
    RETURNING b.id, b.account, b.callback_url, b.run, b.lease_token, b.job_count, b.concurrency,
              b.cancel_requested_at IS NOT NULL AS cancel_requested, b.traceparent, b.created_at
)
SELECT l.id, l.account, l.callback_url, l.run, l.lease_token, l.job_count, l.concurrency, l.cancel_requested,
       l.traceparent, array_agg(j.idx ORDER BY j.idx), array_agg(j.namespace ORDER BY j.idx),
       array_agg(j.action ORDER BY j.idx), array_agg(j.params ORDER BY j.idx),
       array_agg(j.job_key ORDER BY j.idx), array_agg(j.depends_on ORDER BY j.idx),
       array_agg(j.outcome ORDER BY j.idx)
FROM leased l
JOIN jobs j ON j.batch_id = l.id
GROUP BY l.id, l.account, l.callback_url, l.run, l.lease_token, l.job_count, l.concurrency,
         l.cancel_requested, l.traceparent, l.created_at
ORDER BY l.created_at;

-- name: record_jobs
-- Fenced: nothing is written unless the lease token still matches. The job rows are reached only
-- through the batch's RETURNING, so the batch row is always locked before the job rows.
-- $3..$6 add to the batch's counts; $8.. are the finished jobs, one array per column. No row back
-- means the lease was lost; the row says whether the client asked to cancel the batch.
WITH advanced AS (
    UPDATE batches
    SET done_count = done_count + $3, failed_count = failed_count + $4,
        cancelled_count = cancelled_count + $5, result_bytes = result_bytes + $6, lease_expires = $7
    WHERE id = $1 AND lease_token = $2
    RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested
), written AS (
    UPDATE jobs
    SET response = r.response, outcome = r.outcome, finished_at = r.finished_at,
        duration_ms = r.duration_ms, attempts = r.attempts, resolved_params = r.resolved_params
    FROM advanced, unnest($8::int[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::int[],
                          $14::text[]) AS r (idx, response, outcome, finished_at, duration_ms, attempts,
                                             resolved_params)
    WHERE jobs.batch_id = advanced.id AND jobs.idx = r.idx
)
SELECT cancel_requested FROM advanced;

-- name: finish_batch
-- The last record, or the end of a cancelled batch ($16, the body every job still without a
-- response gets): fenced like record_jobs, and it drops the lease, so it finishes once; given
-- $17, it queues the callback: given $19 and $20 (a token, until when), leased to this process's
-- delivery loop and returned as claim_deliveries returns it. No row back means the lease was lost.
WITH finished AS (
    UPDATE batches
    SET status = $15, failed_count = failed_count + $4,
        cancelled_count = cancelled_count + $5 + (job_count - done_count - $3),
        result_bytes = result_bytes + $6 + (job_count - done_count - $3) * octet_length(coalesce($16, '')),
        done_count = job_count, completed_at = $7, expires_at = $18,
        lease_owner = NULL, lease_token = NULL, lease_expires = NULL
    WHERE id = $1 AND lease_token = $2
    RETURNING id, callback_url, destination, key, created_at
), written AS (
    UPDATE jobs
    SET response = r.response, outcome = r.outcome, finished_at = r.finished_at,
        duration_ms = r.duration_ms, attempts = r.attempts, resolved_params = r.resolved_params
    FROM finished, unnest($8::int[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::int[],
                          $14::text[]) AS r (idx, response, outcome, finished_at, duration_ms, attempts,
                                             resolved_params)
    WHERE jobs.batch_id = finished.id AND jobs.idx = r.idx
), cancelled AS (
    -- not the rows `written` updates: one statement may change a row only once
    UPDATE jobs SET response = $16, outcome = 'cancelled', finished_at = $7, attempts = 0
    FROM finished
    WHERE $16::text IS NOT NULL AND jobs.batch_id = finished.id AND jobs.response IS NULL
      AND jobs.idx <> ALL($8::int[])
), delivery AS (
    INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at, destination, lease_token)
    SELECT $17::text, id, callback_url, 'pending', coalesce($20::float8, $7), $7, destination, $19::text
    FROM finished WHERE $17::text IS NOT NULL
    RETURNING id, batch_id, url, body, attempts, destination
)
SELECT finished.id, d.id, d.batch_id, d.url, d.body, d.attempts, d.destination, k.webhook_secret, k.secret,
       CASE WHEN k.webhook_previous_until > $7 THEN k.webhook_secret_previous END, finished.created_at
FROM finished
LEFT JOIN api_keys k ON k.key = finished.key
LEFT JOIN delivery d ON $19::text IS NOT NULL;

-- name: renew_leases
-- Answers the batches among them whose client asked to cancel them.
UPDATE batches SET lease_expires = $2 WHERE lease_token = ANY($1::text[])
RETURNING CASE WHEN cancel_requested_at IS NOT NULL THEN id END;

-- the callback outbox -------------------------------------------------------------

-- name: claim_deliveries
-- Oldest first, passing over the destinations this process has backed off or has full ($4), and
-- at most $5 to any one destination. (FOR UPDATE does not go with a window function: the
-- candidates are chosen first, then locked.)
WITH candidates AS (
    SELECT id FROM (
        SELECT id, next_at,
               row_number() OVER (PARTITION BY coalesce(destination, id) ORDER BY next_at) AS nth
        FROM deliveries
        WHERE status = 'pending' AND next_at <= $1
          AND (destination IS NULL OR destination <> ALL($4::text[]))
    ) ranked
    WHERE nth <= $5
    ORDER BY next_at
    LIMIT $2
), due AS (
    SELECT id FROM deliveries
    WHERE id IN (SELECT id FROM candidates) AND status = 'pending' AND next_at <= $1
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET next_at = $3, lease_token = replace(gen_random_uuid()::text, '-', '')
FROM due, batches b, api_keys k
WHERE d.id = due.id AND b.id = d.batch_id AND k.key = b.key
RETURNING d.id, d.batch_id, d.url, d.body, d.attempts, d.destination, k.webhook_secret, k.secret,
          CASE WHEN k.webhook_previous_until > $1 THEN k.webhook_secret_previous END, b.created_at,
          d.lease_token;

-- name: finish_attempt
WITH attempt AS (
    INSERT INTO attempts (delivery_id, number, at, status_code, error, duration_ms)
    VALUES ($1, $5, $6, $7, $8, $9)
)
UPDATE deliveries
SET status = $3, attempts = $5, next_at = coalesce($4, next_at), lease_token = NULL
WHERE id = $1 AND lease_token = $2;

-- name: postpone_delivery
UPDATE deliveries SET next_at = $3, lease_token = NULL WHERE id = $1 AND lease_token = $2;

-- name: next_delivery_at
SELECT min(next_at) FROM deliveries WHERE status = 'pending';

-- name: attempts_of_batch
SELECT a.delivery_id, a.number, a.at, a.status_code, a.error, a.duration_ms
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.batch_id = $1
ORDER BY a.at, a.number;

-- housekeeping ---------------------------------------------------------------------

-- name: purge
-- Expired batches (answers how many), and the replay and idempotency records whose time has passed.
WITH requests AS (
    DELETE FROM seen_requests WHERE expires_at <= $1
), idempotency AS (
    DELETE FROM idempotency_keys WHERE expires_at <= $1
), purged AS (
    DELETE FROM batches WHERE expires_at <= $1 RETURNING 1
)
SELECT count(*) FROM purged;

-- the operator's view ----------------------------------------------------------------

-- name: find_batches
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches
WHERE ($1::text IS NULL OR account = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::float8 IS NULL OR created_at >= $3)
  AND ($5::float8 IS NULL OR (created_at, id) < ($5, $6))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- name: find_batch
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches WHERE id = $1;

-- name: job_views
SELECT idx, namespace, action, job_key, depends_on, coalesce(resolved_params, params), response, outcome,
       finished_at, duration_ms, attempts
FROM jobs WHERE batch_id = $1 ORDER BY idx;

-- name: deliveries_of_batch
SELECT d.id, d.batch_id, b.account, d.url, d.status, d.attempts, d.next_at, d.created_at
FROM deliveries d JOIN batches b ON b.id = d.batch_id
WHERE d.batch_id = $1 ORDER BY d.created_at, d.id;

-- name: failed_deliveries
SELECT d.id, d.batch_id, b.account, d.url, d.status, d.attempts, d.next_at, d.created_at
FROM deliveries d JOIN batches b ON b.id = d.batch_id
WHERE d.status IN ('failed', 'gone') AND ($2::float8 IS NULL OR (d.created_at, d.id) < ($2, $3))
ORDER BY d.created_at DESC, d.id DESC
LIMIT $1;

-- name: redeliver
-- The same webhook-id, one more try as soon as a deliverer takes it.
WITH delivery AS (
    UPDATE deliveries SET status = 'pending', next_at = $2, lease_token = NULL
    WHERE id = $1 AND status IN ('failed', 'gone')
    RETURNING id
)
SELECT id FROM delivery;

-- name: touch_key
UPDATE api_keys SET last_used_at = $2 WHERE key = $1;

-- name: note_worker
INSERT INTO workers (id, role, host, pid, started_at, seen_at, holding) VALUES ($1, $2, $3, $4, $6, $6, $5)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, holding = excluded.holding;

-- name: forget_worker
DELETE FROM workers WHERE id = $1;

-- name: workers
-- The live ones; the others, silent since $1, are forgotten in the same statement.
WITH forgotten AS (DELETE FROM workers WHERE seen_at < $1)
SELECT id, role, host, pid, started_at, seen_at, holding FROM workers WHERE seen_at >= $1 ORDER BY started_at;

-- name: audit
INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5);

-- name: audit_log
SELECT at, actor, action, target, detail FROM audit_log ORDER BY at DESC LIMIT $1;

-- name: overview
SELECT (SELECT count(*) FROM batches WHERE status = 'queued'),
       (SELECT count(*) FROM batches WHERE status = 'running'),
       (SELECT min(created_at) FROM batches WHERE status = 'queued'),
       (SELECT count(*) FROM deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM deliveries WHERE status IN ('failed', 'gone'));

-- name: jobs_per_minute
-- Jobs of the batches that finished in each of the last minutes (expires_at is completed_at plus
-- the results' lifetime, and it is indexed).
SELECT floor(completed_at / 60) * 60 AS minute, sum(job_count)::integer
FROM batches
WHERE expires_at >= $2 AND completed_at >= $1
GROUP BY minute ORDER BY minute;

-- name: probe
-- A write that changes nothing, for the readiness check: it needs a transaction id and a commit.
UPDATE schema_migrations SET version = version WHERE version = (SELECT max(version) FROM schema_migrations);
