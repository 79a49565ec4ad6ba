-- 0.2: batch control (status with counts, cancel, list, partial results, retry of failed jobs),
-- workflows inside a batch, per-key webhook secrets, replay protection and idempotent run.

-- Each key's own webhook secret (whsec_...), and the one before it while a rotation overlaps.
-- Keys made before 0.2 have none and sign callbacks with their API secret, as they did.
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN webhook_secret_previous TEXT;
ALTER TABLE api_keys ADD COLUMN webhook_previous_until REAL;
ALTER TABLE api_keys ADD COLUMN last_used_at REAL;

-- A job's outcome (succeeded, failed: its response is an error body, cancelled), how long it
-- took and how many tries it needed; for workflows, the client's id for it, the jobs it waits
-- for (a JSON array of their indexes) and its params with their references resolved, as run.
ALTER TABLE jobs ADD COLUMN outcome TEXT;
ALTER TABLE jobs ADD COLUMN finished_at REAL;
ALTER TABLE jobs ADD COLUMN duration_ms REAL;
ALTER TABLE jobs ADD COLUMN attempts INTEGER;
ALTER TABLE jobs ADD COLUMN job_key TEXT;
ALTER TABLE jobs ADD COLUMN depends_on TEXT;
ALTER TABLE jobs ADD COLUMN resolved_params TEXT;
UPDATE jobs
SET outcome = CASE
        WHEN json_valid(response) AND json_type(response, '$.errorCode') = 'integer'
             AND json_type(response, '$.message') = 'text' THEN 'failed'
        ELSE 'succeeded'
    END,
    attempts = 1
WHERE response IS NOT NULL;

-- Counts by outcome beside done_count, when the current run started, a cancel asked of a running
-- batch, the bytes its results hold (for the account's quota), how many jobs may run at once,
-- and where its callback goes (host:port, for fair delivery).
ALTER TABLE batches ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN cancelled_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN started_at REAL;
ALTER TABLE batches ADD COLUMN cancel_requested_at REAL;
ALTER TABLE batches ADD COLUMN result_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN concurrency INTEGER NOT NULL DEFAULT 1;
ALTER TABLE batches ADD COLUMN destination TEXT;
UPDATE batches
SET failed_count = (SELECT count(*) FROM jobs WHERE jobs.batch_id = batches.id AND jobs.outcome = 'failed'),
    result_bytes = (SELECT coalesce(sum(length(response)), 0) FROM jobs WHERE jobs.batch_id = batches.id),
    started_at = CASE WHEN status != 'queued' THEN created_at END;
DROP INDEX batches_runnable;
CREATE INDEX batches_runnable ON batches (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX batches_account ON batches (account, created_at);
CREATE INDEX batches_open ON batches (account) WHERE status IN ('queued', 'running');

ALTER TABLE deliveries ADD COLUMN destination TEXT;
CREATE INDEX deliveries_recent ON deliveries (batch_id, created_at);

-- Signed requests that changed state, until their date leaves the window: the same request
-- again changes nothing (a repeated run answers the batch it made).
CREATE TABLE seen_requests (
    key         TEXT NOT NULL,
    signature   TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    batch_id    TEXT,
    PRIMARY KEY (key, signature)
) WITHOUT ROWID;
CREATE INDEX seen_requests_expiry ON seen_requests (expires_at);

-- Idempotency-Key of run, per account: the same key answers the batch it made.
CREATE TABLE idempotency_keys (
    account      TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    batch_id     TEXT NOT NULL,
    expires_at   REAL NOT NULL,
    PRIMARY KEY (account, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
