"""Several connector processes on one store: who this process is, what it holds, its role.

Work is shared out by leases in the store (``Store.take_leases``): a worker processes a
call's events only under the lease ``call:<account>/<call_id>``, a dispatcher runs a call's
hook calls only under ``dispatch:<integration>/<account>/<call_id>``, and the expiry and
authorisation rounds run only in the process holding ``singleton:expiry`` /
``singleton:auth``. A lease lasts ``[cluster] lease_seconds`` unless renewed: the ``leases``
loop renews this process's every third of that, so a killed process's work is taken over
within about one lease time. On SQLite (one worker process) every lease is this process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO

from connector_core.integrations import AuthResult, AuthStatus, Integration
from connector_core.store.base import Store

log = logging.getLogger(__name__)
DEFAULT_LEASE_SECONDS = 10.0
EXPIRY_SINGLETON = "singleton:expiry"
AUTH_SINGLETON = "singleton:auth"
MISSED_SINGLETON = "singleton:missed"  # the missed-call loop (missed_calls.py)


class Role(StrEnum):
    """What a ``connector serve`` process does (``--role``)."""

    ALL = "all"  # everything: one process serves the whole service
    INGEST = "ingest"  # takes webhooks: authenticates, stores, acknowledges
    WORKER = "worker"  # drains the inbox, runs hooks, serves agents and the console

    @property
    def ingests(self) -> bool:
        return self is not Role.WORKER

    @property
    def works(self) -> bool:
        return self is not Role.INGEST


def owner_id() -> str:
    """This process's name as a lease holder: ``host:pid:random`` (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def call_lease(account: str, call_id: str) -> str:
    """The lease a worker holds while it processes a call's events."""
    return f"call:{account}/{call_id}"


def dispatch_lease(integration: str, account: str, call_id: str) -> str:
    """The lease a dispatcher holds while it runs an integration's hook calls for a call."""
    return f"dispatch:{integration}/{account}/{call_id}"


class Leases:
    """The leases this process holds in ``store``, taken, renewed and given back by it."""

    def __init__(
        self, store: Store, owner: str | None = None, ttl: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self.store = store
        self.owner = owner or owner_id()
        self.ttl = ttl
        self.held: set[str] = set()

    async def take(self, names: Iterable[str]) -> set[str]:
        """Take the free leases among ``names`` (one round trip); returns those held now."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return set()
        got = await self.store.take_leases(wanted, self.owner, self.ttl)
        self.held |= got
        return got

    async def hold(self, name: str) -> bool:
        """Take or keep the lease ``name``; whether this process holds it now."""
        return name in await self.take([name])

    async def release(self, names: Iterable[str]) -> None:
        """Give ``names`` back; a store that fails to hear it lets them expire instead."""
        names = [n for n in names if n in self.held]
        if not names:
            return
        self.held.difference_update(names)
        try:
            await self.store.release_leases(self.owner, names)
        except Exception as exc:
            log.warning("leases not given back (they expire in %g s): %s", self.ttl, exc)

    async def release_all(self) -> None:
        """Give back every lease of this process (at shutdown)."""
        self.held.clear()
        try:
            await self.store.release_leases(self.owner)
        except Exception as exc:
            log.warning("leases not given back (they expire in %g s): %s", self.ttl, exc)

    async def renew(self) -> None:
        """Extend every lease held, so none expires while its work goes on."""
        if not self.held:
            return
        renewed = await self.store.renew_leases(self.owner, self.ttl)
        if renewed < len(self.held):
            # Renewed late (the loop was held up): work whose lease another process took
            # meanwhile may run twice; the tracker and the effect keys make that harmless.
            log.warning(
                "%d of %d leases had expired before they were renewed",
                len(self.held) - renewed,
                len(self.held),
            )

    @contextlib.asynccontextmanager
    async def holding(self, name: str, poll: float = 0.2) -> AsyncIterator[None]:
        """Hold ``name`` for the block, waiting for another holder to give it up or die."""
        # Another process gives it up: nothing in this one to wait on but the store.
        while not await self.hold(name):  # noqa: ASYNC110
            await asyncio.sleep(poll)
        try:
            yield
        finally:
            await self.release([name])


def singleton(
    leases: Leases, name: str, one_round: Callable[[], Awaitable[bool | None]]
) -> Callable[[], Awaitable[bool]]:
    """A supervised round that runs only in the process holding the lease ``name``.

    The lease is taken (or kept) at each round and renewed by the leases loop between
    rounds, so one process keeps the round until it stops or dies; then another takes it.
    """

    async def run() -> bool:
        if not await leases.hold(name):
            return False
        return bool(await one_round())

    return run


class AuthMirror:
    """Every process shows the cluster's latest authorisation checks (``/readyz``, console)."""

    def __init__(self, store: Store, integrations: dict[str, Integration]) -> None:
        self.store = store
        self.integrations = integrations
        self._seen: dict[str, float] = {}  # key -> checked_at of the result applied

    async def refresh(self) -> None:
        """Apply each stored result newer than the one applied (a local verdict since, such as
        a hook refused for its credentials, stays until the next check)."""
        for key, stored in (await self.store.auth_results()).items():
            integration = self.integrations.get(key)
            if integration is None or self._seen.get(key, -1.0) >= stored.checked_at:
                continue
            self._seen[key] = stored.checked_at
            integration.auth = AuthResult(AuthStatus(stored.status), stored.reason)


class WorkerLocked(RuntimeError):
    """Another worker process uses this SQLite file."""


@contextlib.contextmanager
def exclusive_worker(database: Path) -> Iterator[None]:
    """Hold ``<database>.worker.lock`` for the block, or raise ``WorkerLocked`` at once.

    SQLite's coordination lives in one process's memory: two workers on one file would
    process a call's events at the same time. The kernel frees the lock when the process
    dies, so a killed worker never leaves it behind.
    """
    path = Path(f"{database}.worker.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[bytes] = path.open("ab")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkerLocked(
                f"another connector worker uses {database} (SQLite serves one worker"
                " process; use PostgreSQL for several)"
            ) from None
        yield
    finally:
        handle.close()
