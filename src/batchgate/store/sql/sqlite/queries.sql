-- SQLite queries, named parameters. Every write runs inside a transaction the store opens.

-- keys -------------------------------------------------------------------------

-- name: insert_key
INSERT INTO api_keys (key, secret, account, created_at, webhook_secret)
VALUES (:key, :secret, :account, :created_at, :webhook_secret);

-- name: get_key
SELECT key, secret, account, created_at, revoked_at, webhook_secret, webhook_secret_previous,
       webhook_previous_until, last_used_at
FROM api_keys WHERE key = :key;

-- name: list_keys
SELECT key, secret, account, created_at, revoked_at, webhook_secret, webhook_secret_previous,
       webhook_previous_until, last_used_at
FROM api_keys ORDER BY created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = :now WHERE key = :key AND revoked_at IS NULL;

-- name: update_webhook_secrets
UPDATE api_keys
SET webhook_secret = :webhook_secret, webhook_secret_previous = :webhook_secret_previous,
    webhook_previous_until = :webhook_previous_until
WHERE key = :key;

-- name: update_secrets
UPDATE api_keys
SET secret = :secret, webhook_secret = :webhook_secret, webhook_secret_previous = :webhook_secret_previous
WHERE key = :key;

-- replays and idempotency ------------------------------------------------------

-- name: note_request
INSERT INTO seen_requests (key, signature, expires_at, batch_id) VALUES (:key, :signature, :expires_at, :batch_id)
ON CONFLICT DO NOTHING;

-- name: seen_request
SELECT batch_id FROM seen_requests WHERE key = :key AND signature = :signature;

-- name: idempotency_key
SELECT fingerprint, batch_id FROM idempotency_keys WHERE account = :account AND key = :key;

-- name: insert_idempotency_key
INSERT INTO idempotency_keys (account, key, fingerprint, batch_id, expires_at)
VALUES (:account, :key, :fingerprint, :batch_id, :expires_at);

-- batches ----------------------------------------------------------------------

-- name: insert_batch
-- Queued, or (given a lease) running and leased to a worker of the process that accepted it.
INSERT INTO batches (id, account, key, callback_url, job_count, status, run, created_at, concurrency, destination,
                     started_at, lease_owner, lease_token, lease_expires, traceparent)
VALUES (:id, :account, :key, :callback_url, :job_count, :status, :run, :created_at, :concurrency, :destination,
        :started_at, :lease_owner, :lease_token, :lease_expires, :traceparent);

-- name: insert_job
INSERT INTO jobs (batch_id, idx, namespace, action, params, job_key, depends_on) VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: get_batch
-- The columns of a Batch, in the model's order (store.base.BATCH_COLUMNS).
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches
WHERE id = :id AND account = :account AND (expires_at IS NULL OR expires_at > :now);

-- name: list_batches
-- Newest first, from after a cursor (the created_at and id the previous page ended with).
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches
WHERE account = :account
  AND (expires_at IS NULL OR expires_at > :now)
  AND (:status IS NULL OR status = :status)
  AND (:before_at IS NULL OR created_at < :before_at OR (created_at = :before_at AND id < :before_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: job_results
SELECT namespace, action, coalesce(resolved_params, params), response, outcome
FROM jobs WHERE batch_id = :batch_id ORDER BY idx;

-- name: newest_deliveries
-- The newest delivery of each batch of a JSON array of ids: (batch id, status, attempts, next_at,
-- the last attempt's HTTP status).
SELECT d.batch_id, d.status, d.attempts, d.next_at,
       (SELECT a.status_code FROM attempts a WHERE a.delivery_id = d.id ORDER BY a.number DESC LIMIT 1)
FROM json_each(:batch_ids) ids
JOIN deliveries d ON d.rowid = (
    SELECT n.rowid FROM deliveries n WHERE n.batch_id = ids.value
    ORDER BY n.created_at DESC, n.rowid DESC LIMIT 1
);

-- name: usage
SELECT (SELECT count(*) FROM batches WHERE account = :account AND status IN ('queued', 'running')),
       (SELECT coalesce(sum(result_bytes), 0) FROM batches
        WHERE account = :account AND (expires_at IS NULL OR expires_at > :now));

-- name: restart_batch
UPDATE batches
SET status = 'queued', run = run + 1, done_count = 0, failed_count = 0, cancelled_count = 0,
    result_bytes = 0, started_at = NULL, completed_at = NULL, expires_at = NULL,
    cancel_requested_at = NULL, lease_owner = NULL, lease_token = NULL, lease_expires = NULL
WHERE id = :id;

-- name: clear_responses
UPDATE jobs
SET response = NULL, outcome = NULL, finished_at = NULL, duration_ms = NULL, attempts = NULL,
    resolved_params = NULL
WHERE batch_id = :id;

-- name: restart_failed
-- Only the jobs that failed or never ran run again: the others keep their results.
UPDATE batches
SET status = 'queued', run = run + 1,
    done_count = done_count - failed_count - cancelled_count, failed_count = 0, cancelled_count = 0,
    result_bytes = (SELECT coalesce(sum(length(response)), 0) FROM jobs
                    WHERE jobs.batch_id = batches.id AND jobs.outcome = 'succeeded'),
    started_at = NULL, completed_at = NULL, expires_at = NULL, cancel_requested_at = NULL,
    lease_owner = NULL, lease_token = NULL, lease_expires = NULL
WHERE id = :id AND failed_count + cancelled_count > 0;

-- name: clear_failed_responses
UPDATE jobs
SET response = NULL, outcome = NULL, finished_at = NULL, duration_ms = NULL, attempts = NULL,
    resolved_params = NULL
WHERE batch_id = :id AND outcome IN ('failed', 'cancelled');

-- name: supersede_deliveries
-- A restart: the callback still waiting for the previous run is replaced by the next run's.
UPDATE deliveries SET status = 'superseded', lease_token = NULL WHERE batch_id = :id AND status = 'pending';

-- name: cancel_unheld
-- A batch no worker holds (queued, or its lease expired) finishes as cancelled at once.
UPDATE batches
SET status = 'cancelled', completed_at = :now, expires_at = :expires_at,
    cancelled_count = cancelled_count + job_count - done_count, done_count = job_count,
    result_bytes = result_bytes + (job_count - done_count) * length(:cancelled),
    cancel_requested_at = coalesce(cancel_requested_at, :now),
    lease_owner = NULL, lease_token = NULL, lease_expires = NULL
WHERE id = :id AND status IN ('queued', 'running') AND (lease_token IS NULL OR lease_expires < :now);

-- name: cancel_pending_jobs
UPDATE jobs SET response = :cancelled, outcome = 'cancelled', finished_at = :now, attempts = 0
WHERE batch_id = :id AND response IS NULL;

-- name: request_cancel
-- A batch a worker holds: its worker stops it.
UPDATE batches SET cancel_requested_at = coalesce(cancel_requested_at, :now)
WHERE id = :id AND status = 'running';

-- the worker's side --------------------------------------------------------------

-- name: claim_batches
-- One statement leases the runnable batches (queued, or running with an expired lease), oldest
-- first. Each gets its own token: the claim's random prefix and the batch id. A batch whose next job
-- is in one of the namespaces in :skip (a JSON array: their upstream is full here) is passed over.
UPDATE batches
SET status = 'running', lease_owner = :owner, lease_token = :claim || '-' || id, lease_expires = :until,
    started_at = coalesce(started_at, :now)
WHERE id IN (
    SELECT b.id FROM batches b
    WHERE b.status IN ('queued', 'running') AND (b.status = 'queued' OR b.lease_expires < :now)
      AND (:skip = '[]' OR NOT EXISTS (
          SELECT 1 FROM jobs j
          WHERE j.batch_id = b.id
            AND j.idx = (SELECT min(idx) FROM jobs k WHERE k.batch_id = b.id AND k.response IS NULL)
            AND j.namespace IN (SELECT value FROM json_each(:skip))
      ))
    ORDER BY b.created_at
    LIMIT :limit
)
RETURNING id, account, callback_url, run, lease_token, job_count, concurrency,
          cancel_requested_at IS NOT NULL, traceparent, created_at;

-- name: lease_jobs
SELECT idx, namespace, action, params, job_key, depends_on, outcome FROM jobs WHERE batch_id = :id ORDER BY idx;

-- name: advance_batch
-- Fenced by the lease token: nothing is written for a lost lease.
UPDATE batches
SET done_count = done_count + :done, failed_count = failed_count + :failed,
    cancelled_count = cancelled_count + :cancelled, result_bytes = result_bytes + :bytes,
    lease_expires = :until
WHERE id = :id AND lease_token = :token
RETURNING cancel_requested_at IS NOT NULL;

-- name: record_job
-- Positional: it runs once per job, and a tuple binds faster than a dict.
UPDATE jobs SET response = ?, outcome = ?, finished_at = ?, duration_ms = ?, attempts = ?, resolved_params = ?
WHERE batch_id = ? AND idx = ?;

-- name: finish_batch
-- The last record, or the end of a cancelled batch: fenced like advance_batch, and it drops the
-- lease, so it finishes once.
UPDATE batches
SET status = :status, done_count = job_count, failed_count = failed_count + :failed,
    cancelled_count = cancelled_count + :cancelled + (job_count - done_count - :done),
    result_bytes = result_bytes + :bytes + (job_count - done_count - :done) * length(coalesce(:cancelled_body, '')),
    completed_at = :now, expires_at = :expires_at,
    lease_owner = NULL, lease_token = NULL, lease_expires = NULL
WHERE id = :id AND lease_token = :token;

-- name: renew_lease
UPDATE batches SET lease_expires = :until WHERE lease_token = :token
RETURNING CASE WHEN cancel_requested_at IS NOT NULL THEN id END;

-- the callback outbox -------------------------------------------------------------

-- name: insert_delivery
INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at, destination)
SELECT :id, id, callback_url, 'pending', :now, :now, destination FROM batches WHERE id = :batch_id;

-- name: insert_leased_delivery
-- A completed batch's callback handed to this process's delivery loop: leased as a claim leaves it
-- (next_at is the lease's end), and returned as lease_delivery returns it.
INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at, destination, lease_token)
SELECT :id, id, callback_url, 'pending', :until, :now, destination, :token FROM batches WHERE id = :batch_id
RETURNING id, batch_id, url, body, attempts, destination,
          (SELECT k.webhook_secret FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = :batch_id),
          (SELECT k.secret FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = :batch_id),
          (SELECT CASE WHEN k.webhook_previous_until > :now THEN k.webhook_secret_previous END
           FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = :batch_id),
          (SELECT b.created_at FROM batches b WHERE b.id = :batch_id);

-- name: recent_deliveries
SELECT created_at FROM deliveries WHERE batch_id = :batch_id AND created_at >= :since ORDER BY created_at;

-- name: due_deliveries
-- Oldest first, passing over the destinations this process has backed off or has full (a JSON
-- array of host:port, so the list is one parameter), and at most :per_destination to any one.
SELECT id FROM (
    SELECT id, next_at,
           row_number() OVER (PARTITION BY coalesce(destination, id) ORDER BY next_at) AS nth
    FROM deliveries
    WHERE status = 'pending' AND next_at <= :now
      AND (destination IS NULL OR destination NOT IN (SELECT value FROM json_each(:skip)))
)
WHERE nth <= :per_destination
ORDER BY next_at LIMIT :limit;

-- name: lease_delivery
UPDATE deliveries SET next_at = :until, lease_token = :token
WHERE id = :id
RETURNING id, batch_id, url, body, attempts, destination,
          (SELECT k.webhook_secret FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = deliveries.batch_id),
          (SELECT k.secret FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = deliveries.batch_id),
          (SELECT CASE WHEN k.webhook_previous_until > :now THEN k.webhook_secret_previous END
           FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = deliveries.batch_id),
          (SELECT b.created_at FROM batches b WHERE b.id = deliveries.batch_id);

-- name: insert_attempt
INSERT INTO attempts (delivery_id, number, at, status_code, error, duration_ms)
VALUES (:delivery_id, :number, :at, :status_code, :error, :duration_ms);

-- name: finish_attempt
UPDATE deliveries SET status = :status, attempts = :number, next_at = coalesce(:next_at, next_at),
                      lease_token = NULL
WHERE id = :id AND lease_token = :token;

-- name: postpone_delivery
UPDATE deliveries SET next_at = :until, lease_token = NULL WHERE id = :id AND lease_token = :token;

-- name: next_delivery_at
SELECT min(next_at) FROM deliveries WHERE status = 'pending';

-- name: attempts_of_batch
SELECT a.delivery_id, a.number, a.at, a.status_code, a.error, a.duration_ms
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.batch_id = :batch_id
ORDER BY a.at, a.number;

-- housekeeping ---------------------------------------------------------------------

-- name: purge_batches
DELETE FROM batches WHERE expires_at <= :now;

-- name: purge_requests
DELETE FROM seen_requests WHERE expires_at <= :now;

-- name: purge_idempotency_keys
DELETE FROM idempotency_keys WHERE expires_at <= :now;

-- the operator's view ----------------------------------------------------------------

-- name: find_batches
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches
WHERE (:account IS NULL OR account = :account)
  AND (:status IS NULL OR status = :status)
  AND (:since IS NULL OR created_at >= :since)
  AND (:before_at IS NULL OR created_at < :before_at OR (created_at = :before_at AND id < :before_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: find_batch
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at,
       failed_count, cancelled_count, started_at, expires_at, cancel_requested_at, concurrency
FROM batches WHERE id = :id;

-- name: job_views
SELECT idx, namespace, action, job_key, depends_on, coalesce(resolved_params, params), response, outcome,
       finished_at, duration_ms, attempts
FROM jobs WHERE batch_id = :batch_id ORDER BY idx;

-- name: deliveries_of_batch
SELECT d.id, d.batch_id, b.account, d.url, d.status, d.attempts, d.next_at, d.created_at
FROM deliveries d JOIN batches b ON b.id = d.batch_id
WHERE d.batch_id = :batch_id ORDER BY d.created_at, d.rowid;

-- name: failed_deliveries
SELECT d.id, d.batch_id, b.account, d.url, d.status, d.attempts, d.next_at, d.created_at
FROM deliveries d JOIN batches b ON b.id = d.batch_id
WHERE d.status IN ('failed', 'gone')
  AND (:before_at IS NULL OR d.created_at < :before_at OR (d.created_at = :before_at AND d.id < :before_id))
ORDER BY d.created_at DESC, d.id DESC
LIMIT :limit;

-- name: redeliver
-- The same webhook-id, one more try as soon as a deliverer takes it.
UPDATE deliveries SET status = 'pending', next_at = :now, lease_token = NULL
WHERE id = :id AND status IN ('failed', 'gone');

-- name: touch_key
UPDATE api_keys SET last_used_at = :now WHERE key = :key;

-- name: note_worker
INSERT INTO workers (id, role, host, pid, started_at, seen_at, holding)
VALUES (:id, :role, :host, :pid, :now, :now, :holding)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, holding = excluded.holding;

-- name: forget_worker
DELETE FROM workers WHERE id = :id;

-- name: forget_silent_workers
DELETE FROM workers WHERE seen_at < :since;

-- name: workers
SELECT id, role, host, pid, started_at, seen_at, holding FROM workers ORDER BY started_at;

-- name: audit
INSERT INTO audit_log (at, actor, action, target, detail) VALUES (:at, :actor, :action, :target, :detail);

-- name: audit_log
SELECT at, actor, action, target, detail FROM audit_log ORDER BY at DESC, rowid DESC LIMIT :limit;

-- name: overview
SELECT (SELECT count(*) FROM batches WHERE status = 'queued'),
       (SELECT count(*) FROM batches WHERE status = 'running'),
       (SELECT min(created_at) FROM batches WHERE status = 'queued'),
       (SELECT count(*) FROM deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM deliveries WHERE status IN ('failed', 'gone'));

-- name: jobs_per_minute
-- Jobs of the batches that finished in each of the last minutes (expires_at is completed_at plus
-- the results' lifetime, and it is indexed).
SELECT CAST(completed_at / 60 AS INTEGER) * 60 AS minute, sum(job_count)
FROM batches
WHERE expires_at >= :since_expiry AND completed_at >= :since
GROUP BY minute ORDER BY minute;

-- name: probe
-- A write that changes nothing, for the readiness check: it needs the write lock and a commit.
UPDATE schema_migrations SET version = version WHERE version = (SELECT max(version) FROM schema_migrations);
