"""Run-time fault injection and the rate observer.

Faults apply to Usedesk API paths only, never to /_sandbox/, so a test can always inspect and
repair the sandbox it has just broken.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

FAULT_MODES = ("none", "429", "500", "hang", "drop", "error", "late")
_KEYS = {
    "mode",
    "count",
    "retry_after",
    "status",
    "paths",
    "latency_ms",
    "apply",
    "message",
    "hang_max_s",
    "late_s",
}


class FaultConfigError(ValueError):
    """The fault request is malformed; the message says which field."""


@dataclass(frozen=True)
class FaultPlan:
    """What the next API requests suffer.

    ``count`` None means "every matching request until changed". ``apply`` runs the real handler
    first, so the state changes although the client sees a failure: the ambiguous outcome a
    retrying client must survive without creating duplicates. ``late`` carries the request out
    ``late_s`` seconds after it arrived, whether or not the client still waits.
    """

    mode: str = "none"
    count: int | None = None
    retry_after: float | None = None
    status: int = 500
    paths: tuple[str, ...] | None = None
    latency_ms: float = 0.0
    apply: bool = False
    message: str = "Internal error"
    # A hung request is let go after this long even if nobody releases it, so a forgotten
    # hang cannot keep a test run alive forever.
    hang_max_s: float = 300.0
    # "late": the request is carried out this long after it arrived, and answered then (a
    # client with a shorter timeout has given up by then: it never learns the write landed).
    late_s: float = 20.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["paths"] = list(self.paths) if self.paths is not None else None
        return data


def _number(body: Mapping[str, Any], key: str, *, minimum: float) -> float:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise FaultConfigError(f"{key} must be a number >= {minimum}")
    return float(value)


def merge_plan(current: FaultPlan, body: Mapping[str, Any]) -> FaultPlan:
    """Apply a /_sandbox/faults body: given keys change, the rest (notably latency) stays.

    ``{"mode": "none"}`` clears everything, latency included, unless the same body sets one.
    """
    unknown = set(body) - _KEYS
    if unknown:
        raise FaultConfigError(f"unknown fault keys: {sorted(unknown)}")
    mode = str(body.get("mode", current.mode))
    if mode not in FAULT_MODES:
        raise FaultConfigError(f"mode must be one of {FAULT_MODES}")
    if "mode" not in body:
        plan = current
    elif mode == "none":
        plan = FaultPlan()
    else:
        # A new mode starts from a clean slate except for latency, which is orthogonal.
        plan = FaultPlan(latency_ms=current.latency_ms)
    changes: dict[str, Any] = {"mode": mode}
    if "count" in body:
        count = body["count"]
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise FaultConfigError("count must be a positive integer or null")
        changes["count"] = count
    if "retry_after" in body:
        changes["retry_after"] = (
            None if body["retry_after"] is None else _number(body, "retry_after", minimum=0)
        )
    if "status" in body:
        status = body["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise FaultConfigError("status must be an integer 500..599")
        changes["status"] = status
    if "paths" in body:
        paths = body["paths"]
        if paths is not None and (
            not isinstance(paths, list) or not all(isinstance(x, str) for x in paths)
        ):
            raise FaultConfigError("paths must be a list of strings or null")
        changes["paths"] = tuple(paths) if paths is not None else None
    if "latency_ms" in body:
        changes["latency_ms"] = _number(body, "latency_ms", minimum=0)
    if "late_s" in body:
        changes["late_s"] = _number(body, "late_s", minimum=0)
    if "hang_max_s" in body:
        changes["hang_max_s"] = _number(body, "hang_max_s", minimum=0)
    if "apply" in body:
        changes["apply"] = bool(body["apply"])
    if "message" in body:
        changes["message"] = str(body["message"])
    return replace(plan, **changes)


class FaultInjector:
    def __init__(self) -> None:
        self.plan = FaultPlan()
        self._release: asyncio.Event | None = None
        self._release_loop: asyncio.AbstractEventLoop | None = None
        self.hanging = 0  # requests currently held by a "hang" fault
        self._hang_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def _release_event(self) -> asyncio.Event:
        # One sandbox may outlive an event loop (a module-level fixture), and an Event is
        # bound to the loop that first waits on it.
        loop = asyncio.get_running_loop()
        if self._release is None or self._release_loop is not loop:
            self._release, self._release_loop = asyncio.Event(), loop
        return self._release

    def configure(self, body: Mapping[str, Any]) -> FaultPlan:
        self.plan = merge_plan(self.plan, body)
        return self.plan

    def clear(self) -> None:
        self.plan = FaultPlan()

    def take(self, path: str) -> FaultPlan | None:
        """The plan to apply to this request, consuming one unit of ``count``."""
        plan = self.plan
        if plan.mode == "none" or (plan.paths is not None and path not in plan.paths):
            return None
        if plan.count is not None:
            remaining = plan.count - 1
            self.plan = (
                replace(plan, count=remaining)
                if remaining
                else FaultPlan(latency_ms=plan.latency_ms)
            )
        return plan

    async def hang(self, plan: FaultPlan, client_gone: Callable[[], bool]) -> None:
        """Wait until released, until the client disconnects, or until ``hang_max_s``."""
        release = self._release_event()
        deadline = asyncio.get_running_loop().time() + plan.hang_max_s
        self.hanging += 1
        for wanted, waiter in self._hang_waiters:
            if wanted <= self.hanging and not waiter.done():
                waiter.set_result(None)
        try:
            while not release.is_set() and not client_gone():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                # Poll because aiohttp does not cancel handlers when a client goes away.
                try:
                    await asyncio.wait_for(release.wait(), timeout=min(0.05, left))
                except TimeoutError:
                    pass
        finally:
            self.hanging -= 1

    async def wait_hanging(self, count: int = 1) -> None:
        """Return once ``count`` requests are hung, so a test knows the fault has bitten.

        Bound it with ``asyncio.timeout`` in the caller if the request might never arrive.
        """
        if self.hanging >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._hang_waiters.append(entry)
        try:
            await waiter
        finally:
            self._hang_waiters.remove(entry)

    def release_hung(self) -> None:
        """Let every hung request go; later hangs wait on a fresh event."""
        if self._release is not None:
            self._release.set()
        self._release = None


@dataclass
class RateObserver:
    """Arrival times of API requests, to assert a client's pacing without timing the test."""

    monotonic: Callable[[], float] = time.monotonic
    _events: list[tuple[float, str]] = field(default_factory=list)

    def record(self, path: str) -> float:
        now = self.monotonic()
        self._events.append((now, path))
        return now

    def clear(self) -> None:
        self._events.clear()

    def timestamps(self, path: str | None = None) -> list[float]:
        return sorted(t for t, p in self._events if path is None or p == path)

    def max_in_window(self, window_s: float, path: str | None = None) -> int:
        """Most requests inside any half-open interval [t, t + window_s)."""
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        times = self.timestamps(path)
        best = 0
        for i, start in enumerate(times):
            best = max(best, bisect.bisect_left(times, start + window_s, lo=i) - i)
        return best

    def summary(self) -> dict[str, int]:
        return {
            "total": len(self._events),
            "max_per_1s": self.max_in_window(1.0),
            "max_per_60s": self.max_in_window(60.0),
        }
