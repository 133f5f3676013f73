"""The console's SQL over the store's tables: what the pages list, counted and filtered.

Every function takes the store's connection (run through ``SQLiteStore.read``) and only
reads. Calls are listed newest first by their row position in ``calls`` (the order they were
first stored), which the primary key's rowid gives without an index of its own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connector_core.console.filters import SEVERITY_SQL, CallFilter, HookStatus

CallKey = tuple[str, str]  # (account, call_id)


@dataclass(frozen=True)
class StoredCall:
    """A row of ``calls``: its list position and the call's state as stored (JSON)."""

    position: int
    account: str
    call_id: str
    state: str
    last_received_at: float


@dataclass(frozen=True)
class HookSummary:
    """One integration's hook calls for one call, summed up."""

    integration: str
    status: HookStatus
    rows: int


def recent_calls(
    db: sqlite3.Connection, f: CallFilter, *, received_since: float | None, limit: int
) -> list[StoredCall]:
    """The newest calls that pass ``f`` (at most ``limit``), newest first."""
    where: list[str] = []
    args: list[Any] = []
    if f.account:
        where.append("c.account = ?")
        args.append(f.account)
    if received_since is not None:
        where.append("c.last_received_at >= ?")
        args.append(received_since)
    if f.before is not None:
        where.append("c.rowid < ?")
        args.append(f.before)
    if f.phones:
        where.append(
            f"json_extract(c.state, '$.client_number') IN ({', '.join('?' * len(f.phones))})"
        )
        args += f.phones
    elif f.phone_digits:
        where.append("instr(json_extract(c.state, '$.client_number'), ?) > 0")
        args.append(f.phone_digits)
    if f.outcome is not None:
        where.append("json_extract(c.state, '$.outcome') = ?")
        args.append(f.outcome.value)
    if f.extension is not None:
        where.append(
            "(json_extract(c.state, '$.employee') = ?"
            " OR EXISTS (SELECT 1 FROM json_each(c.state, '$.legs') AS leg"
            "   WHERE json_extract(leg.value, '$.extension') = ?)"
            " OR EXISTS (SELECT 1 FROM json_each(c.state, '$.answers') AS answer"
            "   WHERE json_extract(answer.value, '$.extension') = ?))"
        )
        args += [f.extension] * 3
    if f.status is not None:
        # A call's status is its worst integration's.
        where.append(
            "(c.account, c.call_id) IN (SELECT account, call_id FROM dispatches"
            f" GROUP BY account, call_id HAVING max({SEVERITY_SQL}) = ?)"
        )
        args.append(f.status.severity)
    sql = "SELECT c.rowid, c.account, c.call_id, c.state, c.last_received_at FROM calls AS c"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY c.rowid DESC LIMIT ?"
    args.append(limit)
    return [StoredCall(*row) for row in db.execute(sql, args).fetchall()]


def hook_summaries(
    db: sqlite3.Connection, calls: Iterable[CallKey]
) -> dict[CallKey, list[HookSummary]]:
    """Per call, each integration's hook calls summed up, by integration name."""
    keys = list(dict.fromkeys(calls))
    found: dict[CallKey, list[HookSummary]] = {k: [] for k in keys}
    # SQLite allows 32766 variables; a page asks for 50 calls.
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        values = ", ".join("(?, ?)" for _ in chunk)
        rows = db.execute(
            f"SELECT account, call_id, integration, max({SEVERITY_SQL}), count(*)"
            f" FROM dispatches WHERE (account, call_id) IN (VALUES {values})"
            " GROUP BY account, call_id, integration ORDER BY integration",
            [part for key in chunk for part in key],
        ).fetchall()
        for account, call_id, integration, severity, count in rows:
            found[(account, call_id)].append(
                HookSummary(integration, HookStatus.by_severity(severity), count)
            )
    return found


def call_links(
    db: sqlite3.Connection, integrations: Iterable[str], call_ids: Iterable[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The ``call:<call_id>`` link records plugins keep (``forget.py``), by (integration, call)."""
    ids = list(dict.fromkeys(call_ids))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    if not ids:
        return found
    marks = ", ".join("?" * len(ids))
    for integration in integrations:
        rows = db.execute(
            f"SELECT key, value FROM effects WHERE integration = ? AND key IN ({marks})",
            [integration, *(f"call:{i}" for i in ids)],
        ).fetchall()
        for key, value in rows:
            record = json.loads(value)
            if isinstance(record, dict):
                found[(integration, key.removeprefix("call:"))] = record
    return found


@dataclass(frozen=True)
class QueueDepth:
    """An integration's hook calls that are not done, and its latest failure."""

    pending: int = 0
    retrying: int = 0
    dead: int = 0
    last_error: str | None = None
    last_error_call: str | None = None


def queue_depths(db: sqlite3.Connection) -> dict[str, QueueDepth]:
    """Per integration: hook calls waiting, retrying and dead, and the newest error."""
    counts: dict[str, dict[str, int]] = {}
    for integration, status, attempts, count in db.execute(
        "SELECT integration, status, attempts > 0, count(*) FROM dispatches"
        " WHERE status IN ('pending', 'dead') GROUP BY integration, status, attempts > 0"
    ).fetchall():
        name = HookStatus.of_row(status, attempts).value
        per = counts.setdefault(integration, {})
        per[name] = per.get(name, 0) + count
    errors = {
        integration: (error, call_id)
        for integration, error, call_id in db.execute(
            "SELECT integration, last_error, call_id FROM dispatches WHERE id IN ("
            " SELECT max(id) FROM dispatches WHERE last_error IS NOT NULL"
            " AND status IN ('pending', 'dead') GROUP BY integration)"
        ).fetchall()
    }
    return {
        key: QueueDepth(
            pending=counts.get(key, {}).get("pending", 0),
            retrying=counts.get(key, {}).get("retrying", 0),
            dead=counts.get(key, {}).get("dead", 0),
            last_error=errors.get(key, (None, None))[0],
            last_error_call=errors.get(key, (None, None))[1],
        )
        for key in sorted(set(counts) | set(errors))
    }


def seen_extensions(db: sqlite3.Connection, account: str) -> dict[str, int]:
    """Every extension the account's stored calls rang, were answered at or dialled from,
    with how many calls each was in."""
    rows = db.execute(
        "SELECT extension, count(DISTINCT call_id) FROM ("
        " SELECT c.call_id, json_extract(leg.value, '$.extension') AS extension"
        "  FROM calls AS c, json_each(c.state, '$.legs') AS leg WHERE c.account = ?"
        " UNION ALL SELECT c.call_id, json_extract(answer.value, '$.extension')"
        "  FROM calls AS c, json_each(c.state, '$.answers') AS answer WHERE c.account = ?"
        " UNION ALL SELECT call_id, json_extract(state, '$.employee')"
        "  FROM calls WHERE account = ?)"
        " WHERE extension IS NOT NULL GROUP BY extension",
        (account, account, account),
    ).fetchall()
    return {str(extension): int(count) for extension, count in rows}
