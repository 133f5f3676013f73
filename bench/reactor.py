"""A minimal event loop for ``bench.loadgen``: epoll on non-blocking sockets, and timers.

asyncio costs the load generator about twice the CPU per request of a bare epoll loop
(transports, handles, a future or callback per step), CPU the server under test on the same
machine then does not get. This loop does only what the generator needs: call a socket's
handler when epoll reports it, and call a function at a time (``time.perf_counter``).
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
from collections.abc import Callable
from typing import Protocol

# The longest epoll wait with no timer due: how soon the loop notices it should stop.
MAX_WAIT = 1.0


class Handler(Protocol):
    """What owns a registered file descriptor."""

    def on_event(self, events: int) -> None:
        """epoll reported ``events`` (``select.EPOLL*`` bits) on the handler's socket."""

    @property
    def closed(self) -> bool:
        """True once the handler's socket is closed: a late event for it is ignored."""


class Reactor:
    """Dispatches epoll events to handlers and runs timers, until told to stop."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.stopped = False

    def register(self, fd: int, events: int, handler: Handler) -> None:
        self.handlers[fd] = handler
        self.epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        """Forget ``fd``; call before closing its socket."""
        del self.handlers[fd]
        self.epoll.unregister(fd)

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``time.perf_counter()`` reaches ``when`` (never before)."""
        heapq.heappush(self._timers, (when, next(self._order), callback))

    def run(self) -> None:
        """Dispatch events and timers until :meth:`stop`."""
        timers = self._timers
        poll = self.epoll.poll
        handlers = self.handlers
        clock = time.perf_counter
        while not self.stopped:
            wait = MAX_WAIT
            if timers:
                wait = min(MAX_WAIT, max(0.0, timers[0][0] - clock()))
            # Handlers looked up before any runs: a socket closed by one handler frees its
            # descriptor number for a new socket, which must not get the old one's events.
            batch = [(handlers.get(fd), events) for fd, events in poll(wait)]
            for handler, events in batch:
                if handler is not None and not handler.closed:
                    handler.on_event(events)
            now = clock()
            while timers and timers[0][0] <= now and not self.stopped:
                heapq.heappop(timers)[2]()

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.epoll.close()
