"""Versions of the SQLite store's schema, and the steps from each to the next.

The version lives in SQLite's ``PRAGMA user_version``. A database is brought to the newest
version when the store opens, one step per transaction, so a database made by any earlier
release opens in this one; a database made by a newer release is refused with a message
that says so, rather than written to by code that does not know its tables.

To change the schema, append a step to ``STEPS``: never edit one that has shipped. A test
(``tests/core/test_store_migrations.py``) opens the schema of release 0.1.0 and checks that
every step applies and the store works on the result.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


class SchemaError(RuntimeError):
    """The database cannot be used by this release (made by a newer one, or damaged)."""


@dataclass(frozen=True)
class Step:
    version: int  # the version the database has after this step
    why: str
    sql: str


# Version 1 is the schema of release 0.1.0, which did not yet set user_version: a database
# with its tables and user_version 0 is at version 1.
STEPS: tuple[Step, ...] = (
    Step(
        1,
        "the first release: inbox, rejected webhooks, calls, dispatch outbox, effect keys",
        """
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
""",
    ),
    Step(
        2,
        "dispatch rows keep their lifecycle record (kind, id, hook payload) as JSON, so the"
        " dispatcher no longer works the hook's arguments out from the key; older rows have"
        " none and are read from their key",
        """
ALTER TABLE dispatches ADD COLUMN record TEXT
""",
    ),
    Step(
        3,
        "poison inbox items are counted and quarantined; /readyz proves writes with a probe row",
        """
ALTER TABLE inbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN last_error TEXT;
CREATE INDEX IF NOT EXISTS inbox_quarantined ON inbox(id) WHERE status = 'quarantined';
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    written_at REAL NOT NULL
);
INSERT OR IGNORE INTO probe (id, written_at) VALUES (1, 0)
""",
    ),
    Step(
        4,
        "each call keeps what happened to it (routing decisions, hook calls with their CRM"
        " requests and the plugins' decisions) for `connector trace` and the console; calls"
        " are listed by start and found by number, a call's webhooks and hook rows by call",
        """
CREATE TABLE IF NOT EXISTS call_records (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    integration TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_records_call ON call_records(account, call_id, id);
ALTER TABLE calls ADD COLUMN started_at REAL;
ALTER TABLE calls ADD COLUMN client_number TEXT;
ALTER TABLE calls ADD COLUMN extensions TEXT;
UPDATE calls SET
    started_at = coalesce(json_extract(state, '$.started_at'), last_received_at),
    client_number = json_extract(state, '$.client_number'),
    extensions = ',' || coalesce((
        SELECT group_concat(extension, ',') FROM (
            SELECT json_extract(leg.value, '$.extension') AS extension
                FROM json_each(calls.state, '$.legs') AS leg
            UNION SELECT json_extract(answer.value, '$.extension')
                FROM json_each(calls.state, '$.answers') AS answer
            UNION SELECT json_extract(calls.state, '$.employee'))
        WHERE extension IS NOT NULL), '') || ',';
-- Covering: a page filtered by extension or status walks the index, not the call states.
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at, call_id, account, extensions);
CREATE INDEX IF NOT EXISTS calls_client_number ON calls(client_number, started_at);
CREATE INDEX IF NOT EXISTS calls_call_id ON calls(call_id);
ALTER TABLE inbox ADD COLUMN call_id TEXT;
UPDATE inbox SET call_id = nullif(trim(CAST(json_extract(params, '$.call_id') AS TEXT)), '');
CREATE INDEX IF NOT EXISTS inbox_call ON inbox(account, call_id);
-- Covering: each integration's status per call is worked out from the index alone.
CREATE INDEX IF NOT EXISTS dispatches_call
    ON dispatches(account, call_id, integration, status, attempts)
""",
    ),
    Step(
        5,
        "calls are found by an integration's status (dead, retrying…) through the few hook"
        " calls not done, and the console counts and lists those rows without reading the"
        " outbox whole",
        """
CREATE INDEX IF NOT EXISTS dispatches_status ON dispatches(status, account, call_id)
""",
    ),
    Step(
        6,
        "retention deletes rows by age, oldest first: the tables it prunes are indexed by the"
        " column that dates their rows (a call: its last webhook, on the service's clock)",
        """
CREATE INDEX IF NOT EXISTS inbox_received ON inbox(received_at);
CREATE INDEX IF NOT EXISTS dispatches_created ON dispatches(created_at);
CREATE INDEX IF NOT EXISTS call_records_at ON call_records(at);
CREATE INDEX IF NOT EXISTS effects_created ON effects(created_at);
CREATE INDEX IF NOT EXISTS calls_received ON calls(last_received_at)
""",
    ),
    Step(
        7,
        "the missed-call lifecycle: each finished call of a client's number (missed, or one"
        " that reached the client), the group of missed calls it belongs to and the callback"
        " that answered them, and when the group's SLA falls due",
        """
CREATE TABLE IF NOT EXISTS number_calls (
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    number TEXT NOT NULL,
    at REAL NOT NULL,
    fact TEXT NOT NULL,
    noted_at REAL NOT NULL,
    decided INTEGER NOT NULL DEFAULT 0,
    group_first TEXT,
    called_back_by TEXT,
    overdue_at REAL,
    overdue_sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, call_id)
);
CREATE INDEX IF NOT EXISTS number_calls_number ON number_calls(account, number, at);
CREATE INDEX IF NOT EXISTS number_calls_at ON number_calls(at);
CREATE INDEX IF NOT EXISTS number_calls_noted ON number_calls(noted_at);
CREATE INDEX IF NOT EXISTS number_calls_undecided ON number_calls(noted_at) WHERE decided = 0;
CREATE INDEX IF NOT EXISTS number_calls_overdue
    ON number_calls(overdue_at) WHERE overdue_at IS NOT NULL
""",
    ),
    Step(
        8,
        "the inbox keeps the event as ingest validated it, so the worker does not parse the"
        " webhook a second time; rows stored before have none and are parsed as before",
        """
ALTER TABLE inbox ADD COLUMN event TEXT
""",
    ),
    Step(
        9,
        "an ingest process beside a worker process keeps its webhooks in a spool file of its"
        " own; the store keeps, per spool, the last spooled row moved into the inbox",
        """
CREATE TABLE IF NOT EXISTS spool_moved (
    identity TEXT PRIMARY KEY,
    through INTEGER NOT NULL
)
""",
    ),
)
LATEST = STEPS[-1].version


def version_of(db: sqlite3.Connection) -> int:
    """The schema version of ``db``: 0 for an empty database."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if (
        version == 0
        and db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'inbox'"
        ).fetchone()
    ):
        return 1  # made by release 0.1.0, before versions were recorded
    return version


def too_new(version: int, latest: int) -> str:
    """Why a database at ``version`` is refused by a release that knows up to ``latest``."""
    return (
        f"the database is at schema version {version}, made by a newer release of connector;"
        f" this release knows versions up to {latest}: upgrade connector to open it"
    )


def migrate(db: sqlite3.Connection) -> int:
    """Bring ``db`` (autocommit mode) to ``LATEST``; returns the version it had before."""
    before = version_of(db)
    if before > LATEST:
        raise SchemaError(too_new(before, LATEST))
    if before and not int(db.execute("PRAGMA user_version").fetchone()[0]):
        db.execute(f"PRAGMA user_version = {before}")  # record what release 0.1.0 did not
    for step in STEPS:
        if step.version <= before:
            continue
        # One transaction per step: a crash mid-upgrade leaves the previous version whole.
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(step.sql):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {step.version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return before


def _statements(sql: str) -> list[str]:
    # executescript() would commit the step's transaction; the steps hold no ';' in literals.
    return [part.strip() for part in sql.split(";") if part.strip()]
