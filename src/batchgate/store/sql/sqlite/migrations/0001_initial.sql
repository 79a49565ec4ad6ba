CREATE TABLE api_keys (
    key         TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    account     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);

CREATE TABLE batches (
    id            TEXT PRIMARY KEY,
    account       TEXT NOT NULL,
    key           TEXT NOT NULL,
    callback_url  TEXT,
    job_count     INTEGER NOT NULL,
    done_count    INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    run           INTEGER NOT NULL DEFAULT 1,
    created_at    REAL NOT NULL,
    completed_at  REAL,
    expires_at    REAL,
    lease_owner   TEXT,
    lease_token   TEXT,
    lease_expires REAL
);
CREATE INDEX batches_runnable ON batches (created_at) WHERE status != 'complete';
CREATE INDEX batches_expiry ON batches (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX batches_lease ON batches (lease_token);

CREATE TABLE jobs (
    batch_id   TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    namespace  TEXT NOT NULL,
    action     TEXT NOT NULL,
    params     TEXT NOT NULL,
    response   TEXT,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;

CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    body         BLOB NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    lease_token  TEXT,
    created_at   REAL NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_batch ON deliveries (batch_id);

CREATE TABLE attempts (
    delivery_id  TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    at           REAL NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  REAL NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
