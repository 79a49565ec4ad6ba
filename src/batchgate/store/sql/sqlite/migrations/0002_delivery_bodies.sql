-- 0.2: a callback reads its batch's results when it is sent, instead of carrying a copy of them,
-- so a batch's results are stored once however often they are reposted. `body` stays for the
-- deliveries queued before; new ones leave it NULL. A restart now supersedes the callback still
-- waiting for the run before it ('superseded'). SQLite cannot drop a NOT NULL, so the table is
-- rebuilt (foreign keys are off while migrations run, and checked before they commit).
CREATE TABLE deliveries_new (
    id           TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    body         BLOB,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    lease_token  TEXT,
    created_at   REAL NOT NULL
);
INSERT INTO deliveries_new (id, batch_id, url, body, status, attempts, next_at, lease_token, created_at)
SELECT id, batch_id, url, body, status, attempts, next_at, lease_token, created_at FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_batch ON deliveries (batch_id);
