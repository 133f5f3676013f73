"""Usedesk end to end under a saturated rate limit: a hang-up's work goes ahead of the
ring-time lookups of other calls that queued before it, and the limit still holds.

One call rings and is answered (its ticket made); then ``OTHERS`` new callers ring at once,
more lookups than the limit lets through, and while they wait the first call hangs up. The
limiter runs on a clock the test moves (as in tests/usedesk/test_ratelimit.py): everyone
queues while time stands still, then time flows and the sandbox's request log shows who went
first. On PostgreSQL each request also takes a slot of the shared windows (database time).
That the order never costs the limit is counted in tests/usedesk/test_ratelimit.py and
test_shared_rate.py (the sandbox here stamps arrivals on its own clock, not the limiter's).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from connector_core.appkeys import DISPATCHER, INTEGRATIONS, STORE, WORKER
from connector_core.clock import FakeClock
from connector_core.pacing import Priority
from connector_core.simulator import scenarios
from plugins.usedesk.ratelimit import SlidingWindowLimiter
from tests.e2e.usedesk_world import world
from tests.harness import ACCOUNT, TOKEN, settle

pytestmark = pytest.mark.e2e

BURST = 2  # requests per second: the limit the ring-time lookups saturate
OTHERS = 6  # new callers ringing at once: three seconds of lookups
KEY = f"{ACCOUNT}/usedesk"


class HeldTime:
    """The limiter's clock: its sleeps end only while time flows (``flowing`` set)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.flowing = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        target = self.clock.now() + seconds
        await self.flowing.wait()
        self.clock.advance(max(0.0, target - self.clock.now()))
        await asyncio.sleep(0)


async def until(condition, what: str) -> None:
    """Let the service's tasks run until ``condition()`` holds (a bound, not a timing)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def settle_paced(app: web.Application) -> None:
    """Settle the service; work the rate limit holds back starts once the budget has room
    (the service's own loop wakes for it; here the test looks again)."""
    for _ in range(100):
        await settle(app)
        if not await app[STORE].pending_dispatches(1):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the service did not settle")


async def test_a_hang_ups_comment_goes_before_other_calls_queued_lookups(tmp_path: Path) -> None:
    held = HeldTime()
    limits = f"rate_limit_per_minute = 1000\nburst_per_second = {BURST}"
    async with world(tmp_path, limits=limits) as w:
        app, client, sandbox = w.app, w.client, w.sandbox
        usedesk = app[INTEGRATIONS][KEY].runtime.client
        limiter = usedesk.limiter = SlidingWindowLimiter(
            1000, burst_per_second=BURST, clock=held.clock, sleep=held.sleep
        )

        async def send(events: list[dict[str, str]]) -> None:
            for params in events:
                response = await client.get(f"/sipuni/{TOKEN}", params=params)
                assert await response.json() == {"success": True}
            await app[WORKER].drain()
            await app[DISPATCHER].dispatch_due()  # started, not awaited: their requests queue

        first = scenarios.inbound_answered(client="79160000001", call_id="1700000000.1")
        *talking, hangup = first.events
        held.flowing.set()
        await send(talking)
        await settle_paced(app)  # its lookup and its ticket (made on answer) are done
        held.flowing.clear()  # time stands still: what the burst does not let through waits
        mark = len(sandbox.log)
        others = [
            scenarios.inbound_answered(client=f"7916100000{i}", call_id=f"17000001{i:02d}.1")
            for i in range(OTHERS)
        ]
        await send([call.events[0] for call in others])  # each one's first ring: a lookup
        # The calls the budget let start are all stuck in the limiter (time stands still).
        running = app[DISPATCHER].running
        await until(lambda: len(limiter.waiting()) == running(KEY), "the lookups queue")
        queued = len(limiter.waiting())
        await send([hangup])
        await until(lambda: Priority.COMPLETING in limiter.waiting(), "the hang-up's work queues")
        held.flowing.set()
        await settle_paced(app)

    after = [r.path for r in sandbox.log[mark:]]
    assert after.count("/clients") == OTHERS and after.count("/create/comment") == 1
    # More ring-time lookups queued than the limit lets through at once: it was saturated.
    assert queued > BURST
    # The hang-up's comment queued last and went first: every lookup queued before it (and
    # any the budget held back) went after it.
    comment = after.index("/create/comment")
    assert after[comment + 1 :].count("/clients") >= queued, after
