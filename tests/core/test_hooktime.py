"""A hook's timeout counts the CRM's time, not the time the hook waits for its turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from connector_core import hookimpl
from connector_core.callstate import CallState
from connector_core.hooks import PluginHost
from connector_core.hooktime import hook_deadline, queue_wait
from connector_core.integrations import Integration, IntegrationType, KeyedLocks, RoutingSettings
from connector_core.simulator import scenarios

TIMEOUT = 0.2  # the hook's budget in these tests; waits for a turn last several times that


async def test_a_queue_wait_longer_than_the_timeout_does_not_time_the_hook_out() -> None:
    turn = asyncio.Event()

    async def hook() -> str:
        async with queue_wait():
            await turn.wait()
        return "done"

    async def call() -> str:
        async with hook_deadline(TIMEOUT):
            return await hook()

    task = asyncio.create_task(call())
    await asyncio.sleep(TIMEOUT * 3)
    turn.set()
    assert await task == "done"


async def test_time_outside_queue_waits_still_adds_up_to_a_timeout() -> None:
    steps: list[str] = []
    with pytest.raises(TimeoutError):
        async with hook_deadline(TIMEOUT):
            await asyncio.sleep(TIMEOUT * 0.6)  # the CRM, slow
            steps.append("first request")
            async with queue_wait():
                await asyncio.sleep(TIMEOUT * 2)
            steps.append("turn came")
            await asyncio.sleep(TIMEOUT * 0.6)  # the CRM again: over budget in total
            steps.append("second request")
    assert steps == ["first request", "turn came"]


async def test_concurrent_waits_keep_the_deadline_stopped_until_the_last_ends() -> None:
    first, second = asyncio.Event(), asyncio.Event()

    async def wait_for(turn: asyncio.Event) -> None:
        async with queue_wait():
            await turn.wait()

    async def call() -> None:
        async with hook_deadline(TIMEOUT):
            await asyncio.gather(wait_for(first), wait_for(second))

    task = asyncio.create_task(call())
    await asyncio.sleep(TIMEOUT * 2)
    first.set()  # one wait over, the other still waiting: no timeout yet
    await asyncio.sleep(TIMEOUT * 2)
    assert not task.done()
    second.set()
    await task


async def test_outside_a_hook_call_and_after_it_a_queue_wait_is_harmless() -> None:
    async with queue_wait():
        await asyncio.sleep(0)
    leftover: list[asyncio.Task[None]] = []

    async def later() -> None:
        await asyncio.sleep(TIMEOUT / 10)
        async with queue_wait():  # the hook call that started this task is over
            await asyncio.sleep(0)

    async with hook_deadline(TIMEOUT):
        leftover.append(asyncio.create_task(later()))
    await leftover[0]


async def test_waiting_for_another_calls_lock_is_not_hook_time() -> None:
    locks = KeyedLocks()
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with locks("phone:+79161234567"):
            held.set()
            await release.wait()

    async def waiter() -> str:
        async with hook_deadline(TIMEOUT), locks("phone:+79161234567"):
            return "found the client the other call made"

    first = asyncio.create_task(holder())
    await held.wait()
    second = asyncio.create_task(waiter())
    await asyncio.sleep(TIMEOUT * 3)
    release.set()
    await first
    assert await second == "found the client the other call made"
    assert len(locks) == 0


class NoSettings(BaseModel):
    pass


class Waits:
    """A plugin whose hook waits for its turn, then spends ``crm`` seconds at the CRM."""

    def __init__(self) -> None:
        self.turn = asyncio.Event()
        self.crm = 0.0

    @hookimpl
    async def connector_call_started(self, integration: Integration, call: CallState) -> None:
        async with queue_wait():
            await self.turn.wait()
        await asyncio.sleep(self.crm)

    @hookimpl
    def connector_register_integration_types(self, register: Any) -> None:
        register(IntegrationType("waits", NoSettings))


def integration() -> Integration:
    return Integration(
        account="012345",
        name="waits",
        type=IntegrationType("waits", NoSettings),
        settings=NoSettings(),
        routing=RoutingSettings(hook_timeout_seconds=TIMEOUT),
        effects=None,  # type: ignore[arg-type]  # the hook never touches it
    )


async def test_the_plugin_host_times_the_crm_not_the_queue() -> None:
    host, plugin = PluginHost(), Waits()
    host.register(plugin, "waits")
    call = scenarios.inbound_answered()
    state = CallState(account="012345", call_id=call.call_id)
    task = asyncio.create_task(host.call("connector_call_started", integration(), call=state))
    await asyncio.sleep(TIMEOUT * 3)
    plugin.turn.set()
    await task  # three timeouts' worth in the queue, and no TimeoutError

    plugin.crm = TIMEOUT * 3  # the CRM itself is too slow: that still times out
    with pytest.raises(TimeoutError):
        await host.call("connector_call_started", integration(), call=state)
