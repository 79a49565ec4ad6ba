-- 0.2: what the operator's console shows. Every worker process says it is alive, and which
-- batches it holds, with its heartbeat; every action taken from the console or the admin API is
-- written to the audit log.
CREATE TABLE workers (
    id          text PRIMARY KEY,
    role        text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  double precision NOT NULL,
    seen_at     double precision NOT NULL,
    holding     text NOT NULL DEFAULT '[]'
);

CREATE TABLE audit_log (
    at      double precision NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    detail  text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE INDEX batches_created ON batches (created_at);
CREATE INDEX deliveries_failed ON deliveries (created_at) WHERE status IN ('failed', 'gone');
