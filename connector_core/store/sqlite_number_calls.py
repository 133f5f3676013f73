"""The SQLite store's part of the missed-call lifecycle: the ``number_calls`` table."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from connector_core.clock import Clock
from connector_core.missed import NumberCall
from connector_core.store import number_calls_sql as sql
from connector_core.store.base import (
    DISPATCH_CHANNEL,
    MissedSummary,
    NumberSettlement,
    StoredNumberCall,
    summarise,
)

T = TypeVar("T")


def _q(statement: str) -> str:
    return sql.bind(statement, lambda n: "?")


def note_number_call(db: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Keep a number's call (``number_calls_sql.number_call_row``) for the lifecycle, inside
    the caller's transaction."""
    db.execute(_q(sql.NOTE), row)


class SQLiteNumberCalls:
    """``Store``'s missed-call methods over SQLite (mixed into ``SQLiteStore``)."""

    clock: Clock

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    if TYPE_CHECKING:  # LocalCoordination's, behind this class in SQLiteStore's bases

        async def publish(self, channel: str, payload: str) -> None: ...

    async def unsettled_numbers(
        self, noted_before: float, now: float, limit: int
    ) -> list[tuple[str, str]]:
        def select(db: sqlite3.Connection) -> list[Any]:
            return db.execute(_q(sql.UNSETTLED), (noted_before, now, limit)).fetchall()

        return [(r[0], r[1]) for r in await self._run(select)]

    async def number_calls(self, account: str, number: str) -> list[StoredNumberCall]:
        def select(db: sqlite3.Connection) -> list[Any]:
            return db.execute(_q(sql.OF_NUMBER), (account, number)).fetchall()

        return [
            StoredNumberCall(
                NumberCall.model_validate_json(r[0]), bool(r[1]), bool(r[2]), r[3], r[4]
            )
            for r in await self._run(select)
        ]

    async def settle_number(self, settlement: NumberSettlement) -> None:
        s = settlement
        dispatches = sql.dispatch_rows(s.account, s.dispatches, self.clock.now())

        def write(db: sqlite3.Connection) -> None:
            for call_id, link in s.links.items():
                db.execute(
                    _q(sql.LINK),
                    (link.group, link.called_back_by, link.overdue_at, s.account, call_id),
                )
            for call_id in s.decided:
                db.execute(_q(sql.DECIDED), (True, s.account, call_id))
            for call_id in s.overdue_sent:
                db.execute(_q(sql.OVERDUE_SENT), (True, s.account, call_id))
            db.executemany(_q(sql.INSERT_DISPATCH), dispatches)

        await self._write(write)
        if s.dispatches:
            await self.publish(DISPATCH_CHANNEL, "")

    async def missed_summaries(self, since: float) -> dict[str, MissedSummary]:
        def select(db: sqlite3.Connection) -> list[Any]:
            return db.execute(_q(sql.RECENT), (since,)).fetchall()

        return summarise((r[0], r[1], r[2], r[3]) for r in await self._run(select))
