"""The console's own SQL over the store's tables: what only its pages show.

The calls list and one call's trace are not here: they come from the calls' read model
(``connector_core.calls_view`` over ``store.find_calls``), as for ``connector calls`` and
``connector trace``. Here: the CRM link records plugins keep, the integrations' queue depths,
and what the latest calls went through (the setup page). Every function takes the store's
connection (run through ``SQLiteStore.read``) and only reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connector_core.console.filters import row_status


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
        name = row_status(status, attempts).value
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
