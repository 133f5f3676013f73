"""Which store the config names: the SQLite file at ``[storage] path``, or the PostgreSQL
database at ``[storage] url`` (``CONNECTOR_STORAGE_URL``).

The PostgreSQL module is imported only when a URL is configured, so a SQLite deployment never
loads its driver.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from connector_core.clock import Clock
from connector_core.store import sqlite
from connector_core.store.base import Store, StoreInfo, StoreUnavailable

if TYPE_CHECKING:
    from connector_core.config import StorageConfig

POSTGRES_MODULE = "connector_core.store.postgres"


class NoPostgres(StoreUnavailable):
    """A PostgreSQL URL is configured, but this installation cannot load its store."""


def make_store(storage: StorageConfig, clock: Clock) -> Store:
    """The store ``storage`` names, not yet open.

    :raises StoreUnavailable: a URL is configured but this installation has no PostgreSQL store.
    """
    if storage.url is None:
        return sqlite.SQLiteStore(storage.path, clock=clock)
    store: Store = _postgres().PostgresStore(storage.url.get_secret_value(), clock=clock)
    return store


async def inspect_store(storage: StorageConfig) -> StoreInfo:
    """Where the store is and its schema version, found without creating or migrating
    anything (``connector check``).

    :raises StoreUnavailable: it cannot be reached or read; the message says why.
    """
    if storage.url is None:
        return sqlite.inspect(storage.path)
    info: StoreInfo = await _postgres().inspect(storage.url.get_secret_value())
    return info


def _postgres() -> ModuleType:
    try:
        return importlib.import_module(POSTGRES_MODULE)
    except ImportError as exc:
        raise NoPostgres(
            f"this installation has no PostgreSQL store ({POSTGRES_MODULE}: {exc});"
            " leave storage.url out to use the SQLite file at storage.path"
        ) from None
