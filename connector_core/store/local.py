"""Coordination for a store that serves one process: leases, locks, rate windows, channels.

SQLite serves one worker process (``connector serve`` refuses a second one on the same
file), so what PostgreSQL keeps in tables and advisory locks for a cluster is kept here in
this process's memory. The callers (``connector_core.cluster``, the worker, the dispatcher,
plugins) use the same ``Store`` methods on both backends and so run the same code.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from connector_core.clock import Clock, SystemClock
from connector_core.integrations import KeyedLocks
from connector_core.store.base import StoredAuth

MINUTE = 60.0
SECOND = 1.0


class LocalCoordination:
    """The ``Store`` protocol's coordination methods, in memory (``shared`` is ``False``).

    Leases expire by ``clock`` (the store's), so a lease an owner stops renewing is free
    again ``ttl`` seconds later, as on a shared store.
    """

    shared: bool = False

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (owner, expires_at)
        self._locks = KeyedLocks()
        self._grants: dict[str, tuple[deque[float], deque[float]]] = {}  # minute, second
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._auth: dict[str, StoredAuth] = {}

    # -- leases ------------------------------------------------------------------------------

    async def take_leases(self, names: Sequence[str], owner: str, ttl: float) -> set[str]:
        """Take each lease in ``names`` that is free, expired or ``owner``'s already."""
        now = self.clock.now()
        held = set()
        for name in names:
            current = self._leases.get(name)
            if current is None or current[0] == owner or current[1] <= now:
                self._leases[name] = (owner, now + ttl)
                held.add(name)
        return held

    async def renew_leases(self, owner: str, ttl: float) -> int:
        """Extend ``owner``'s unexpired leases to ``ttl`` from now; returns how many."""
        now = self.clock.now()
        mine = [n for n, (who, until) in self._leases.items() if who == owner and until > now]
        for name in mine:
            self._leases[name] = (owner, now + ttl)
        return len(mine)

    async def release_leases(self, owner: str, names: Sequence[str] | None = None) -> None:
        """Give up ``names`` (every lease of ``owner`` when ``None``); others' stay."""
        for name in list(self._leases) if names is None else names:
            if self._leases.get(name, ("", 0.0))[0] == owner:
                del self._leases[name]

    # -- locks -------------------------------------------------------------------------------

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock ``name`` for an ``async with`` block; waiting is a queue wait."""
        return self._locks(name)

    # -- rate windows ------------------------------------------------------------------------

    async def take_rate_slot(
        self, name: str, per_minute: int, per_second: int, margin: float = 0.0
    ) -> float:
        """Grant one request under the windows ``name`` (0.0), or say how long to wait."""
        now = self.clock.now()
        minute, second = self._grants.setdefault(name, (deque(), deque()))
        while minute and minute[0] <= now - (MINUTE + margin):
            minute.popleft()
        while second and second[0] <= now - (SECOND + margin):
            second.popleft()
        wait = 0.0
        if len(minute) >= per_minute:
            wait = max(wait, minute[-per_minute] + MINUTE + margin - now)
        if len(second) >= per_second:
            wait = max(wait, second[-per_second] + SECOND + margin - now)
        if wait > 0:
            return wait
        minute.append(now)
        second.append(now)
        return 0.0

    # -- channels ----------------------------------------------------------------------------

    async def publish(self, channel: str, payload: str) -> None:
        """Hand ``payload`` to every subscriber of ``channel``, on the loop's next turn."""
        loop = asyncio.get_running_loop()
        for callback in self._subscribers.get(channel, ()):
            loop.call_soon(callback, payload)

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for each message published on ``channel``."""
        self._subscribers.setdefault(channel, []).append(callback)

    # -- authorisation results ---------------------------------------------------------------

    async def save_auth(self, result: StoredAuth) -> None:
        """Keep an integration's latest authorisation check."""
        self._auth[result.integration] = result

    async def auth_results(self) -> dict[str, StoredAuth]:
        """The latest check of each integration, by Integration.key."""
        return dict(self._auth)
