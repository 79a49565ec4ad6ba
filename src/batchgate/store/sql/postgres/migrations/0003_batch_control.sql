-- 0.2: batch control (status with counts, cancel, list, partial results, retry of failed jobs),
-- workflows inside a batch, per-key webhook secrets, replay protection and idempotent run.

-- Each key's own webhook secret (whsec_...), and the one before it while a rotation overlaps.
-- Keys made before 0.2 have none and sign callbacks with their API secret, as they did.
ALTER TABLE api_keys
    ADD COLUMN webhook_secret text,
    ADD COLUMN webhook_secret_previous text,
    ADD COLUMN webhook_previous_until double precision,
    ADD COLUMN last_used_at double precision;

-- A job's outcome (succeeded, failed: its response is an error body, cancelled), how long it
-- took and how many tries it needed; for workflows, the client's id for it, the jobs it waits
-- for (a JSON array of their indexes) and its params with their references resolved, as run.
ALTER TABLE jobs
    ADD COLUMN outcome text CHECK (outcome IN ('succeeded', 'failed', 'cancelled')),
    ADD COLUMN finished_at double precision,
    ADD COLUMN duration_ms double precision,
    ADD COLUMN attempts integer,
    ADD COLUMN job_key text,
    ADD COLUMN depends_on text,
    ADD COLUMN resolved_params text;
UPDATE jobs
SET outcome = CASE
        WHEN jsonb_typeof(response::jsonb -> 'errorCode') = 'number'
             AND jsonb_typeof(response::jsonb -> 'message') = 'string' THEN 'failed'
        ELSE 'succeeded'
    END,
    attempts = 1
WHERE response IS NOT NULL;

-- Counts by outcome beside done_count, when the current run started, a cancel asked of a running
-- batch, the bytes its results hold (for the account's quota), how many jobs may run at once,
-- and where its callback goes (host:port, for fair delivery).
ALTER TABLE batches DROP CONSTRAINT batches_status_check;
ALTER TABLE batches
    ADD CONSTRAINT batches_status_check CHECK (status IN ('queued', 'running', 'complete', 'cancelled')),
    ADD COLUMN failed_count integer NOT NULL DEFAULT 0,
    ADD COLUMN cancelled_count integer NOT NULL DEFAULT 0,
    ADD COLUMN started_at double precision,
    ADD COLUMN cancel_requested_at double precision,
    ADD COLUMN result_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN concurrency integer NOT NULL DEFAULT 1,
    ADD COLUMN destination text;
UPDATE batches b
SET failed_count = (SELECT count(*) FROM jobs WHERE jobs.batch_id = b.id AND jobs.outcome = 'failed'),
    result_bytes = (SELECT coalesce(sum(octet_length(response)), 0) FROM jobs WHERE jobs.batch_id = b.id),
    started_at = CASE WHEN status <> 'queued' THEN created_at END;
DROP INDEX batches_runnable;
CREATE INDEX batches_runnable ON batches (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX batches_account ON batches (account, created_at);
CREATE INDEX batches_open ON batches (account) WHERE status IN ('queued', 'running');

ALTER TABLE deliveries ADD COLUMN destination text;
CREATE INDEX deliveries_recent ON deliveries (batch_id, created_at);

-- Signed requests that changed state, until their date leaves the window: the same request
-- again changes nothing (a repeated run answers the batch it made).
CREATE TABLE seen_requests (
    key         text NOT NULL,
    signature   text NOT NULL,
    expires_at  double precision NOT NULL,
    batch_id    text,
    PRIMARY KEY (key, signature)
);
CREATE INDEX seen_requests_expiry ON seen_requests (expires_at);

-- Idempotency-Key of run, per account: the same key answers the batch it made.
CREATE TABLE idempotency_keys (
    account      text NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    batch_id     text NOT NULL,
    expires_at   double precision NOT NULL,
    PRIMARY KEY (account, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
