"""One supervisor for every background loop, so none of them can stop silently.

A loop is a named async *round* (one pass over its work) and a pace: run the round, then wait
for its interval or for its wake-up event. A round that raises is logged at once with its
traceback (logger ``connector_core.supervisor.<loop>``), counted, and followed by a capped
exponential backoff; then the loop goes on, so a store that was full or a bug met by one
round heals by itself when its cause goes away. The time of each loop's last completed round
and its last error are kept for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from connector_core.clock import Clock

log = logging.getLogger(__name__)

# A round returns True when it left work it could do at once (go round again without
# waiting), False or None when the loop should wait for its interval or wake-up.
Round = Callable[[], Awaitable[bool | None]]
Sleep = Callable[[float], Awaitable[None]]
Stats = dict[str, int]


@dataclass(frozen=True)
class Backoff:
    """Wait after the n-th failed round in a row: ``initial × 2^(n-1)``, at most ``cap``."""

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failed rounds (``failures`` ≥ 1)."""
        return min(self.cap, self.initial * 2.0 ** max(0, failures - 1))


@dataclass
class LoopState:
    """What ``/readyz`` and the tests see of one loop."""

    name: str
    interval: float
    # Whether work is waiting for this loop, judged from the store's counts: a loop that
    # has not gone round for a while is a problem only while it has something to do.
    has_work: Callable[[Stats], bool] = field(repr=False, default=lambda stats: True)
    started_at: float | None = None
    last_round_at: float | None = None
    rounds: int = 0
    errors: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def stalled(self, now: float, stall_seconds: float, stats: Stats) -> bool:
        """No round completed for ``interval + stall_seconds`` while work is pending."""
        since = self.last_round_at if self.last_round_at is not None else self.started_at
        if since is None:
            return False
        return now - since > self.interval + stall_seconds and self.has_work(stats)

    def describe(self, now: float) -> dict[str, object]:
        """The loop as JSON for ``/readyz``."""
        return {
            "last_round_seconds_ago": (
                None if self.last_round_at is None else round(now - self.last_round_at, 1)
            ),
            "rounds": self.rounds,
            "errors": self.errors,
            "failing": self.failures_in_a_row > 0,
            "last_error": self.last_error,
            "last_error_seconds_ago": (
                None if self.last_error_at is None else round(now - self.last_error_at, 1)
            ),
        }


@dataclass
class _Loop:
    state: LoopState
    one_round: Round
    wakeup: asyncio.Event | None


class Supervisor:
    """Runs loops as tasks; no exception from a round ends a loop, only ``stop()`` does."""

    def __init__(
        self,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
        on_error: Callable[[str], None] = lambda loop: None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.on_error = on_error  # on_error(loop name): e.g. a metrics counter
        self.sleep = sleep  # the backoff's sleep, and the interval of loops without a wake-up
        self.loops: dict[str, LoopState] = {}
        self._loops: list[_Loop] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(
        self,
        name: str,
        one_round: Round,
        *,
        interval: float,
        wakeup: asyncio.Event | None = None,
        has_work: Callable[[Stats], bool] = lambda stats: True,
    ) -> LoopState:
        """Register a loop; it starts with ``start()``."""
        if name in self.loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        state = LoopState(name, interval, has_work)
        self.loops[name] = state
        self._loops.append(_Loop(state, one_round, wakeup))
        return state

    def start(self) -> None:
        """Start every registered loop as a task."""
        for loop in self._loops:
            loop.state.started_at = self.clock.now()
            self._tasks.append(asyncio.create_task(self.run(loop), name=loop.state.name))

    async def stop(self) -> None:
        """Cancel every loop and wait for them to end (what a round started may go on)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def stalled(self, stall_seconds: float, stats: Stats) -> list[str]:
        """Names of loops with work pending that completed no round for too long."""
        now = self.clock.now()
        return [s.name for s in self.loops.values() if s.stalled(now, stall_seconds, stats)]

    async def run(self, loop: _Loop) -> None:
        """Go round for ever; returns only by cancellation."""
        state, logger = loop.state, log.getChild(loop.state.name)
        while True:
            if loop.wakeup is not None:
                loop.wakeup.clear()
            try:
                more = await loop.one_round()
            except Exception as exc:
                # Not BaseException: a cancellation is the shutdown and must end the loop.
                state.errors += 1
                state.failures_in_a_row += 1
                state.last_error = f"{type(exc).__name__}: {exc}"[:500]
                state.last_error_at = self.clock.now()
                self.on_error(state.name)
                delay = self.backoff.delay(state.failures_in_a_row)
                logger.error(
                    "loop %s: round failed (%d in a row), next round in %.1f s",
                    state.name,
                    state.failures_in_a_row,
                    delay,
                    exc_info=exc,
                )
                await self.sleep(delay)
                continue
            if state.failures_in_a_row:
                logger.warning(
                    "loop %s: recovered after %d failed round(s)",
                    state.name,
                    state.failures_in_a_row,
                )
            state.failures_in_a_row = 0
            state.rounds += 1
            state.last_round_at = self.clock.now()
            if more:
                await asyncio.sleep(0)  # let the rest of the service run between rounds
            elif loop.wakeup is None:
                await self.sleep(state.interval)
            else:
                # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that lands as
                # the event is set, and shutdown would then wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(state.interval):
                        await loop.wakeup.wait()
