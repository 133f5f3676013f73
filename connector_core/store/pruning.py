"""What retention deletes, table by table, in SQL both backends run (``Store.prune_batch``).

Each rule names a table, the column that dates a row, which retention period applies, which
rows may go at all (never pending work) and what protects a row of a call in progress. To
prune one more table, add one ``PruneRule`` to ``PRUNE_RULES``.

A call is in progress while it is not finished or while one of its hook calls is pending
(waiting for its first run or for a retry): nothing of such a call is deleted, however old.
Effect keys name their call in the key (``call:<id>``, ``comment:<id>``, ``lookup:<id>:…``),
not in columns; a key that names a call in progress is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Period(StrEnum):
    """Which ``[retention]`` setting dates a kind of row."""

    CALLS = "calls_days"
    INBOX = "inbox_days"


class Guard(StrEnum):
    """How a row is tied to its call, so that a call in progress keeps it."""

    NONE = "none"  # not tied to a call
    CALL = "call"  # columns account and call_id
    EFFECT_KEY = "effect_key"  # the call id after a ':' in column key


@dataclass(frozen=True)
class PruneRule:
    """One kind of row retention deletes."""

    name: str  # as /metrics, the log and `connector prune` name it
    table: str
    key: str  # the columns that identify a row: "id", or "account, call_id"
    dated_by: str  # seconds since the epoch: older than the period, the row may go
    period: Period
    guard: Guard
    only: str = "1 = 1"  # which rows may go at all (SQL on the table's columns)


PRUNE_RULES: tuple[PruneRule, ...] = (
    PruneRule(
        "inbox",
        "inbox",
        "id",
        "received_at",
        Period.INBOX,
        Guard.CALL,
        only="status IN ('done', 'dropped')",
    ),
    # Set aside for an operator, who gets the longer period to look at them.
    PruneRule(
        "inbox_quarantined",
        "inbox",
        "id",
        "received_at",
        Period.CALLS,
        Guard.CALL,
        only="status = 'quarantined'",
    ),
    PruneRule("rejected", "rejected", "id", "received_at", Period.INBOX, Guard.NONE),
    PruneRule("call_records", "call_records", "id", "at", Period.CALLS, Guard.CALL),
    # Done, dropped and dead (the dead-letter queue); pending rows never.
    PruneRule(
        "dispatches",
        "dispatches",
        "id",
        "created_at",
        Period.CALLS,
        Guard.CALL,
        only="status <> 'pending'",
    ),
    PruneRule(
        "effects", "effects", "integration, key", "created_at", Period.CALLS, Guard.EFFECT_KEY
    ),
    # The missed-call lifecycle's memory of a number (it holds the number): decided rows only.
    PruneRule(
        "number_calls",
        "number_calls",
        "account, call_id",
        "noted_at",
        Period.CALLS,
        Guard.CALL,
        only="decided",
    ),
    PruneRule("calls", "calls", "account, call_id", "last_received_at", Period.CALLS, Guard.CALL),
)

# A call in progress: not finished, or one of its hook calls pending.
_CALL_IN_PROGRESS = (
    "EXISTS (SELECT 1 FROM calls AS c WHERE c.account = t.account"
    " AND c.call_id = t.call_id AND NOT c.finished)"
    " OR EXISTS (SELECT 1 FROM dispatches AS d WHERE d.account = t.account"
    " AND d.call_id = t.call_id AND d.status = 'pending')"
)
# LIKE may match a little more than the call id ('_' is a wildcard): a key kept too long,
# never one deleted too soon.
_NAMES = "(t.key LIKE '%:' || {id} OR t.key LIKE '%:' || {id} || ':%')"
_KEY_OF_CALL_IN_PROGRESS = (
    f"EXISTS (SELECT 1 FROM calls AS c WHERE NOT c.finished AND {_NAMES.format(id='c.call_id')})"
    " OR EXISTS (SELECT 1 FROM dispatches AS d WHERE d.status = 'pending'"
    f" AND {_NAMES.format(id='d.call_id')})"
)
_KEPT_BY = {
    Guard.NONE: "1 = 0",
    Guard.CALL: _CALL_IN_PROGRESS,
    Guard.EFFECT_KEY: _KEY_OF_CALL_IN_PROGRESS,
}


def prunable_where(rule: PruneRule, cutoff: str) -> str:
    """The rows of ``rule.table`` (as ``t``) that may be deleted: dated before ``cutoff`` (a
    placeholder), allowed by ``rule.only``, and not of a call in progress."""
    return f"t.{rule.dated_by} < {cutoff} AND ({rule.only}) AND NOT ({_KEPT_BY[rule.guard]})"


def delete_batch_sql(rule: PruneRule, cutoff: str, limit: str) -> str:
    """Delete up to ``limit`` prunable rows, oldest first (placeholders of the backend)."""
    return (
        f"DELETE FROM {rule.table} WHERE ({rule.key}) IN (SELECT {rule.key}"
        f" FROM {rule.table} AS t WHERE {prunable_where(rule, cutoff)}"
        f" ORDER BY t.{rule.dated_by} LIMIT {limit})"
    )


def count_sql(rule: PruneRule, cutoff: str) -> str:
    """How many rows ``delete_batch_sql`` would delete, all batches together."""
    return f"SELECT count(*) FROM {rule.table} AS t WHERE {prunable_where(rule, cutoff)}"
