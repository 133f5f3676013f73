"""The Usedesk limiter: hard per-minute cap, burst smoothing, server-requested pauses.

Everything runs on a FakeClock whose ``sleep`` advances it, so no test waits for real.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.clock import FakeClock
from connector_core.hooktime import hook_deadline
from connector_core.pacing import Budget, Priority, Urgency, prioritised
from plugins.usedesk.ratelimit import MonotonicClock, SlidingWindowLimiter

TOL = 1e-6


class FakeTime:
    """A FakeClock plus a sleep that advances it and records every wait."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        # Yield like a real sleep would, so other tasks get to run in between.
        await asyncio.sleep(0)

    def limiter(self, per_minute: int, burst: int) -> SlidingWindowLimiter:
        return SlidingWindowLimiter(
            per_minute, burst_per_second=burst, clock=self.clock, sleep=self.sleep
        )


def max_in_window(times: list[float], window: float) -> int:
    """The largest number of grants inside any half-open window [t, t + window)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        count = sum(1 for t in ordered[i:] if t < start + window - TOL)
        best = max(best, count)
    return best


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


async def test_requests_within_budget_do_not_wait(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=100, burst=5)
    waits = [await limiter.acquire() for _ in range(5)]
    assert waits == [0.0] * 5
    assert ft.sleeps == []


async def test_burst_cap_spreads_a_backlog_to_the_next_second(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=100, burst=2)
    start = ft.clock.now()
    await limiter.acquire()
    await limiter.acquire()
    assert limiter.delay() == pytest.approx(1.0)
    waited = await limiter.acquire()
    assert waited == pytest.approx(1.0)
    assert ft.clock.now() - start == pytest.approx(1.0)


async def test_minute_cap_waits_for_the_oldest_grant_to_leave_the_window(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=3, burst=3)
    start = ft.clock.now()
    for _ in range(3):
        await limiter.acquire()
    ft.clock.advance(20)
    # The three grants at `start` leave the window only at start + 60, i.e. 40 s from now.
    assert await limiter.acquire() == pytest.approx(40.0)
    assert ft.clock.now() == pytest.approx(start + 60)


@pytest.mark.parametrize(
    ("priority", "served"), [(Priority.COMPLETING, 100), (Priority.ROUTINE, 95)]
)
async def test_concurrent_backlog_never_exceeds_either_window(
    ft: FakeTime, priority: Priority, served: int
) -> None:
    limiter = ft.limiter(per_minute=100, burst=5)
    start = ft.clock.now()
    grants: list[float] = []

    async def one() -> None:
        await limiter.acquire(Urgency(priority))
        grants.append(ft.clock.now())

    await asyncio.gather(*(one() for _ in range(250)))

    assert len(grants) == 250
    # Ring-time work leaves the minute's reserve (5 of 100) to the work completing calls.
    assert max_in_window(grants, 60.0) == served
    assert max_in_window(grants, 1.0) == 5
    # The grants at 5/s fill seconds 0..19 (0..18 for ring-time work); the next must wait for
    # the first to age out at 60 s, not a moment longer.
    ordered = sorted(grants)
    assert ordered[served - 1] - start == pytest.approx((served - 1) // 5)
    assert ordered[served] - start == pytest.approx(60.0)


async def test_the_reserve_is_left_to_the_work_completing_calls(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=100, burst=100)
    for _ in range(95):
        await limiter.acquire(Urgency(Priority.ROUTINE))
    assert limiter.ready_at(Priority.ROUTINE) == pytest.approx(ft.clock.now() + 60.0)
    for _ in range(5):  # a hang-up's request finds a slot at once
        assert await limiter.acquire(Urgency(Priority.COMPLETING)) == 0.0
    assert limiter.delay() == pytest.approx(60.0)
    with pytest.raises(ValueError, match="reserve"):
        SlidingWindowLimiter(10, reserve=10)


async def test_waiters_are_served_in_arrival_order(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=2, burst=2)
    order: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(6)))
    assert order == [0, 1, 2, 3, 4, 5]


async def test_pause_for_holds_every_caller_until_it_expires(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=100, burst=5)
    start = ft.clock.now()
    limiter.pause_for(30)
    assert limiter.paused_until == pytest.approx(start + 30)

    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(ft.clock.now() - start)

    await asyncio.gather(one(), one(), one())
    assert times == pytest.approx([30.0, 30.0, 30.0])
    # Only the first waiter had to sleep; the pause was over for the others.
    assert ft.sleeps == pytest.approx([30.0])


async def test_shorter_pause_does_not_cut_a_longer_one(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=100, burst=5)
    limiter.pause_for(120)
    limiter.pause_for(5)
    assert limiter.delay() == pytest.approx(120.0)
    limiter.pause_for(0)
    limiter.pause_for(-3)
    assert limiter.delay() == pytest.approx(120.0)


async def test_pause_set_while_a_caller_sleeps_extends_its_wait(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=1, burst=1)
    start = ft.clock.now()
    await limiter.acquire()

    sleeping = asyncio.Event()
    resume = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        ft.sleeps.append(seconds)
        sleeping.set()
        await resume.wait()
        ft.clock.advance(seconds)

    limiter._sleep = slow_sleep  # only for this scenario: hold the waiter mid-sleep
    waiter = asyncio.create_task(limiter.acquire())
    await sleeping.wait()
    limiter.pause_for(100)  # a 429 arrives for another request during the wait
    limiter._sleep = ft.sleep
    resume.set()
    await waiter
    # Woke at start + 60, found the pause (set at start, +100), slept again until start + 100.
    assert ft.clock.now() - start == pytest.approx(100.0)
    assert ft.sleeps == pytest.approx([60.0, 40.0])


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="per_minute"):
        SlidingWindowLimiter(0)
    with pytest.raises(ValueError, match="burst_per_second"):
        SlidingWindowLimiter(10, burst_per_second=0)
    # A burst bigger than the whole minute budget is clamped, not an error.
    assert SlidingWindowLimiter(3, burst_per_second=10).burst_per_second == 3


def test_default_clock_is_monotonic() -> None:
    limiter = SlidingWindowLimiter()
    assert isinstance(limiter._clock, MonotonicClock)
    assert (limiter.per_minute, limiter.burst_per_second) == (100, 5)


@settings(max_examples=150, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=8),
    burst=st.integers(min_value=1, max_value=4),
    gaps=st.lists(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=90.0)), max_size=40),
)
def test_property_caps_hold_and_waits_are_minimal(
    per_minute: int, burst: int, gaps: list[float]
) -> None:
    ft = FakeTime()
    limiter = ft.limiter(per_minute, burst)
    grants: list[float] = []
    arrivals: list[float] = []

    async def scenario() -> None:
        for gap in gaps:
            ft.clock.advance(gap)
            arrivals.append(ft.clock.now())
            await limiter.acquire()
            grants.append(ft.clock.now())

    asyncio.run(scenario())

    assert max_in_window(grants, 60.0) <= per_minute
    assert max_in_window(grants, 1.0) <= min(burst, per_minute)
    for i, (arrived, granted) in enumerate(zip(arrivals, grants, strict=True)):
        assert granted >= arrived - TOL
        if granted > arrived + TOL:
            # A wait may only end exactly when an earlier grant leaves one of the two windows.
            earlier = grants[:i]
            candidates = [g + 60.0 for g in earlier] + [g + 1.0 for g in earlier]
            assert any(abs(granted - c) < 1e-3 for c in candidates), (granted, earlier)


async def test_budget_says_what_the_windows_serve_soon_and_when_more(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=12, burst=5)
    # Idle: 5 now and 5 a second later fit in 2 s; the 11th would go at 2 s, just past.
    assert limiter.budget(1.5) == Budget(10, 0.5)
    for _ in range(12):
        await limiter.acquire()  # the minute's budget, spent by t = 2 s
    assert limiter.budget(2.0).requests == 0
    # The first grants (t = 0) leave the 60 s window at t = 60: in 58 s from t = 2.
    assert limiter.budget(2.0).more_in == pytest.approx(56.0)
    ft.clock.advance(57.0)  # t = 59: the grants of t = 0 and t = 1 free up within 2 s
    assert limiter.budget(2.0) == Budget(10, pytest.approx(1.0))


async def test_budget_is_empty_while_a_server_pause_holds(ft: FakeTime) -> None:
    limiter = ft.limiter(per_minute=100, burst=5)
    limiter.pause_for(30.0)  # a 429's Retry-After
    budget = limiter.budget(2.0)
    assert budget.requests == 0 and budget.more_in == pytest.approx(28.0)


async def test_waiting_in_the_limiter_does_not_spend_the_hook_timeout() -> None:
    limiter = SlidingWindowLimiter(60, burst_per_second=1)
    limiter.SECOND = 0.1  # a short clock: one grant per 0.1 s
    async with hook_deadline(0.15):
        # Five callers queue: the last waits 0.4 s, past the 0.15 s hook timeout.
        await asyncio.gather(*(limiter.acquire() for _ in range(5)))


class HeldTime(FakeTime):
    """Time stands still until ``flow()``: every caller queues before any slot frees."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        target = self.clock.now() + seconds
        self.sleeps.append(seconds)
        await self.flowing.wait()
        self.clock.advance(max(0.0, target - self.clock.now()))
        await asyncio.sleep(0)

    def limiter(self, per_minute: int, burst: int, **kwargs: int) -> SlidingWindowLimiter:
        return SlidingWindowLimiter(
            per_minute, burst_per_second=burst, clock=self.clock, sleep=self.sleep, **kwargs
        )


Queued = tuple[list[str], list[float], list[asyncio.Task[None]]]


async def _queued(
    held: HeldTime, limiter: SlidingWindowLimiter, callers: list[tuple[str, Priority]]
) -> Queued:
    """Queue ``callers`` in this order while no slot is free (each at its priority, set as the
    dispatcher sets a hook call's); then let time flow. Returns the order of their grants."""
    order: list[str] = []
    grants: list[float] = []

    async def one(name: str) -> None:
        await limiter.acquire()
        order.append(name)
        grants.append(held.clock.now())

    tasks = []
    for name, priority in callers:
        with prioritised(Urgency(priority)):  # the task copies the context: its requests' priority
            tasks.append(asyncio.create_task(one(name)))
        await asyncio.sleep(0)  # it arrives (and waits) before the next one
    return order, grants, tasks


async def test_a_later_waiter_of_a_higher_priority_gets_the_next_slot() -> None:
    held = HeldTime()
    limiter = held.limiter(per_minute=100, burst=1)
    await limiter.acquire()  # this second's slot is spent: everyone below waits
    ring = [(f"ring {i}", Priority.ROUTINE) for i in range(3)]
    order, grants, tasks = await _queued(held, limiter, [*ring, ("hang-up", Priority.COMPLETING)])
    assert order == []  # all queued, none served yet
    held.flowing.set()
    await asyncio.gather(*tasks)

    # The hang-up arrived last and went first; the ring-time work then in arrival order.
    assert order == ["hang-up", "ring 0", "ring 1", "ring 2"]
    assert max_in_window(grants, 1.0) == 1  # the priority never bought an extra slot


async def test_low_priority_work_progresses_under_a_stream_of_high_priority_work() -> None:
    held = HeldTime()
    limiter = held.limiter(per_minute=100, burst=1, max_overtaken=3)
    await limiter.acquire()
    hangups = [(f"hang-up {i}", Priority.COMPLETING) for i in range(6)]
    order, grants, tasks = await _queued(held, limiter, [("ring", Priority.ROUTINE), *hangups])
    held.flowing.set()
    await asyncio.gather(*tasks)

    # Overtaken by three later arrivals, the ring-time request is served before the rest.
    assert order == ["hang-up 0", "hang-up 1", "hang-up 2", "ring", *(h for h, _ in hangups[3:])]
    assert max_in_window(grants, 1.0) == 1


async def test_a_waiter_whose_call_hangs_up_while_it_waits_goes_first() -> None:
    held = HeldTime()
    limiter = held.limiter(per_minute=100, burst=1)
    await limiter.acquire()
    ring = [(f"ring {i}", Priority.ROUTINE) for i in range(2)]
    order, _, tasks = await _queued(held, limiter, ring)

    async def answer() -> None:  # a ring-time hook's request (the ticket made on answer)
        await limiter.acquire()
        order.append("answer")

    urgency = Urgency()
    with prioritised(urgency):
        tasks.append(asyncio.create_task(answer()))
    await asyncio.sleep(0)
    urgency.raise_to(Priority.COMPLETING)  # its call hung up meanwhile (the dispatcher)
    held.flowing.set()
    await asyncio.gather(*tasks)
    assert order == ["answer", "ring 0", "ring 1"]


async def test_a_raised_waiter_takes_a_reserved_slot_while_the_first_one_sleeps() -> None:
    held = HeldTime()
    limiter = held.limiter(per_minute=100, burst=100)  # 5 of the minute kept for hang-ups
    for _ in range(95):
        await limiter.acquire(Urgency(Priority.ROUTINE))
    order, _, tasks = await _queued(held, limiter, [("ring", Priority.ROUTINE)])
    urgency = Urgency()

    async def answer() -> None:
        await limiter.acquire(urgency)
        order.append("answer")

    tasks.append(asyncio.create_task(answer()))
    for _ in range(5):
        await asyncio.sleep(0)
    assert limiter.waiting() == [Priority.ROUTINE, Priority.ROUTINE]  # "ring" sleeps 60 s
    urgency.raise_to(Priority.COMPLETING)  # the call hangs up: a reserved slot, at once
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["answer"]  # while time stood still
    held.flowing.set()
    await asyncio.gather(*tasks)
    assert order == ["answer", "ring"]


async def test_the_first_waiter_raised_while_it_sleeps_takes_a_reserved_slot() -> None:
    held = HeldTime()
    limiter = held.limiter(per_minute=100, burst=100)
    for _ in range(95):
        await limiter.acquire(Urgency(Priority.ROUTINE))
    urgency = Urgency()
    waiter = asyncio.create_task(limiter.acquire(urgency))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()  # ring-time work: it sleeps until a slot leaves the window
    urgency.raise_to(Priority.COMPLETING)
    for _ in range(5):
        await asyncio.sleep(0)
    assert waiter.done() and waiter.result() == 0.0  # woken: a reserved slot, time stood still


async def test_a_cancelled_first_waiter_hands_the_turn_on() -> None:
    held = HeldTime()
    limiter = held.limiter(per_minute=100, burst=1)
    await limiter.acquire()
    order, _, tasks = await _queued(
        held, limiter, [("ring", Priority.ROUTINE), ("hang-up", Priority.COMPLETING)]
    )
    tasks[1].cancel()  # the first in line (a hook call stopped at shutdown)
    held.flowing.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["ring"]
