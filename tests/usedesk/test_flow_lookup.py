"""The Usedesk lookup run by an agent card that gives up waiting.

A card part has a short timeout; when it fires while the card's own run of the lookup holds the
phone's lock, cancelling it would throw away the searches already sent, and the call's hook
would send them again. The sandbox runs on loopback and answers late.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from connector_core.callstate import CallState, Direction
from connector_core.console.links import link_of
from connector_core.integrations import Integration, IntegrationType, RoutingSettings
from plugins.usedesk import card, flow
from plugins.usedesk.sandbox import UsedeskSandbox
from plugins.usedesk.settings import UsedeskSettings

CALL = CallState(
    account="012345",
    call_id="1717171700.1",
    direction=Direction.INBOUND,
    client_number="+79035550101",
    client_number_raw="79035550101",
)


class MemoryEffects:
    """The effect store's contract in memory: ``put`` writes only a key not written yet."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        if key in self.data:
            return False
        self.data[key] = value
        return True

    async def drop(self, key: str) -> bool:
        return self.data.pop(key, None) is not None


def usedesk(base_url: str, token: str) -> Integration[UsedeskSettings, flow.UsedeskRuntime]:
    integration: Integration[UsedeskSettings, flow.UsedeskRuntime] = Integration(
        account="012345",
        name="usedesk",
        type=IntegrationType("usedesk", UsedeskSettings, factory=flow.UsedeskRuntime),
        settings=UsedeskSettings(api_token=token, base_url=base_url, burst_per_second=100),
        routing=RoutingSettings(),
        effects=MemoryEffects(),
    )
    integration.runtime = flow.UsedeskRuntime(integration)
    return integration


async def test_a_card_that_gives_up_does_not_make_the_hook_search_again() -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        integration = usedesk(base_url, sandbox.token)
        try:
            sandbox.faults.configure({"latency_ms": 300})  # every answer comes late
            pending = asyncio.create_task(card.card(integration, CALL))
            async with asyncio.timeout(10):
                # until the search is in flight: the wildcard question, then the number's query
                while len(sandbox.rate.timestamps("/clients")) < 2:
                    await asyncio.sleep(0.01)
            pending.cancel()  # what the card part's timeout does
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            record = await flow.ensure_ticket(integration, CALL)  # the call's own hook
        finally:
            await integration.runtime.aclose()
    assert record["client_new"] is True and record["ticket_new"] is True
    # The searches the card started were finished and used: none was sent twice.
    assert len(sandbox.rate.timestamps("/clients")) == 2
    # The client is made with its ticket, in one request.
    assert len(sandbox.requests("/create/ticket")) == 1
    assert len(sandbox.requests("/create/client")) == 0


async def test_the_card_of_a_new_number_says_when_its_ticket_is_made_and_writes_nothing() -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        integration = usedesk(base_url, sandbox.token)  # ticket_created_on = "answer"
        try:
            part = await card.card(integration, CALL)
        finally:
            await integration.runtime.aclose()
    assert part is not None
    assert part.lines == ["Новый клиент", "Тикет будет создан при ответе"] and part.links == []
    assert sandbox.requests(writes_only=True) == []  # the ring only looked


def test_the_console_links_a_call_to_its_ticket_in_usedesk_web() -> None:
    runtime = usedesk("http://127.0.0.1:9", "token").runtime
    assert link_of(runtime, {"ticket_id": 5003}) == "https://secure.usedesk.ru/tickets/5003"
    assert link_of(runtime, {"skipped": "internal call"}) is None
