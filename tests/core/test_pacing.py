"""The dispatcher starts a paced integration's calls at the pace its CRM budget allows, and
the breaker counts only real CRM failures."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from connector_core.appkeys import DISPATCHER, INTEGRATIONS, STORE, WORKER
from connector_core.clock import FakeClock
from connector_core.dispatcher import RetryPolicy
from connector_core.errors import AuthError, InvalidRequestError, TransientError
from connector_core.pacing import (
    Budget,
    Priority,
    budget_of,
    room_to_complete,
    room_to_start,
)
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config
from tests.plugin_kit import add_test_plugin

PACED = '''
"""A plugin whose runtime reports a CRM budget the test sets, and whose hook holds."""
import asyncio
from connector_core import hookimpl
from connector_core.hooktime import queue_wait
from connector_core.integrations import IntegrationType
from connector_core.pacing import Budget, work_urgency
from pydantic import BaseModel

RUNNING: list[str] = []
URGENCY: dict[str, object] = {}  # each hook call's urgency, by call and hook

FAILURES: list[Exception] = []
QUEUED: set[str] = set()  # calls whose hook waits for its turn (a rate limiter) forever


class Settings(BaseModel):
    pass


class Runtime:
    def __init__(self, integration):
        self.budget = Budget(1000)
        self.release = asyncio.Event()

    def crm_budget(self, within):
        return self.budget


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("paced", Settings, factory=Runtime))


@hookimpl
async def connector_call_started(integration, call):
    RUNNING.append(call.call_id)
    URGENCY[call.call_id, "started"] = work_urgency()
    if FAILURES:
        raise FAILURES.pop(0)
    if call.call_id in QUEUED:
        async with queue_wait():
            await asyncio.Event().wait()
    await integration.runtime.release.wait()


@hookimpl
async def connector_call_finished(integration, call):
    URGENCY[call.call_id, "finished"] = work_urgency()
'''


@pytest.fixture
def paced(test_plugins_dir: Path):
    module = add_test_plugin(test_plugins_dir, "paced", PACED)

    module.RUNNING.clear()
    module.FAILURES.clear()
    module.QUEUED.clear()
    module.URGENCY.clear()
    return module


@pytest.fixture
async def service(tmp_path: Path, paced, aiohttp_client):
    config, host = make_config(tmp_path, '[accounts.012345.integrations.crm]\nplugin = "paced"\n')
    clock = FakeClock()
    app = app_for(config, host, clock=clock)
    client = await aiohttp_client(app)
    yield app, client, clock
    app[INTEGRATIONS][f"{ACCOUNT}/crm"].runtime.release.set()
    for task in list(app[DISPATCHER]._running.values()):
        task.cancel()  # a hook queued for ever, when a test failed before stopping it
    await app[DISPATCHER].wait_idle()


async def ring(client, count: int, first: int = 0) -> list[scenarios.Scenario]:
    calls = [scenarios.inbound_answered(call_id=f"17171717{first + i:02d}.1") for i in range(count)]
    for call in calls:
        assert (await client.get(f"/sipuni/{TOKEN}", params=call.events[0])).status == 200
    return calls


async def test_a_paced_integration_runs_no_more_calls_than_its_budget(service, paced) -> None:
    app, client, _ = service
    runtime = app[INTEGRATIONS][f"{ACCOUNT}/crm"].runtime
    runtime.budget = Budget(3, more_in=0.5)
    await ring(client, 10)
    await app[WORKER].drain()
    assert await app[DISPATCHER].dispatch_due() == 3
    assert await app[DISPATCHER].dispatch_due() == 0  # three running: the budget is spoken for
    async with asyncio.timeout(5):
        while len(paced.RUNNING) < 3:
            await asyncio.sleep(0.01)
    runtime.budget = Budget(5)  # the budget grew
    assert await app[DISPATCHER].dispatch_due() == 2
    runtime.release.set()
    await app[DISPATCHER].wait_idle()
    for _ in range(3):
        await app[DISPATCHER].dispatch_due()
        await app[DISPATCHER].wait_idle()
    assert sorted(paced.RUNNING) == sorted(set(paced.RUNNING)) and len(paced.RUNNING) == 10


async def test_calls_that_hung_up_go_first_and_do_not_wait_for_ring_time_calls(
    service, paced
) -> None:
    app, client, _ = service
    dispatcher, runtime = app[DISPATCHER], app[INTEGRATIONS][f"{ACCOUNT}/crm"].runtime
    runtime.budget = Budget(3, more_in=0.5)
    calls = await ring(client, 5)
    await app[WORKER].drain()
    assert await dispatcher.dispatch_due() == 3  # calls 0-2 ring; their hooks hold
    async with asyncio.timeout(5):
        while len(paced.RUNNING) < 3:
            await asyncio.sleep(0.01)
    for call in (calls[0], calls[4]):  # one running, one not started yet, hang up
        for params in call.events[1:]:
            assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    await app[WORKER].drain()
    # No room for ring-time work, but call 4 hung up: it starts, ahead of call 3.
    assert await dispatcher.dispatch_due() == 1
    async with asyncio.timeout(5):
        while len(paced.RUNNING) < 4:
            await asyncio.sleep(0.01)
    assert paced.RUNNING[3] == calls[4].call_id
    urgency = {key: u.priority for key, u in paced.URGENCY.items()}
    assert urgency[calls[4].call_id, "started"] is Priority.COMPLETING
    # Call 0's ring-time hook, still waiting, now goes first too; call 1's does not.
    assert urgency[calls[0].call_id, "started"] is Priority.COMPLETING
    assert urgency[calls[1].call_id, "started"] is Priority.ROUTINE
    runtime.release.set()
    runtime.budget = Budget(100)
    for _ in range(4):
        await dispatcher.dispatch_due()
        await dispatcher.wait_idle()
    finished = {key[0]: u.priority for key, u in paced.URGENCY.items() if key[1] == "finished"}
    assert finished == {c.call_id: Priority.COMPLETING for c in (calls[0], calls[4])}


async def test_an_integration_without_a_budget_is_not_paced(service) -> None:
    assert budget_of(object(), 2.0) is None
    assert room_to_start(None, running=3, cap=100) == 97
    assert room_to_start(Budget(10), running=3, cap=100) == 7
    assert room_to_start(Budget(2), running=3, cap=100) == 0
    # Completing work counts only the completing work running, under the same fixed cap.
    assert room_to_complete(Budget(2), completing=1, running=3, cap=100) == 1
    assert room_to_complete(None, completing=0, running=99, cap=100) == 1


async def test_a_held_back_dispatcher_wakes_itself_when_the_budget_grows(service) -> None:
    app, client, _ = service
    runtime = app[INTEGRATIONS][f"{ACCOUNT}/crm"].runtime
    runtime.budget = Budget(0, more_in=0.05)
    await ring(client, 1)
    await app[WORKER].drain()
    dispatcher = app[DISPATCHER]
    dispatcher.wakeup.clear()
    assert await dispatcher.dispatch_due() == 0
    # Nothing else will happen (no call running, no webhook): the budget's own wake-up.
    async with asyncio.timeout(5):
        await dispatcher.wakeup.wait()


@pytest.mark.parametrize(
    "verdict", [AuthError("the key was refused"), InvalidRequestError("no such client")]
)
async def test_a_probe_without_a_verdict_does_not_hold_the_circuit_open(
    service, paced, verdict: Exception
) -> None:
    app, client, clock = service
    runtime = app[INTEGRATIONS][f"{ACCOUNT}/crm"].runtime
    runtime.release.set()
    policy = RetryPolicy()
    paced.FAILURES.extend([TransientError("down")] * policy.breaker_threshold)
    await ring(client, policy.breaker_threshold)
    await app[WORKER].drain()
    dispatcher = app[DISPATCHER]
    await dispatcher.dispatch_due()
    await dispatcher.wait_idle()
    breaker = dispatcher.breaker(f"{ACCOUNT}/crm")
    assert breaker.is_open and breaker.trips == 1
    await ring(client, 3, first=policy.breaker_threshold)
    await app[WORKER].drain()
    paced.FAILURES.append(verdict)  # what the probe meets
    clock.advance(policy.max_delay_seconds)
    for _ in range(4):  # the probe meets the verdict; the next probe succeeds; the rest run
        await dispatcher.dispatch_due()
        await dispatcher.wait_idle()
    assert not breaker.is_open and breaker.trips == 1
    pending = await app[STORE].stats()
    assert pending["dispatches_pending"] == (1 if isinstance(verdict, AuthError) else 0)


async def test_the_breaker_says_when_it_opens(service, paced, caplog) -> None:
    app, client, _ = service
    policy = RetryPolicy()
    paced.FAILURES.extend([TransientError("Usedesk answered 503")] * policy.breaker_threshold)
    await ring(client, policy.breaker_threshold)
    await app[WORKER].drain()
    with caplog.at_level(logging.WARNING, logger="connector_core.dispatcher"):
        await app[DISPATCHER].dispatch_due()
        await app[DISPATCHER].wait_idle()
    opened = [r.getMessage() for r in caplog.records if "circuit open" in r.getMessage()]
    assert opened == [f"{ACCOUNT}/crm: circuit open for 30 s after 5 consecutive failures"]


async def test_stopping_cancels_calls_waiting_for_their_turn_and_lets_the_others_finish(
    service, paced
) -> None:
    app, client, _ = service
    runtime = app[INTEGRATIONS][f"{ACCOUNT}/crm"].runtime
    queued, at_crm = await ring(client, 2)
    paced.QUEUED.add(queued.call_id)
    await app[WORKER].drain()
    dispatcher = app[DISPATCHER]
    assert await dispatcher.dispatch_due() == 2
    async with asyncio.timeout(5):
        while len(paced.RUNNING) < 2:
            await asyncio.sleep(0.01)
    stopping = asyncio.create_task(dispatcher.stop())
    async with asyncio.timeout(5):
        while len(dispatcher._running) > 1:  # the queued one is cancelled at once
            await asyncio.sleep(0.01)
    assert not stopping.done()  # the one at the CRM is let finish
    runtime.release.set()
    await stopping
    by_call = {
        r.call_id: r
        for c in (queued, at_crm)
        for r in await app[STORE].dispatches_for(ACCOUNT, c.call_id)
    }
    assert (by_call[at_crm.call_id].status, by_call[queued.call_id].status) == ("done", "pending")
    assert by_call[queued.call_id].attempts == 0  # not a failure: it runs after the next start
