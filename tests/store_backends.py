"""The store backends the contract tests run on: one test, once on each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from connector_core.clock import Clock
from connector_core.store import migrations, pg_migrations
from connector_core.store.base import Store
from connector_core.store.postgres import PostgresStore
from connector_core.store.sqlite import SQLiteStore
from connector_core.store.urls import masked_url

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

    def unused_store_line(self, sqlite_path: Path) -> str:
        """The store line ``connector check`` prints before any service used the store: the
        SQLite file the config names (``sqlite_path``) is not there yet; the PostgreSQL
        database has its tables (``pg_store_url``), empty."""
        if self.name == "sqlite":
            return (
                f"store: sqlite {sqlite_path}: will be created at schema version"
                f" {migrations.LATEST} when the service starts"
            )
        return f"store: postgresql {masked_url(self.where)}: schema version {pg_migrations.LATEST}"
