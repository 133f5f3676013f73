"""Versions of the PostgreSQL store's schema, and the steps from each to the next.

The version lives in the one row of table ``schema_version``. The store brings the database
to the newest version when it opens, one step per transaction, each under a transaction-level
advisory lock: several processes starting together migrate once, the others wait and then see
the new version. A database made by a newer release is refused (``SchemaError``), as SQLite's
is (``migrations.py``).

To change the schema, append a step to ``STEPS``: never edit one that has shipped.
"""

from __future__ import annotations

import asyncpg

from connector_core.store.migrations import SchemaError, Step

# The advisory lock key every connector process takes to migrate (any fixed bigint will do).
MIGRATION_LOCK = 0x636F6E6E6563746F  # "connecto"

STEPS: tuple[Step, ...] = (
    Step(
        1,
        "the tables of the SQLite store at its version 5: inbox, rejected webhooks, calls,"
        " dispatch outbox, effect keys, the write probe, call records",
        """
CREATE TABLE inbox (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    call_id text,
    received_at double precision NOT NULL,
    params text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    processed_at double precision,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX inbox_pending ON inbox(id) WHERE status = 'pending';
CREATE INDEX inbox_quarantined ON inbox(id) WHERE status = 'quarantined';
CREATE INDEX inbox_call ON inbox(account, call_id);
CREATE TABLE rejected (
    id bigserial PRIMARY KEY,
    account text,
    received_at double precision NOT NULL,
    reason text NOT NULL,
    params text NOT NULL
);
-- "C": call ids sort byte by byte, as SQLite sorts them, whatever the database's locale.
CREATE TABLE calls (
    account text NOT NULL,
    call_id text COLLATE "C" NOT NULL,
    state text NOT NULL,
    finished boolean NOT NULL,
    last_received_at double precision NOT NULL,
    started_at double precision,
    client_number text,
    extensions text,
    -- The order calls were first stored in (SQLite's rowid): an account's latest calls.
    seq bigserial NOT NULL,
    PRIMARY KEY (account, call_id)
);
CREATE INDEX calls_open ON calls(last_received_at) WHERE NOT finished;
CREATE INDEX calls_started ON calls(started_at, call_id, account, extensions);
CREATE INDEX calls_client_number ON calls(client_number, started_at);
CREATE INDEX calls_call_id ON calls(call_id);
CREATE INDEX calls_latest ON calls(account, seq);
CREATE TABLE dispatches (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    call_id text NOT NULL,
    integration text NOT NULL,
    key text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    not_before double precision NOT NULL DEFAULT 0,
    last_error text,
    created_at double precision NOT NULL,
    done_at double precision,
    record text,
    UNIQUE (integration, account, call_id, key)
);
CREATE INDEX dispatches_pending ON dispatches(id) WHERE status = 'pending';
CREATE INDEX dispatches_groups
    ON dispatches(integration, account, call_id, id) WHERE status = 'pending';
CREATE INDEX dispatches_call ON dispatches(account, call_id, integration, status, attempts);
CREATE INDEX dispatches_status ON dispatches(status, account, call_id);
CREATE TABLE effects (
    integration text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    created_at double precision NOT NULL,
    seq bigserial NOT NULL,  -- the order keys were put in
    PRIMARY KEY (integration, key)
);
CREATE TABLE probe (
    id integer PRIMARY KEY CHECK (id = 1),
    written_at double precision NOT NULL
);
INSERT INTO probe (id, written_at) VALUES (1, 0);
CREATE TABLE call_records (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    call_id text NOT NULL,
    integration text NOT NULL,
    kind text NOT NULL,
    at double precision NOT NULL,
    data text NOT NULL
);
CREATE INDEX call_records_call ON call_records(account, call_id, id)
""",
    ),
    Step(
        2,
        "several processes share the store: leases on calls and singleton jobs, the grants of"
        " shared rate windows, and the latest authorisation check of each integration",
        """
CREATE TABLE leases (
    name text PRIMARY KEY,
    owner text NOT NULL,
    expires_at double precision NOT NULL  -- the database's clock: hosts' clocks may differ
);
CREATE INDEX leases_owner ON leases(owner);
CREATE TABLE rate_grants (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX rate_grants_window ON rate_grants(name, at);
CREATE TABLE auth_results (
    integration text PRIMARY KEY,
    status text NOT NULL,
    reason text NOT NULL,
    checked_at double precision NOT NULL
)
""",
    ),
    Step(
        3,
        "retention deletes rows by age, oldest first: the tables it prunes are indexed by the"
        " column that dates their rows (a call: its last webhook, on the service's clock)",
        """
CREATE INDEX inbox_received ON inbox(received_at);
CREATE INDEX dispatches_created ON dispatches(created_at);
CREATE INDEX call_records_at ON call_records(at);
CREATE INDEX effects_created ON effects(created_at);
CREATE INDEX calls_received ON calls(last_received_at)
""",
    ),
    Step(
        4,
        "the missed-call lifecycle: each finished call of a client's number (missed, or one"
        " that reached the client), the group of missed calls it belongs to and the callback"
        " that answered them, and when the group's SLA falls due",
        """
CREATE TABLE number_calls (
    account text NOT NULL,
    call_id text NOT NULL,
    number text NOT NULL,
    at double precision NOT NULL,
    fact text NOT NULL,
    noted_at double precision NOT NULL,
    decided boolean NOT NULL DEFAULT false,
    group_first text,
    called_back_by text,
    overdue_at double precision,
    overdue_sent boolean NOT NULL DEFAULT false,
    PRIMARY KEY (account, call_id)
);
CREATE INDEX number_calls_number ON number_calls(account, number, at);
CREATE INDEX number_calls_at ON number_calls(at);
CREATE INDEX number_calls_noted ON number_calls(noted_at);
CREATE INDEX number_calls_undecided ON number_calls(noted_at) WHERE NOT decided;
CREATE INDEX number_calls_overdue ON number_calls(overdue_at) WHERE overdue_at IS NOT NULL
""",
    ),
    Step(
        5,
        "the inbox keeps the event as ingest validated it, so the worker does not parse the"
        " webhook a second time; rows stored before have none and are parsed as before",
        """
ALTER TABLE inbox ADD COLUMN event text
""",
    ),
)
LATEST = STEPS[-1].version


async def version_of(conn: asyncpg.Connection) -> int:
    """The schema version of the database: 0 for an empty one."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the database to ``LATEST``; returns the version it had before."""
    before: int | None = None
    while True:
        # One transaction per step: a crash mid-upgrade leaves the previous version whole.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer)")
            version = await version_of(conn)
            if before is None:
                before = version
            if version > LATEST:
                raise SchemaError(
                    f"the database is at schema version {version}, made by a newer release of"
                    f" connector; this release knows versions up to {LATEST}: upgrade connector"
                    " to open it"
                )
            if version == LATEST:
                return before
            step = STEPS[version]  # the step to version + 1
            await conn.execute(step.sql)
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", step.version)
