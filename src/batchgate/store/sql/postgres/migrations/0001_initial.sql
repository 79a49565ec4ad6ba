-- Times are Unix seconds in double precision, as SQLite's REAL. Every comparison is made against
-- a `now` the store passes in, read from the database server's clock (see PostgresStore's clock),
-- so tests can move time by hand. (This comment was corrected in 0.2; the schema is 0.1's.)
-- Job params and responses are text, not jsonb: they pass through byte for byte, never queried.

CREATE TABLE api_keys (
    key         text PRIMARY KEY,
    secret      text NOT NULL,
    account     text NOT NULL,
    created_at  double precision NOT NULL,
    revoked_at  double precision
);

-- Every recorded job updates its batch row (done_count, lease_expires): leave room on each page
-- so those updates stay HOT (none of the updated columns is indexed).
CREATE TABLE batches (
    id            text PRIMARY KEY,
    account       text NOT NULL,
    key           text NOT NULL,
    callback_url  text,
    job_count     integer NOT NULL,
    done_count    integer NOT NULL DEFAULT 0,
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'complete')),
    run           integer NOT NULL DEFAULT 1,
    created_at    double precision NOT NULL,
    completed_at  double precision,
    expires_at    double precision,
    lease_owner   text,
    lease_token   text,
    lease_expires double precision
) WITH (fillfactor = 50);
CREATE INDEX batches_runnable ON batches (created_at) WHERE status <> 'complete';
CREATE INDEX batches_expiry ON batches (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX batches_lease ON batches (lease_token);

-- Each job row is written once with its response: the spare room keeps that update on the page.
CREATE TABLE jobs (
    batch_id   text NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    namespace  text NOT NULL,
    action     text NOT NULL,
    params     text NOT NULL,
    response   text,
    PRIMARY KEY (batch_id, idx)
) WITH (fillfactor = 50);

CREATE TABLE deliveries (
    id           text PRIMARY KEY,
    batch_id     text NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    url          text NOT NULL,
    body         bytea NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'gone')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      double precision NOT NULL,
    lease_token  text,
    created_at   double precision NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_batch ON deliveries (batch_id);

CREATE TABLE attempts (
    delivery_id  text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number       integer NOT NULL,
    at           double precision NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  double precision NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
