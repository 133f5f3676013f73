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

The limiter waits instead of failing: a caller over budget sleeps until a slot frees up. Waiters
are served by priority, then in arrival order: a request of the work that completes a call (the
hang-up's owner and comment, :class:`connector_core.pacing.Priority`) takes the next slot before
other calls' ring-time lookups that queued earlier. The priority is the hook call's
(``pacing.work_urgency``, set by the dispatcher and raised by it when a call hangs up while its
ring-time request still waits), so the plugin's code passes nothing. Ring-time work also leaves
the last ``reserve`` slots of any 60 s window (a twentieth: 5 of 100) to completing work, so a
hang-up finds a slot at once when ring-time work alone would fill the window. Low priority
still progresses: a waiter that ``max_overtaken`` later arrivals have overtaken is served as
the highest priority, in its arrival order (it waits for at most that many extra slots). After a
429 the client calls :meth:`SlidingWindowLimiter.pause_for`, and every caller then waits until the
server's ``Retry-After`` has passed. That wait is a queue wait: it does not count against the hook
timeout (:mod:`connector_core.hooktime`). :meth:`SlidingWindowLimiter.budget` tells the
dispatcher how much the windows can serve soon, so it starts no more calls than that
(:mod:`connector_core.pacing`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from connector_core.clock import Clock
from connector_core.plugin import Budget, Priority, Urgency, queue_wait, work_urgency

__all__ = [
    "DEFAULT_BURST_PER_SECOND",
    "DEFAULT_PER_MINUTE",
    "MonotonicClock",
    "Sleep",
    "SlidingWindowLimiter",
]

DEFAULT_PER_MINUTE = 100
DEFAULT_BURST_PER_SECOND = 5
# Later arrivals a waiter lets go first before it is served in arrival order: at the default
# 100/min, a ring-time request waits at most ~12 s longer than it would first come, first served.
DEFAULT_MAX_OVERTAKEN = 20
# The default reserve for completing work: a twentieth of the minute (5 of 100).
RESERVE_DIVISOR = 20

# A fake clock advanced by exactly the computed wait can land one float ulp short of the target
# (1.7e9 + x - 1.7e9 != x). Without a tolerance the limiter would sleep again for ~1e-7 s.
_EPSILON = 1e-6

Sleep = Callable[[float], Awaitable[None]]
Then = Callable[[], Awaitable[object]]


@dataclass(eq=False)
class _Waiter:
    """A caller waiting for its slot."""

    urgency: Urgency  # read live: the dispatcher raises it when the call hangs up
    seq: int  # arrival order
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # set: look again
    overtaken: int = 0  # later arrivals served before it


class MonotonicClock:
    """The default limiter clock.

    ``time.monotonic`` instead of wall time: an NTP step backwards must not make the limiter wait
    for an hour, nor a step forwards let a whole minute's budget through at once.
    """

    def now(self) -> float:
        return time.monotonic()


class SlidingWindowLimiter:
    """Lets at most ``per_minute`` acquisitions through in any 60 s window and at most
    ``burst_per_second`` in any 1 s window; callers over budget wait rather than fail, served
    by priority, then in arrival order (a waiter overtaken ``max_overtaken`` times goes first).

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
        max_overtaken: int = DEFAULT_MAX_OVERTAKEN,
        reserve: int | None = None,
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
        self.max_overtaken = max_overtaken
        # Slots of the minute ring-time work leaves to the work that completes a call, so a
        # hang-up finds one at once even when ring-time work would fill the window.
        self.reserve = per_minute // RESERVE_DIVISOR if reserve is None else reserve
        if not 0 <= self.reserve < self.per_minute:
            raise ValueError(
                f"reserve must be at least 0 and below per_minute ({per_minute}), got {reserve}"
            )
        self.routine_per_minute = self.per_minute - self.reserve
        # Only the first waiter (by rank) may take a slot; without the queue concurrent callers
        # could all wake at the same instant and overshoot the window together.
        self._waiters: list[_Waiter] = []
        self._arrivals = itertools.count()

    def __repr__(self) -> str:
        return (
            f"SlidingWindowLimiter(per_minute={self.per_minute}, "
            f"burst_per_second={self.burst_per_second})"
        )

    def ready_at(self, priority: int = Priority.COMPLETING) -> float:
        """The earliest clock time at which the next acquisition of ``priority`` may go
        through (ring-time work leaves the minute's ``reserve`` alone)."""
        return self._ready(self._minute, self._second, self._cap(priority))

    def _cap(self, priority: int) -> int:
        """How many grants in the 60 s window leave room for one more of ``priority``."""
        return self.per_minute if priority >= Priority.COMPLETING else self.routine_per_minute

    def _ready(self, minute: deque[float], second: deque[float], cap: int) -> float:
        ready = self._paused_until
        if len(minute) >= cap:
            # The window holds fewer than ``cap`` once this grant has left it.
            ready = max(ready, minute[len(minute) - cap] + self.MINUTE + self.margin)
        if len(second) == self.burst_per_second:
            ready = max(ready, second[0] + self.SECOND + self.margin)
        return ready

    def budget(self, within: float) -> Budget:
        """How many acquisitions the windows would let through in the next ``within`` seconds
        (callers already waiting not subtracted), and when that number next grows. Counted
        for the work that completes a call: ring-time work may find up to ``reserve`` fewer.

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
            granted = max(now, self._ready(minute, second, self.per_minute))
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

    async def acquire(self, urgency: Urgency | None = None, *, then: Then | None = None) -> float:
        """Wait until a request may be sent, record it, and return the seconds spent waiting.

        ``urgency``: the waiter's priority (higher first); by default the running hook call's
        (:func:`connector_core.pacing.work_urgency`). ``then``: awaited before the next
        waiter's turn (a slot of a window shared with other processes), so the order holds
        through it too.

        The wait is a queue wait (:func:`connector_core.hooktime.queue_wait`): it does not
        count against the hook timeout of the hook call that makes the request.
        """
        me = _Waiter(urgency or work_urgency(), next(self._arrivals))
        self._waiters.append(me)
        began = self._clock.now()
        try:
            # A raise of the caller's priority while it waits may make it the first.
            with me.urgency.watch(self._wake_first):
                granted = await self._take_turn(me)
                for other in self._waiters:
                    other.overtaken += other.seq < me.seq
                if then is not None:
                    async with queue_wait():
                        await then()
        finally:
            self._waiters.remove(me)
            self._wake_first()
        return max(0.0, granted - began)

    async def _take_turn(self, me: _Waiter) -> float:
        """Wait until ``me`` is the first waiter and the windows have room for its priority;
        record its grant (with no await in between) and return the grant's time."""
        async with queue_wait():
            while True:
                if self._first() is not me:
                    me.turn.clear()
                    await me.turn.wait()
                    continue
                now = self._clock.now()
                ready = self.ready_at(self._rank_priority(me))
                if now >= ready - _EPSILON:
                    # Record the nominal time rather than a clock reading a hair early, so
                    # the bookkeeping itself never shows N + 1 grants in a window.
                    granted = max(now, ready)
                    self._minute.append(granted)
                    self._second.append(granted)
                    return granted
                # Re-check after sleeping: pause_for may have moved the target, a waiter of
                # a higher priority may go first, or this one's priority rose (a nudge).
                await self._nap(me, ready - now)

    async def _nap(self, me: _Waiter, seconds: float) -> None:
        """Sleep ``seconds``, or until ``me`` is nudged (its priority rose: the reserve may
        serve it now)."""
        me.turn.clear()
        nap = asyncio.ensure_future(self._sleep(seconds))
        nudge = asyncio.ensure_future(me.turn.wait())
        try:
            await asyncio.wait((nap, nudge), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            nudge.cancel()

    def _wake_first(self) -> None:
        if self._waiters:
            self._first().turn.set()

    def waiting(self) -> list[int]:
        """The priorities of the callers waiting now, in arrival order."""
        return [w.urgency.priority for w in sorted(self._waiters, key=lambda w: w.seq)]

    def _rank_priority(self, waiter: _Waiter) -> int:
        """The waiter's priority, or the top one once ``max_overtaken`` later arrivals went
        first (its wait is bounded: it goes next, and may use the reserve)."""
        if waiter.overtaken >= self.max_overtaken:
            return max(Priority)
        return waiter.urgency.priority

    def _first(self) -> _Waiter:
        """The waiter whose turn it is: by priority, then arrival."""
        return min(self._waiters, key=lambda w: (-self._rank_priority(w), w.seq))
