"""The store fails for a while during a stream of calls, and the service heals by itself.

The service runs in-process with its real background loops, its store wrapped by
``connector_core.testing.faults.FaultyStore``; the Usedesk sandbox on a loopback port. A PBX
task sends the calls' webhooks and, like Sipuni, sends one again until it is acknowledged.
While it does, the store goes through phases: healthy, writes failing at random (before
the commit), every write failing (a full disk), writes failing at random *after* the commit
(stored, but the caller sees an error), healthy again. No restart anywhere.

Afterwards every call has reached Usedesk exactly once (one client and one ticket per
number, one comment per call), nothing is quarantined or dead-lettered, the loops counted
their failed rounds in ``/metrics``, and every ``/readyz`` taken while no write could
succeed answered 503.

The supervisor's backoff is capped at 1 s here and the retry policy shortened (the defaults,
30 s and a 30 s breaker cooldown, would only make the run longer: a plugin that cannot
record its effect keys fails its hook, and that still counts towards the breaker).

Rerun: ``.venv/bin/pytest tests/e2e/test_store_faults.py -s`` (``-s`` prints the figures).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import ClientError
from aiohttp.test_utils import TestClient, TestServer

from connector_core.app import create_app
from connector_core.appkeys import DISPATCHER, STORE, SUPERVISOR
from connector_core.dispatcher import RetryPolicy
from connector_core.supervisor import Backoff
from connector_core.testing.faults import FaultyStore, faulty_store_factory
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.e2e.test_kill_loop import USERS, check_usedesk, digits, generate_calls, interleave
from tests.harness import ACCOUNT, TOKEN, make_config

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.sqlite_only("SQLite's own write failures, injected by its fault-injecting store"),
]

CALLS = 24
SEED = 11
FAST_RETRIES = RetryPolicy(
    base_seconds=0.2,
    max_delay_seconds=2.0,
    breaker_cooldown_seconds=1.0,
    breaker_max_cooldown_seconds=2.0,
)


class Pbx:
    """Sends webhooks in order; a webhook that got no success is sent again, as Sipuni does."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent = 0
        self.refused = 0  # answers other than success (503 while the store cannot write)

    async def send(self, params: dict[str, str], deadline: float) -> None:
        while True:
            assert time.monotonic() < deadline, "the PBX gave up on a webhook"
            try:
                response = await self.client.get(f"/sipuni/{TOKEN}", params=params)
                body = await response.json()
            except (ClientError, ValueError):
                body, response = None, None
            if response is not None and response.status == 200:
                assert body == {"success": True}
                self.sent += 1
                return
            assert response is None or response.status >= 500, (response.status, body)
            self.refused += 1
            await asyncio.sleep(0.05)


class ReadyzWatch:
    """``/readyz`` every few ms; keeps the answers taken while no write could succeed."""

    def __init__(self, client: TestClient, store: FaultyStore) -> None:
        self.client, self.store = client, store
        self.while_down: list[int] = []

    async def run(self) -> None:
        while True:
            down = self.store.fail_rate == 1.0
            response = await self.client.get("/readyz")
            await response.read()
            if down and self.store.fail_rate == 1.0:  # down for the whole request
                self.while_down.append(response.status)
            await asyncio.sleep(0.03)


async def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_store_faults_heal_without_restart_and_every_call_reaches_usedesk_once(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    calls = generate_calls(CALLS, 2, random.Random(SEED))
    stream = interleave(calls)
    sandbox = UsedeskSandbox()
    seed_clients = {c.id for c in sandbox.state.clients.values()}
    made, factory = faulty_store_factory(seed=SEED)
    async with sandbox.serve() as base_url:
        config, host = make_config(
            tmp_path,
            f"""
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{sandbox.token}"
base_url = "{base_url}"
rate_limit_per_minute = 1000
burst_per_second = 50
request_timeout_seconds = 3
write_settle_seconds = 3  # the faults here apply a create before it hangs
users = {USERS}
on_duty_user = 4
""",
        )
        app = create_app(config, host=host, store_factory=factory)  # the real loops
        app[SUPERVISOR].backoff = Backoff(initial=0.1, cap=1.0)
        client = TestClient(TestServer(app))
        await client.start_server()
        watcher: asyncio.Task[None] | None = None
        try:
            app[DISPATCHER].policy = FAST_RETRIES
            app[DISPATCHER].breakers.clear()  # made at start-up with the default policy
            store = made[0]
            pbx, watch = Pbx(client), ReadyzWatch(client, store)
            watcher = asyncio.create_task(watch.run())
            deadline = time.monotonic() + 120
            fifth = len(stream) // 5
            phases = [
                ("healthy", lambda: store.heal()),
                ("random failures", lambda: store.fail_at_random(0.3)),
                ("every write fails", lambda: store.fail_writes()),
                ("failures after the commit", lambda: store.fail_at_random(0.3, after_commit=True)),
                ("healthy", lambda: store.heal()),
            ]
            took: dict[str, float] = {}
            for n, (name, arm) in enumerate(phases):
                phase_started = time.monotonic()
                arm()
                part = stream[n * fifth : (n + 1) * fifth if n < len(phases) - 1 else None]
                if store.fail_rate == 1.0:
                    # Nothing is acknowledged now: the PBX keeps sending the first webhook.
                    sending = asyncio.create_task(pbx.send(part[0], deadline))

                    async def seen_down() -> bool:
                        return len(watch.while_down) >= 5

                    assert await wait_for(seen_down, 20)
                    assert not sending.done()
                    store.heal()  # space again: no restart
                    await sending
                    part = part[1:]
                for params in part:
                    await pbx.send(params, deadline)
                    await asyncio.sleep(0.01)
                took[f"{n + 1}. {name}"] = round(time.monotonic() - phase_started, 1)

            async def drained() -> bool:
                s = await app[STORE].stats()
                return s["inbox_pending"] == s["dispatches_pending"] == s["calls_open"] == 0

            drain_started = time.monotonic()
            assert await wait_for(drained, 90), await app[STORE].stats()
            took["drained after"] = round(time.monotonic() - drain_started, 1)
            assert await store.quarantined_events() == []
            assert await store.dead_dispatches() == []
            assert (await client.get("/readyz")).status == 200
            metrics = await (await client.get("/metrics")).text()
        finally:
            if watcher is not None:
                watcher.cancel()
            await client.close()

    loop_errors = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("connector_loop_errors_total{")
    }
    assert loop_errors.get("worker", 0) > 0, loop_errors
    assert watch.while_down and set(watch.while_down) == {503}
    numbers = Counter(digits(c) for c in calls)
    counts = check_usedesk(sandbox.snapshot(), calls, seed_clients)
    assert counts == {"clients": len(numbers), "tickets": len(numbers), "comments": len(calls)}
    print(
        f"\nstore faults: {len(calls)} calls, {pbx.sent} webhooks acknowledged, "
        f"{pbx.refused} refused and sent again, {store.failed_writes} of {store.writes} "
        f"writes failed; failed rounds by loop {loop_errors}; /readyz 503 all "
        f"{len(watch.while_down)} times while no write could succeed; "
        f"Usedesk: {counts}; {time.monotonic() - started:.1f} s (seconds by phase: {took})"
    )
