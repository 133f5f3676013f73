"""A hook's timeout measures the CRM, not the time the hook spends waiting its turn.

``PluginHost`` runs every hook call under :func:`hook_deadline`. Inside it, code that waits for
something other than the CRM — a rate limiter's next slot, a lock another call holds — wraps
the wait in :func:`queue_wait`, and the deadline stops while it waits: a hook with a 10 s
timeout may wait a minute for the rate limiter and still have its 10 s for the requests
themselves. Outside a hook call :func:`queue_wait` does nothing, so library code (a CRM client,
a lock) can use it everywhere.

A plugin author uses it around any wait of their own::

    from connector_core.hooktime import queue_wait

    async with queue_wait():
        await my_semaphore.acquire()

A wait that is not the CRM's fault never times the hook out; bound it some other way if it
can last for ever (the dispatcher starts only as much work as the integration's budget can
serve soon: :mod:`connector_core.pacing`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["hook_deadline", "queue_wait", "waiting_for_turn"]


@dataclass
class _Deadline:
    """One hook call's timeout, and the waits that have stopped it."""

    timeout: asyncio.Timeout
    active: bool = True  # False once the hook call is over: a task it left behind may wait
    waits: int = 0  # queue waits in progress (tasks the hook started may wait at once)
    remaining: float = 0.0  # what was left of the budget when the first of them began


_current: ContextVar[_Deadline | None] = ContextVar("connector_hook_deadline", default=None)
# Tasks inside a queue wait: nothing of theirs is at the CRM, so shutdown may cancel them.
_waiting: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def waiting_for_turn(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is inside :func:`queue_wait` (waiting for a turn, not for the CRM)."""
    return task in _waiting


class hook_deadline:  # lower case: it replaced a function of that name
    """Run the body under a timeout of ``seconds`` that :func:`queue_wait` stops and resumes.

    Raises ``TimeoutError`` when the body used more than ``seconds`` outside queue waits.
    (A class, not a generator-based context manager: it wraps every hook call.)
    """

    __slots__ = ("_deadline", "_seconds", "_timeout", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        self._timeout = asyncio.timeout(self._seconds)
        await self._timeout.__aenter__()
        self._deadline = _Deadline(self._timeout)
        self._token = _current.set(self._deadline)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._deadline.active = False
        _current.reset(self._token)
        # The timeout turns its own cancellation into TimeoutError; nothing is suppressed.
        await self._timeout.__aexit__(exc_type, exc, tb)
        return None


@asynccontextmanager
async def queue_wait() -> AsyncIterator[None]:
    """Wait for a turn (a rate limiter, a lock) without spending the hook's timeout.

    The time spent inside is not counted against the enclosing hook call's
    ``hook_timeout_seconds``; outside a hook call this is a no-op.
    """
    task = asyncio.current_task()
    if task is None or task in _waiting:  # not in a task, or a wait inside a wait
        async with _stopped_deadline():
            yield
        return
    _waiting.add(task)
    try:
        async with _stopped_deadline():
            yield
    finally:
        _waiting.discard(task)


@asynccontextmanager
async def _stopped_deadline() -> AsyncIterator[None]:
    deadline = _current.get()
    if deadline is None or not deadline.active or deadline.timeout.expired():
        yield
        return
    loop = asyncio.get_running_loop()
    if deadline.waits == 0:
        when = deadline.timeout.when()
        if when is None:  # no deadline to stop
            yield
            return
        deadline.remaining = when - loop.time()
        deadline.timeout.reschedule(None)
    deadline.waits += 1
    try:
        yield
    finally:
        deadline.waits -= 1
        if deadline.waits == 0 and deadline.active:
            deadline.timeout.reschedule(loop.time() + deadline.remaining)
