"""The supervisor: a round that raises is logged, counted, backed off, and the loop goes on.

Sleeps go through a fake that records each wait and returns at once, and time through a
``FakeClock``, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from connector_core.clock import FakeClock
from connector_core.supervisor import Backoff, Supervisor


class Script:
    """A round that raises or succeeds as told, then signals that its script is over."""

    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.over = asyncio.Event()

    async def __call__(self) -> bool:
        self.calls += 1
        if not self.outcomes:
            self.over.set()
            await asyncio.Event().wait()  # stays in this round until stopped
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return False


class FakeSleep:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


async def run_script(
    outcomes: list[Exception | None], *, interval: float = 5.0, backoff: Backoff | None = None
) -> tuple[Supervisor, Script, FakeSleep, list[str]]:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    counted: list[str] = []
    supervisor = Supervisor(clock, backoff=backoff, on_error=counted.append, sleep=sleep)
    script = Script(outcomes)
    supervisor.add("drain", script, interval=interval)
    supervisor.start()
    try:
        await asyncio.wait_for(script.over.wait(), 5)
    finally:
        await supervisor.stop()
    return supervisor, script, sleep, counted


async def test_a_failing_round_is_logged_with_its_traceback_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    supervisor, script, sleep, counted = await run_script(
        [ValueError("bad row 17"), ValueError("bad row 17"), None]
    )
    assert script.calls == 4  # two failures, a success, and the round it was stopped in
    assert counted == ["drain", "drain"]
    state = supervisor.loops["drain"]
    assert state.errors == 2 and state.rounds == 1 and state.failures_in_a_row == 0
    assert state.last_error == "ValueError: bad row 17"
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.name for r in records] == ["connector_core.supervisor.drain"] * 2
    assert records[0].getMessage() == "loop drain: round failed (1 in a row), next round in 0.5 s"
    assert records[1].getMessage() == "loop drain: round failed (2 in a row), next round in 1.0 s"
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError
    assert "bad row 17" in caplog.text and "Traceback" in caplog.text
    # Backoff after each failure, then the loop's own interval after the success.
    assert sleep.waits == [0.5, 1.0, 5.0]


async def test_the_backoff_doubles_up_to_its_cap_and_a_success_resets_it() -> None:
    failure = RuntimeError("database or disk is full")
    _, _, sleep, counted = await run_script(
        [failure] * 9 + [None] + [failure] * 2, backoff=Backoff(initial=0.5, cap=30.0)
    )
    # Nine backoffs up to the cap, the interval after the success, then from the start.
    assert sleep.waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 5.0, 0.5, 1]
    assert len(counted) == 11


async def test_a_loop_that_completes_no_round_is_stalled_only_while_it_has_work() -> None:
    clock = FakeClock()
    supervisor = Supervisor(clock, sleep=FakeSleep(clock))
    stuck = asyncio.Event()

    async def hangs() -> bool:
        stuck.set()
        await asyncio.Event().wait()
        return False

    supervisor.add("worker", hangs, interval=1.0, has_work=lambda s: s["inbox_pending"] > 0)
    supervisor.start()
    try:
        await asyncio.wait_for(stuck.wait(), 5)
        assert supervisor.stalled(60, {"inbox_pending": 3}) == []
        clock.advance(61.5)  # past interval + stall time
        assert supervisor.stalled(60, {"inbox_pending": 3}) == ["worker"]
        assert supervisor.stalled(60, {"inbox_pending": 0}) == []
    finally:
        await supervisor.stop()


async def test_a_loop_in_backoff_ends_when_stopped() -> None:
    clock = FakeClock()
    backing_off = asyncio.Event()

    async def long_sleep(seconds: float) -> None:
        backing_off.set()
        await asyncio.sleep(3600)

    async def fails() -> bool:
        raise OSError("no space left on device")

    supervisor = Supervisor(clock, sleep=long_sleep)
    supervisor.add("expiry", fails, interval=60)
    supervisor.start()
    await asyncio.wait_for(backing_off.wait(), 5)
    await asyncio.wait_for(supervisor.stop(), 5)
    assert supervisor.loops["expiry"].errors == 1


def test_two_loops_cannot_share_a_name() -> None:
    supervisor = Supervisor(FakeClock())

    async def nothing() -> bool:
        return False

    supervisor.add("auth", nothing, interval=1)
    with pytest.raises(ValueError, match="a loop named 'auth' is already supervised"):
        supervisor.add("auth", nothing, interval=1)
