-- name: insert_key
INSERT INTO api_keys (key, secret, account, created_at) VALUES (:key, :secret, :account, :created_at);

-- name: get_key
SELECT key, secret, account, created_at, revoked_at FROM api_keys WHERE key = :key;

-- name: list_keys
SELECT key, secret, account, created_at, revoked_at FROM api_keys ORDER BY created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = :now WHERE key = :key AND revoked_at IS NULL;

-- name: insert_batch
INSERT INTO batches (id, account, key, callback_url, job_count, status, run, created_at)
VALUES (:id, :account, :key, :callback_url, :job_count, :status, :run, :created_at);

-- name: insert_job
INSERT INTO jobs (batch_id, idx, namespace, action, params) VALUES (?, ?, ?, ?, ?);

-- name: get_batch
SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at
FROM batches
WHERE id = :id AND account = :account AND (expires_at IS NULL OR expires_at > :now);

-- name: job_results
SELECT namespace, action, params, response FROM jobs WHERE batch_id = :batch_id ORDER BY idx;

-- name: restart_batch
UPDATE batches
SET status = 'queued', run = run + 1, done_count = 0, completed_at = NULL, expires_at = NULL,
    lease_owner = NULL, lease_token = NULL, lease_expires = NULL
WHERE id = :id;

-- name: clear_responses
UPDATE jobs SET response = NULL WHERE batch_id = :id;

-- name: supersede_deliveries
-- A restart: the callback still waiting for the previous run is replaced by the next run's.
UPDATE deliveries SET status = 'superseded', lease_token = NULL WHERE batch_id = :id AND status = 'pending';

-- name: claim_batches
-- One statement leases the runnable batches (queued, or running with an expired lease), oldest
-- first. Each gets its own token: the claim's random prefix and the batch id.
UPDATE batches
SET status = 'running', lease_owner = :owner, lease_token = :claim || '-' || id, lease_expires = :until
WHERE id IN (
    SELECT id FROM batches
    WHERE status != 'complete' AND (status = 'queued' OR lease_expires < :now)
    ORDER BY created_at
    LIMIT :limit
)
RETURNING id, account, callback_url, run, lease_token, done_count, job_count, created_at;

-- name: remaining_jobs
SELECT namespace, action, params FROM jobs WHERE batch_id = :id AND idx >= :start ORDER BY idx;

-- name: advance_batch
UPDATE batches SET done_count = :done, lease_expires = :until
WHERE id = :id AND lease_token = :token;

-- name: record_response
UPDATE jobs SET response = ?3 WHERE batch_id = ?1 AND idx = ?2;

-- name: complete_batch
-- The last record: fenced like advance_batch, and it drops the lease, so it completes once.
UPDATE batches
SET status = 'complete', done_count = :done, completed_at = :now, expires_at = :expires_at,
    lease_owner = NULL, lease_token = NULL, lease_expires = NULL
WHERE id = :id AND lease_token = :token;

-- name: renew_lease
UPDATE batches SET lease_expires = :until WHERE lease_token = :token;

-- name: insert_delivery
INSERT INTO deliveries (id, batch_id, url, status, next_at, created_at)
SELECT :id, id, callback_url, 'pending', :now, :now FROM batches WHERE id = :batch_id;

-- name: due_deliveries
SELECT id FROM deliveries WHERE status = 'pending' AND next_at <= :now ORDER BY next_at LIMIT :limit;

-- name: lease_delivery
UPDATE deliveries SET next_at = :until, lease_token = :token
WHERE id = :id
RETURNING id, batch_id, url, body, attempts,
          (SELECT k.secret FROM batches b JOIN api_keys k ON k.key = b.key WHERE b.id = deliveries.batch_id);

-- name: insert_attempt
INSERT INTO attempts (delivery_id, number, at, status_code, error, duration_ms)
VALUES (:delivery_id, :number, :at, :status_code, :error, :duration_ms);

-- name: finish_attempt
UPDATE deliveries SET status = :status, attempts = :number, next_at = coalesce(:next_at, next_at),
                      lease_token = NULL
WHERE id = :id AND lease_token = :token;

-- name: next_delivery_at
SELECT min(next_at) FROM deliveries WHERE status = 'pending';

-- name: attempts_of_batch
SELECT a.delivery_id, a.number, a.at, a.status_code, a.error, a.duration_ms
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.batch_id = :batch_id
ORDER BY a.at, a.number;

-- name: purge_batches
DELETE FROM batches WHERE expires_at <= :now;
