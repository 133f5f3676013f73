"""A store whose writes fail on demand or at random, as a full or failing disk makes them.

For tests of what the service does while its store cannot write::

    made, factory = faulty_store_factory(seed=7)
    app = create_app(config, store_factory=factory)
    ...                          # once the app has started, made[0] is its store
    made[0].fail_writes()        # every write fails: the disk is full
    made[0].fail_at_random(0.3)  # three writes in ten fail, the others succeed
    made[0].heal()               # space again

Every write to the store file goes through the store's one writer (``SQLiteStore._write``):
webhooks, the worker's commits, dispatch results, plugins' effect keys, moves of spooled
webhooks into the inbox (``_move_spooled``) and the ``/readyz`` probe. An ingest process's
webhooks and probe go to its spool file (``store/spool.py``), which this does not fail. A
failed write raises ``sqlite3.OperationalError("database or disk is full")``, as SQLite
does on a full disk, and stores nothing; with ``after_commit`` a failure comes after the
write was committed instead (an fsync error reported late), so the caller sees an error for
something that is stored. Reads are never failed.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from connector_core.clock import Clock
from connector_core.config import StorageConfig
from connector_core.store.sqlite import SQLiteStore
from connector_core.store.sqlite_commit import InboxAppend

T = TypeVar("T")
DISK_FULL = "database or disk is full"


class FaultyStore(SQLiteStore):
    """``SQLiteStore`` with switchable write failures, counted in ``failed_writes``."""

    def __init__(self, path: str | Path, *, clock: Clock | None = None, seed: int = 0) -> None:
        super().__init__(path, clock=clock)
        self.rng = random.Random(seed)
        self.fail_rate = 0.0  # the chance that one write fails
        self.after_commit = False  # fail after committing instead of before
        self.only: frozenset[str] = frozenset()  # fail only the writes of these methods
        self.error: Callable[[], Exception] = lambda: sqlite3.OperationalError(DISK_FULL)
        self.writes = 0
        self.failed_writes = 0

    def fail_writes(
        self, *, only: Iterable[str] = (), error: Callable[[], Exception] | None = None
    ) -> None:
        """Every write fails from now on, until ``heal()``.

        ``only`` limits it to the writes of the named store methods (``commit_event``,
        ``append_event``, ``effect_put``, ``writable``…): a nearly full disk fails the big
        writes first. ``error`` makes the exception raised (a full disk's by default).
        """
        self.fail_rate, self.after_commit, self.only = 1.0, False, frozenset(only)
        if error is not None:
            self.error = error

    def fail_at_random(self, rate: float, *, after_commit: bool = False) -> None:
        """Each write fails with probability ``rate`` (seeded, so a run can be repeated)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {rate}")
        self.fail_rate, self.after_commit, self.only = rate, after_commit, frozenset()

    def heal(self) -> None:
        """Writes succeed again."""
        self.fail_rate, self.only = 0.0, frozenset()
        self.error = lambda: sqlite3.OperationalError(DISK_FULL)

    @property
    def failing(self) -> bool:
        return self.fail_rate > 0.0

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.writes += 1
        # A write function is defined in the store method it belongs to; a webhook's row is
        # append_event's.
        if isinstance(fn, InboxAppend):
            method = "append_event"
        else:
            method = fn.__qualname__.split(".<locals>")[0].rpartition(".")[2]
        chosen = not self.only or method in self.only
        fail = chosen and self.fail_rate > 0.0 and self.rng.random() < self.fail_rate
        if fail and not self.after_commit:
            self.failed_writes += 1
            raise self.error()
        result = await super()._write(fn)
        if fail:
            self.failed_writes += 1
            raise self.error()
        return result


def faulty_store_factory(
    seed: int = 0,
) -> tuple[list[FaultyStore], Callable[[StorageConfig, Clock], FaultyStore]]:
    """A ``store_factory`` for ``create_app`` and the list it puts the store it makes in."""
    made: list[FaultyStore] = []

    def factory(storage: StorageConfig, clock: Clock) -> FaultyStore:
        store = FaultyStore(storage.path, seed=seed, clock=clock)
        made.append(store)
        return store

    return made, factory
