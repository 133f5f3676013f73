"""A burst of new calls, and the end of an outage, drain at the rate limit without timeouts.

The real service (its background loops, the Usedesk plugin) against the Usedesk sandbox on
loopback, on a short clock: the limiter's windows are a tenth of Usedesk's (100 requests per
6 s, 5 per 0.1 s, 25 ms margin), the hook timeout is 1 s, the retry policy a tenth of the real
one. 40 calls from new numbers need 7 requests each (280, plus one /users): five times more
than one hook timeout's worth of budget, so on a service that counts waiting for the limiter
as CRM time they time out, the breaker opens and retries search again.

Asserted: zero hook timeouts, zero breaker trips (healthy CRM), each call's requests made
exactly once (counted per kind in the sandbox), and everything drained. The drain time is
printed next to what the limit needs (``-s``), not asserted; ``bench/burst.py`` measures the
real-size burst.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.app import create_app
from connector_core.appkeys import DISPATCHER, INTEGRATIONS, STORE
from connector_core.clock import FakeClock
from connector_core.dispatcher import Breaker, RetryPolicy
from connector_core.integrations import AuthStatus
from connector_core.simulator import scenarios
from plugins.usedesk.ratelimit import SlidingWindowLimiter
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.e2e.test_kill_loop import USERS, check_usedesk, is_call_comment
from tests.e2e.usedesk_world import world
from tests.harness import ACCOUNT, TOKEN, make_config, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CALLS = 40
PER_MINUTE, BURST = 100, 5
KEY = f"{ACCOUNT}/usedesk"
# A tenth of the real retry policy, to match the short clock.
POLICY = RetryPolicy(
    base_seconds=0.1,
    max_delay_seconds=60.0,
    breaker_cooldown_seconds=3.0,
    breaker_max_cooldown_seconds=30.0,
)
# What the calls may ask of Usedesk: a search per new number (one LIKE pattern, as the
# sandbox's search takes wildcards), a ticket made with its client, an owner, a comment.
PER_CALL = ("/clients", "/create/ticket", "/update/ticket", "/create/comment")


class ShortClockLimiter(SlidingWindowLimiter):
    """The Usedesk limiter with windows a tenth as long: "100 per 6 s, 5 per 0.1 s"."""

    MINUTE = 6.0
    SECOND = 0.1


async def limit_needs(requests: int) -> float:
    """Seconds from the first to the last of ``requests`` grants of an idle limiter."""
    clock = FakeClock(0.0)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    limiter = ShortClockLimiter(
        PER_MINUTE, burst_per_second=BURST, clock=clock, sleep=sleep, margin=0.025
    )
    for _ in range(requests):
        await limiter.acquire()
    return clock.now()


def new_calls(count: int) -> list[scenarios.Scenario]:
    return [
        scenarios.inbound_answered(
            client=f"7926{5550000 + i:07d}",
            call_id=f"{scenarios.START + 600 * i}.{40000 + i}",
            start=scenarios.START + 600 * i,
        )
        for i in range(count)
    ]


@dataclass
class Run:
    app: web.Application
    client: TestClient
    sandbox: UsedeskSandbox

    @property
    def breaker(self) -> Breaker:
        return self.app[DISPATCHER].breaker(KEY)

    async def send(self, calls: list[scenarios.Scenario]) -> None:
        """Every call's webhooks, one call after another, as fast as they are acknowledged."""
        for call in calls:
            for params in call.events:
                response = await self.client.get(f"/sipuni/{TOKEN}", params=params)
                assert await response.json() == {"success": True}

    async def drained(self, within: float) -> float:
        """Wait until nothing is pending; returns when (monotonic)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            s = await self.app[STORE].stats()
            if s["inbox_pending"] == s["dispatches_pending"] == s["calls_open"] == 0:
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise AssertionError(f"not drained in {within} s: {await self.app[STORE].stats()}")


@asynccontextmanager
async def service(tmp_path: Path) -> AsyncIterator[Run]:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        config, host = make_config(
            tmp_path,
            f"""
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{sandbox.token}"
base_url = "{base_url}"
rate_limit_per_minute = {PER_MINUTE}
burst_per_second = {BURST}
hook_timeout_seconds = 1
users = {USERS}
on_duty_user = 4
""",
        )
        app = create_app(config, host=host)  # background=True: the real loops run
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            # Before any call: a breaker made by an idle scan is made again with this policy.
            app[DISPATCHER].policy = POLICY
            app[DISPATCHER].breakers.clear()
            integration = app[INTEGRATIONS][KEY]
            async with asyncio.timeout(10):  # the start-up authorisation check, done first
                while integration.auth.status is AuthStatus.NOT_CHECKED:
                    await asyncio.sleep(0.01)
            integration.runtime.client.limiter = ShortClockLimiter(
                PER_MINUTE, burst_per_second=BURST, margin=0.025
            )
            # On a shared store (PostgreSQL) the client also takes slots of the windows every
            # process shares, which keep the database's real clock: a tenth-length minute
            # cannot apply there. This one process's limiter is what is measured here (the
            # shared windows: tests/e2e/test_cluster_rate_limit.py).
            integration.runtime.client.shared_rate = None
            sandbox.log.clear()
            sandbox.rate.clear()
            yield Run(app, client, sandbox)
        finally:
            await client.close()


def failures(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    """The dispatcher's failed hook calls, by why: hook timeouts apart from the CRM's errors."""
    found: Counter[str] = Counter()
    for record in caplog.records:
        text = record.getMessage()
        if record.name == "connector_core.dispatcher" and " failed (attempt " in text:
            found["hook timeout" if "hook timeout" in text else "crm"] += 1
    return found


def each_call_once(sandbox: UsedeskSandbox, calls: list[scenarios.Scenario]) -> Counter[str]:
    """Check that Usedesk answered each call's requests once and holds one client, ticket and
    comment per call; returns the requests it answered (not those an outage refused), by kind.
    """
    kinds = Counter(r.path for r in sandbox.requests() if r.fault is None)
    # One ticket per new number, its client made with it; one search per number, and the
    # question whether the search takes wildcards. The comment is a request of its own or
    # the first message of a ticket made at the call's end (check_usedesk counts both).
    assert kinds["/create/ticket"] == len(calls)
    assert kinds["/clients"] == len(calls) + 1
    assert set(kinds) <= {*PER_CALL, "/users"}
    seed_clients = {c.id for c in UsedeskSandbox().state.clients.values()}
    counts = check_usedesk(sandbox.snapshot(), calls, seed_clients)
    assert counts == dict.fromkeys(("clients", "tickets", "comments"), len(calls))
    return kinds


async def test_a_burst_of_new_calls_drains_at_the_limit_without_timeouts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connector_core.dispatcher")
    calls = new_calls(CALLS)
    async with service(tmp_path) as run:
        began = time.monotonic()
        await run.send(calls)
        done = await run.drained(120)
        assert failures(caplog) == Counter()
        assert run.breaker.trips == 0
        assert await run.app[STORE].dead_dispatches() == []
    kinds = each_call_once(run.sandbox, calls)
    # Arrivals lag the limiter's grants by a varying few ms (service and sandbox share one
    # event loop here), so the window checked is that much shorter (as in test_faults.py).
    assert run.sandbox.max_requests_in_window(ShortClockLimiter.MINUTE - 0.1) <= PER_MINUTE
    total = sum(kinds.values())
    needs = await limit_needs(total)
    print(
        f"\nburst: {CALLS} calls, {total} Usedesk requests ({dict(kinds)}), drained in "
        f"{done - began:.1f} s; the limit needs {needs:.1f} s for them "
        f"({(done - began) / needs:.2f}x); 0 hook timeouts, 0 breaker trips"
    )


async def test_after_an_outage_the_backlog_drains_without_timeouts_or_second_searches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connector_core.dispatcher")
    calls = new_calls(CALLS)
    async with service(tmp_path) as run:
        run.sandbox.set_faults(mode="500", status=503)  # Usedesk is down
        began = time.monotonic()
        await run.send(calls)
        async with asyncio.timeout(30):
            while not run.breaker.is_open:
                await asyncio.sleep(0.05)
        await asyncio.sleep(7.5 - (time.monotonic() - began))  # a 75 s outage, a tenth of it
        run.sandbox.clear_faults()
        up = time.monotonic()
        done = await run.drained(120)
        outage_failures = failures(caplog)
        assert outage_failures["hook timeout"] == 0 and outage_failures["crm"] > 0
        assert await run.app[STORE].dead_dispatches() == []
        trips = run.breaker.trips
    kinds = each_call_once(run.sandbox, calls)
    # Each number searched for exactly once successfully: no retry searched again.
    searched = Counter(
        r.params.get("query") for r in run.sandbox.requests("/clients") if r.fault is None
    )
    assert set(searched.values()) == {1} and len(searched) == CALLS + 1  # and "%" once
    refused = sum(1 for r in run.sandbox.requests() if r.fault is not None)
    print(
        f"\noutage: {CALLS} calls, {refused} requests refused while down, breaker opened "
        f"{trips}x, {outage_failures['crm']} CRM failures, 0 hook timeouts; after it came "
        f"back {sum(kinds.values())} requests drained in {done - up:.1f} s (the limit needs "
        f"{await limit_needs(sum(kinds.values())):.1f} s from idle)"
    )


async def test_calls_hanging_up_together_read_the_agents_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        for call in new_calls(6):
            for params in call.events:
                response = await w.client.get(f"/sipuni/{TOKEN}", params=params)
                assert await response.json() == {"success": True}
        await settle(w.app)  # the six finished hooks run at once
        # users_all is three requests (employees, admins, support), made once for all six.
        assert len(w.sandbox.requests("/users")) == 3
        # Six comments, each a request of its own or the first message of its call's ticket.
        comments = [c for t in w.state()["tickets"] for c in t["comments"] if is_call_comment(c)]
        assert len(comments) == 6
