-- The example's own tables. Every row belongs to the account of the API key that wrote it.
CREATE TABLE IF NOT EXISTS contacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    email       TEXT NOT NULL,
    phone       TEXT,
    external_id TEXT,
    status      INTEGER NOT NULL DEFAULT 1,
    sms_status  INTEGER NOT NULL DEFAULT 1,
    modified_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account         TEXT NOT NULL,
    code            TEXT UNIQUE,
    event_type      INTEGER NOT NULL,
    title           TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    start_date_time TEXT,
    end_date_time   TEXT,
    capacity        INTEGER NOT NULL DEFAULT 0,
    budget          REAL,
    modified_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS invitations (
    event_id   INTEGER NOT NULL REFERENCES events (id),
    contact_id INTEGER NOT NULL REFERENCES contacts (id),
    token      TEXT NOT NULL,
    invited_at TEXT NOT NULL,
    PRIMARY KEY (event_id, contact_id)
);

-- The answers already given to batch jobs, by idempotency key: a job that runs again (its worker
-- died after the call but before recording it) gets the same answer instead of a second contact.
CREATE TABLE IF NOT EXISTS replies (
    account         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    response        TEXT NOT NULL,
    PRIMARY KEY (account, idempotency_key)
);
