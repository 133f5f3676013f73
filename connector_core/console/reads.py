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

from connector_core.console.filters import ROW_SQL, SEVERITY_SQL, CallFilter, HookStatus

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
        # "+": not through the primary key's index, which would read and sort every call of
        # the account; the newest-first scan stops at the page's end.
        where.append("+c.account = ?")
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
        where.append(_worst_status_is(f.status))
    sql = "SELECT c.rowid, c.account, c.call_id, c.state, c.last_received_at FROM calls AS c"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY c.rowid DESC LIMIT ?"
    args.append(limit)
    return [StoredCall(*row) for row in db.execute(sql, args).fetchall()]


def _worst_status_is(status: HookStatus) -> str:
    """A call whose worst hook call has ``status``: it has a row of it, and none worse.

    Rows not done are few and found by the index on status; "has a done row" is asked per
    call through the index on (account, call_id), as done rows are most of the table.
    """
    worse = [s for s in HookStatus if s.severity > status.severity]
    if status is HookStatus.DONE:
        clauses = [
            "EXISTS (SELECT 1 FROM dispatches AS d WHERE d.account = c.account"
            f" AND d.call_id = c.call_id AND d.{ROW_SQL[status]})"
        ]
    else:
        clauses = [
            "(c.account, c.call_id) IN (SELECT account, call_id FROM dispatches"
            f" WHERE {ROW_SQL[status]})"
        ]
    clauses += [
        "(c.account, c.call_id) NOT IN (SELECT account, call_id FROM dispatches"
        f" WHERE {ROW_SQL[s]})"
        for s in worse
    ]
    return "(" + " AND ".join(clauses) + ")"


def hook_summaries(
    db: sqlite3.Connection, calls: Iterable[CallKey]
) -> dict[CallKey, list[HookSummary]]:
    """Per call, each integration's hook calls summed up, by integration name."""
    keys = list(dict.fromkeys(calls))
    found: dict[CallKey, list[HookSummary]] = {k: [] for k in keys}
    by_account: dict[str, list[str]] = {}
    for account, call_id in keys:
        by_account.setdefault(account, []).append(call_id)
    for account, call_ids in by_account.items():
        # SQLite allows 32766 variables; a page asks for 50 calls.
        for start in range(0, len(call_ids), 500):
            chunk = call_ids[start : start + 500]
            rows = db.execute(
                f"SELECT call_id, integration, max({SEVERITY_SQL}), count(*) FROM dispatches"
                f" WHERE account = ? AND call_id IN ({', '.join('?' * len(chunk))})"
                " GROUP BY call_id, integration ORDER BY integration",
                [account, *chunk],
            ).fetchall()
            for call_id, integration, severity, count in rows:
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


# The setup page looks at this many of each account's latest calls: what rings now matters,
# and reading every call ever stored would make the page slower as the store grows.
RECENT_CALLS = 2000


@dataclass(frozen=True)
class RecentUse:
    """What an account's latest calls went through: extensions (with how many calls each was
    in) and schemes (number, name), as seen."""

    calls: int
    extensions: dict[str, int]
    schemes: list[tuple[str | None, str | None]]


def recent_use(db: sqlite3.Connection, account: str, limit: int = RECENT_CALLS) -> RecentUse:
    """The extensions rung, answering or dialling, and the schemes of the latest ``limit``
    calls of ``account``."""
    # The parts needed, cut out by SQLite: parsing whole states in Python costs 5x more.
    rows = db.execute(
        "SELECT json_extract(state, '$.legs'), json_extract(state, '$.answers'),"
        " json_extract(state, '$.employee'), json_extract(state, '$.schemes')"
        # "+": newest first by rowid, not every call of the account through the primary key.
        " FROM calls WHERE +account = ? ORDER BY rowid DESC LIMIT ?",
        (account, limit),
    ).fetchall()
    extensions: dict[str, int] = {}
    schemes: dict[tuple[str | None, str | None], None] = {}
    for legs, answers, employee, visits in rows:
        seen = {leg.get("extension") for leg in json.loads(legs or "[]")}
        seen |= {answer.get("extension") for answer in json.loads(answers or "[]")}
        seen.add(employee)
        for extension in seen - {None}:
            extensions[str(extension)] = extensions.get(str(extension), 0) + 1
        for visit in json.loads(visits or "[]"):
            schemes[(visit.get("id"), visit.get("name"))] = None
    return RecentUse(len(rows), extensions, sorted(schemes, key=lambda s: (s[0] or "", s[1] or "")))
