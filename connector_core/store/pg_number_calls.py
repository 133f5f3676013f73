"""The PostgreSQL store's part of the missed-call lifecycle: the ``number_calls`` table."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import asyncpg

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

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]


def _q(statement: str) -> str:
    return sql.bind(statement, lambda n: f"${n}")


async def note_number_call(
    conn: _Conn, account: str, number: str, call: NumberCall, now: float
) -> None:
    """Keep ``call`` for the lifecycle, inside the caller's transaction."""
    await conn.execute(_q(sql.NOTE), *sql.number_call_row(account, number, call, now))


class PostgresNumberCalls:
    """``Store``'s missed-call methods over PostgreSQL (mixed into ``PostgresStore``)."""

    clock: Clock

    @property
    def _db(self) -> asyncpg.Pool:
        raise NotImplementedError

    async def unsettled_numbers(
        self, noted_before: float, now: float, limit: int
    ) -> list[tuple[str, str]]:
        rows = await self._db.fetch(_q(sql.UNSETTLED), noted_before, now, limit)
        return [(r[0], r[1]) for r in rows]

    async def number_calls(self, account: str, number: str) -> list[StoredNumberCall]:
        rows = await self._db.fetch(_q(sql.OF_NUMBER), account, number)
        return [
            StoredNumberCall(NumberCall.model_validate_json(r[0]), r[1], r[2], r[3], r[4])
            for r in rows
        ]

    async def settle_number(self, settlement: NumberSettlement) -> None:
        s = settlement
        now = self.clock.now()
        async with self._db.acquire() as conn, conn.transaction():  # all or nothing
            await conn.executemany(
                _q(sql.LINK),
                [
                    (
                        link.group,
                        link.called_back_by,
                        None if link.overdue_at is None else float(link.overdue_at),
                        s.account,
                        call_id,
                    )
                    for call_id, link in s.links.items()
                ],
            )
            await conn.executemany(
                _q(sql.DECIDED), [(True, s.account, call_id) for call_id in s.decided]
            )
            await conn.executemany(
                _q(sql.OVERDUE_SENT), [(True, s.account, call_id) for call_id in s.overdue_sent]
            )
            if s.dispatches:
                await conn.executemany(
                    _q(sql.INSERT_DISPATCH), sql.dispatch_rows(s.account, s.dispatches, now)
                )
                from connector_core.store.postgres import CHANNEL_PREFIX  # imports this module

                # Delivered at COMMIT: the dispatchers wake for rows they can see.
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL_PREFIX + DISPATCH_CHANNEL)

    async def missed_summaries(self, since: float) -> dict[str, MissedSummary]:
        rows = await self._db.fetch(_q(sql.RECENT), since)
        return summarise((r[0], r[1], r[2], r[3]) for r in rows)
