"""The store backends the contract tests run on: one test, once on each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from connector_core.clock import Clock
from connector_core.store.base import Store
from connector_core.store.postgres import PostgresStore
from connector_core.store.sqlite import SQLiteStore

T = TypeVar("T")


@dataclass(frozen=True)
class StoreBackend:
    """Where a test's store lives: a SQLite file, or a fresh PostgreSQL database."""

    name: str  # "sqlite" | "postgresql": the test's id
    where: str  # the file's path, or the database's URL

    def new(self, clock: Clock | None = None) -> Store:
        """A store (not yet open) on this backend's data: each call, another "process"."""
        if self.name == "sqlite":
            return SQLiteStore(self.where, clock=clock)  # type: ignore[return-value]
        return PostgresStore(self.where, clock=clock)

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[Store]:
        """A store open on this backend's data (what a service wrote there), closed after."""
        store = self.new()
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    def read(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """``fn(store)`` on this backend's data, from a test that is not async."""

        async def run() -> T:
            async with self.opened() as store:
                return await fn(store)

        return asyncio.run(run())
