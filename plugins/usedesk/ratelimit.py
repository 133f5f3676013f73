"""Client-side throttling for the Usedesk API.

Usedesk documents one limit, and documents it badly: an older page says 150 requests per minute
for ``/tickets`` and, in the same breath, "0.4 requests per second from one IP" (research notes
§1.5). Only the first is plausible for a helpdesk integration, so the defaults aim well below it:

* **100 requests in any 60 s window** — a third of headroom under 150/min, because the same API
  token is often shared with integrations we cannot see (Sipuni's own, chat bots, scripts).
* **at most 5 requests in any 1 s window** — so a backlog flushed after an outage spreads out
  instead of firing 100 requests in one second, which is what per-IP throttles punish first. One
  call event needs 4–6 sequential requests, so a burst of 5 lets a single call through unhindered.

Both are *sliding* windows over the times requests were let through, not token buckets: a token
bucket with capacity B and rate N/60 admits B + N requests in some 60 s windows, and the point
here is a hard "never more than N in any minute".

The limiter waits instead of failing: a caller over budget sleeps until a slot frees up. After a
429 the client calls :meth:`SlidingWindowLimiter.pause_for`, and every caller then waits until the
server's ``Retry-After`` has passed. That wait is a queue wait: it does not count against the hook
timeout (:mod:`connector_core.hooktime`). :meth:`SlidingWindowLimiter.budget` tells the
dispatcher how much the windows can serve soon, so it starts no more calls than that
(:mod:`connector_core.pacing`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from connector_core.clock import Clock
from connector_core.plugin import Budget, queue_wait

__all__ = [
    "DEFAULT_BURST_PER_SECOND",
    "DEFAULT_PER_MINUTE",
    "MonotonicClock",
    "Sleep",
    "SlidingWindowLimiter",
]

DEFAULT_PER_MINUTE = 100
DEFAULT_BURST_PER_SECOND = 5

# A fake clock advanced by exactly the computed wait can land one float ulp short of the target
# (1.7e9 + x - 1.7e9 != x). Without a tolerance the limiter would sleep again for ~1e-7 s.
_EPSILON = 1e-6

Sleep = Callable[[float], Awaitable[None]]


class MonotonicClock:
    """The default limiter clock.

    ``time.monotonic`` instead of wall time: an NTP step backwards must not make the limiter wait
    for an hour, nor a step forwards let a whole minute's budget through at once.
    """

    def now(self) -> float:
        return time.monotonic()


class SlidingWindowLimiter:
    """Lets at most ``per_minute`` acquisitions through in any 60 s window and at most
    ``burst_per_second`` in any 1 s window; callers over budget wait (FIFO) rather than fail.

    ``clock`` and ``sleep`` are injectable so tests run instantly: pass a
    :class:`connector_core.clock.FakeClock` and a ``sleep`` that advances it. They must agree: a
    fake clock with the real ``asyncio.sleep`` would never see time pass.
    """

    MINUTE = 60.0
    SECOND = 1.0

    def __init__(
        self,
        per_minute: int = DEFAULT_PER_MINUTE,
        *,
        burst_per_second: int = DEFAULT_BURST_PER_SECOND,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        margin: float = 0.0,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, got {per_minute}")
        if burst_per_second < 1:
            raise ValueError(f"burst_per_second must be at least 1, got {burst_per_second}")
        self.per_minute = per_minute
        # A burst larger than the minute budget would be meaningless; clamp so the docs stay true.
        self.burst_per_second = min(burst_per_second, per_minute)
        # Requests reach the server a few ms after they are let through, not all equally
        # late: a window exactly 60 s wide here can be 59.99 s wide there. The margin
        # widens both windows so the server never counts N + 1.
        self.margin = margin
        self._clock: Clock = clock or MonotonicClock()
        self._sleep: Sleep = sleep or asyncio.sleep
        # Only the last N grant times can ever decide a wait, so bounded deques are enough.
        self._minute: deque[float] = deque(maxlen=self.per_minute)
        self._second: deque[float] = deque(maxlen=self.burst_per_second)
        self._paused_until = float("-inf")
        # The lock makes waiters queue in arrival order; without it concurrent callers could all
        # wake at the same instant and overshoot the window together.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"SlidingWindowLimiter(per_minute={self.per_minute}, "
            f"burst_per_second={self.burst_per_second})"
        )

    def ready_at(self) -> float:
        """The earliest clock time at which the next acquisition may go through."""
        return self._ready(self._minute, self._second)

    def _ready(self, minute: deque[float], second: deque[float]) -> float:
        ready = self._paused_until
        if len(minute) == self.per_minute:
            ready = max(ready, minute[0] + self.MINUTE + self.margin)
        if len(second) == self.burst_per_second:
            ready = max(ready, second[0] + self.SECOND + self.margin)
        return ready

    def budget(self, within: float) -> Budget:
        """How many acquisitions the windows would let through in the next ``within`` seconds
        (callers already waiting not subtracted), and when that number next grows.

        The dispatcher uses it to start no more calls than the limit can serve soon
        (:mod:`connector_core.pacing`).
        """
        now = self._clock.now()
        horizon = now + within
        minute = deque(self._minute, maxlen=self.per_minute)
        second = deque(self._second, maxlen=self.burst_per_second)
        # Grant one by one on copies of the windows, as acquire() would, until past the
        # horizon: at most a minute's budget, so this stays cheap.
        for count in range(self.per_minute + 1):
            granted = max(now, self._ready(minute, second))
            if granted > horizon + _EPSILON:
                return Budget(count, granted - horizon)
            minute.append(granted)
            second.append(granted)
        return Budget(self.per_minute + 1)

    def delay(self) -> float:
        """Seconds the next acquisition would wait if it were made now (0 if none)."""
        return max(0.0, self.ready_at() - self._clock.now())

    @property
    def paused_until(self) -> float | None:
        """Clock time until which a server-requested pause holds, or ``None`` if no pause is set."""
        return None if self._paused_until == float("-inf") else self._paused_until

    def pause_for(self, seconds: float) -> None:
        """Hold every acquisition for ``seconds`` from now (e.g. a 429's ``Retry-After``).

        A shorter pause never cuts an existing longer one short.
        """
        if seconds <= 0:
            return
        self._paused_until = max(self._paused_until, self._clock.now() + seconds)

    async def acquire(self) -> float:
        """Wait until a request may be sent, record it, and return the seconds spent waiting.

        The wait is a queue wait (:func:`connector_core.hooktime.queue_wait`): it does not
        count against the hook timeout of the hook call that makes the request.
        """
        async with queue_wait(), self._lock:
            waited = 0.0
            while True:
                now = self._clock.now()
                ready = self.ready_at()
                if now >= ready - _EPSILON:
                    break
                # Re-check after sleeping: pause_for may have moved the target while we slept.
                await self._sleep(ready - now)
                waited += ready - now
            # Record the nominal time rather than a clock reading a hair early, so the bookkeeping
            # itself never shows N + 1 grants in a window.
            granted = max(now, ready)
            self._minute.append(granted)
            self._second.append(granted)
            return waited
