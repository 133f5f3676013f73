"""Two Usedesk clients on one API token, as two connector processes would hold them, share
one rate window through the store: together they never exceed the per-minute budget.

The sandbox counts arrivals on the same fake clock the clients and the store read, so the
waits are computed, never slept.
"""

from __future__ import annotations

import asyncio
from typing import Any

from connector_core.clock import FakeClock
from connector_core.plugin import Priority, SharedRate, Urgency, prioritised
from connector_core.store.local import LocalCoordination
from plugins.usedesk.client import UsedeskClient
from plugins.usedesk.sandbox import DEFAULT_TOKEN, UsedeskSandbox, create_app

PER_MINUTE = 5
REQUESTS_EACH = 8


class Slots:
    """The shared store's windows, counting the requests granted and not yet answered."""

    def __init__(self, store: LocalCoordination) -> None:
        self.store = store
        self.in_flight = 0

    async def take_rate_slot(
        self, name: str, per_minute: int, per_second: int, margin: float = 0.0
    ) -> float:
        wait = await self.store.take_rate_slot(name, per_minute, per_second, margin)
        self.in_flight += wait == 0
        return wait


async def _run_two_clients(aiohttp_server: Any, shared: bool) -> UsedeskSandbox:
    clock = FakeClock()
    slots = Slots(LocalCoordination(clock))  # the store both processes share

    async def sleep(seconds: float) -> None:
        # Time moves only while no request is on its way: on the fake clock a request then
        # arrives when it was granted, as a real one arrives a few ms later (the margin).
        target = clock.now() + seconds
        while slots.in_flight > 0:
            await asyncio.sleep(0)
        clock.advance(max(0.0, target - clock.now()))
        await asyncio.sleep(0)

    def answered(*args: Any, **kwargs: Any) -> None:
        slots.in_flight -= shared

    sandbox = UsedeskSandbox(monotonic=clock.now)
    server = await aiohttp_server(create_app(sandbox))
    clients = [
        UsedeskClient(
            api_token=DEFAULT_TOKEN,
            base_url=str(server.make_url("")),
            rate_limit_per_minute=PER_MINUTE,
            burst_per_second=PER_MINUTE,
            clock=clock,
            sleep=sleep,
            on_request=answered,
            shared_rate=SharedRate(slots, sleep) if shared else None,
        )
        for _ in range(2)
    ]

    async def work(client: UsedeskClient, priority: Priority) -> None:
        # One process's requests complete calls, the other's are ring-time work: the order
        # each limiter serves them in never costs the shared limit.
        with prioritised(Urgency(priority)):
            for _ in range(REQUESTS_EACH):
                await client.list_users()

    try:
        await asyncio.gather(*(work(c, p) for c, p in zip(clients, Priority, strict=True)))
    finally:
        for client in clients:
            await client.close()
    return sandbox


async def test_two_clients_on_one_token_share_the_minute_budget(aiohttp_server: Any) -> None:
    sandbox = await _run_two_clients(aiohttp_server, shared=True)

    assert sandbox.rate.summary()["total"] == 2 * REQUESTS_EACH
    assert sandbox.rate.max_in_window(60.0) <= PER_MINUTE


async def test_without_the_shared_window_each_client_spends_a_whole_budget(
    aiohttp_server: Any,
) -> None:
    sandbox = await _run_two_clients(aiohttp_server, shared=False)

    # What the shared window prevents: two processes together send twice the budget.
    assert sandbox.rate.max_in_window(60.0) == 2 * PER_MINUTE
