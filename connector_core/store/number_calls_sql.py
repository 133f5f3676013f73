"""The missed-call lifecycle's table (``number_calls``), in SQL both backends share.

Each backend binds these with its own placeholders (``?`` for SQLite, ``$n`` for
PostgreSQL): the statements are written once, with ``{}`` where a placeholder goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py imports nothing from here; only the type is needed
    from connector_core.missed import NumberCall
    from connector_core.store.base import NewDispatch

# A finished call of a number: a change (a late event after the hang-up) makes it decided
# again; the same fact again (a repeated webhook, a re-commit) changes nothing.
NOTE = (
    "INSERT INTO number_calls (account, call_id, number, at, fact, noted_at)"
    " VALUES ({}, {}, {}, {}, {}, {})"
    " ON CONFLICT (account, call_id) DO UPDATE SET"
    " number = excluded.number, at = excluded.at, fact = excluded.fact,"
    " decided = CASE WHEN number_calls.fact = excluded.fact"
    " THEN number_calls.decided ELSE {} END,"
    " noted_at = CASE WHEN number_calls.fact = excluded.fact"
    " THEN number_calls.noted_at ELSE excluded.noted_at END"
)
UNSETTLED = (
    "SELECT account, number FROM number_calls WHERE NOT decided AND noted_at < {}"
    " UNION SELECT account, number FROM number_calls WHERE overdue_at <= {}"
    " LIMIT {}"
)
OF_NUMBER = (
    "SELECT fact, decided, overdue_sent, group_first, called_back_by FROM number_calls"
    " WHERE account = {} AND number = {} ORDER BY at, call_id"
)
LINK = (
    "UPDATE number_calls SET group_first = {}, called_back_by = {}, overdue_at = {}"
    " WHERE account = {} AND call_id = {}"
)
DECIDED = "UPDATE number_calls SET decided = {} WHERE account = {} AND call_id = {}"
OVERDUE_SENT = (
    "UPDATE number_calls SET overdue_sent = {}, overdue_at = NULL"
    " WHERE account = {} AND call_id = {}"
)
# The calls since a moment, through number_calls_at (a page never reads the table whole);
# counted by ``base.summarise``.
RECENT = "SELECT account, call_id, group_first, called_back_by FROM number_calls WHERE at >= {}"


# The lifecycle's dispatch rows: as the worker writes a call's rows, ignored when there.
INSERT_DISPATCH = (
    "INSERT INTO dispatches"
    " (account, call_id, integration, key, record, not_before, created_at)"
    " VALUES ({}, {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING"
)


def number_call_row(
    account: str, number: str, call: NumberCall, now: float
) -> tuple[str, str, str, float, str, float, bool]:
    """``NOTE``'s parameters for ``call`` (serialised here, before any transaction)."""
    return (account, call.call_id, number, float(call.at), call.model_dump_json(), now, False)


def dispatch_rows(
    account: str, dispatches: Iterable[tuple[str, NewDispatch]], now: float
) -> list[tuple[str, str, str, str, str, float, float]]:
    """``INSERT_DISPATCH``'s parameters for each (call id, row)."""
    return [
        (account, call_id, d.integration, d.key, d.record.model_dump_json(), d.not_before, now)
        for call_id, d in dispatches
    ]


def bind(sql: str, placeholder: Callable[[int], str]) -> str:
    """``sql`` with each ``{}`` replaced by the backend's ``placeholder(n)``, n from 1."""
    count = sql.count("{}")
    return sql.format(*(placeholder(n) for n in range(1, count + 1)))
