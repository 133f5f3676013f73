-- The schema of release 0.1.0 (store version 1), as its SQLiteStore created it.
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    received_at REAL NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    processed_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    account TEXT,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    params TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL,
    finished INTEGER NOT NULL,
    last_received_at REAL NOT NULL,
    PRIMARY KEY (account, call_id)
);
CREATE INDEX IF NOT EXISTS calls_open ON calls(last_received_at) WHERE finished = 0;
CREATE TABLE IF NOT EXISTS dispatches (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    integration TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL,
    UNIQUE (integration, account, call_id, key)
);
CREATE INDEX IF NOT EXISTS dispatches_pending ON dispatches(id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS dispatches_groups
    ON dispatches(integration, account, call_id, id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS effects (
    integration TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (integration, key)
);
