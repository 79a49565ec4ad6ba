-- 0.2: what the operator's console shows. Every worker process says it is alive, and which
-- batches it holds, with its heartbeat; every action taken from the console or the admin API is
-- written to the audit log.
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL,
    holding     TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE audit_log (
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE INDEX batches_created ON batches (created_at);
CREATE INDEX deliveries_failed ON deliveries (created_at) WHERE status IN ('failed', 'gone');
