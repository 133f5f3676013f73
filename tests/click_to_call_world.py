"""The service with a Usedesk sandbox and a Sipuni sandbox, for click-to-call's tests: a
missed call from CLIENT that rang 101 and 102, and «Перезвонить» on it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.appkeys import MISSED_CALLS
from connector_core.simulator import scenarios
from connector_core.simulator.sipuni_sandbox import SipuniSandbox
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.console_kit import console_section
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle

KEY = "0.sipuni-KEY-c2c-77"
TOKEN_101 = "agent-101-token-0000000"
TOKEN_102 = "agent-102-token-0000000"
CLIENT = "79160000555"


def config_text(usedesk_url: str, usedesk_token: str, sipuni_url: str | None) -> str:
    """The account's agents, its Sipuni key (left out with no ``sipuni_url``), Usedesk."""
    key = f'sipuni_api_key = "{KEY}"\nsipuni_api_url = "{sipuni_url}"\n' if sipuni_url else ""
    return f"""
agents = {{ "101" = "{TOKEN_101}", "102" = "{TOKEN_102}" }}
{key}
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{usedesk_token}"
base_url = "{usedesk_url}"
burst_per_second = 50
notifications = true
users = [{{ extension = "101", agent = 2 }}, {{ extension = "102", agent = 3 }}]
on_duty_user = 4
"""


@dataclass
class World:
    app: web.Application
    client: TestClient
    sipuni: SipuniSandbox
    usedesk: UsedeskSandbox

    async def send(self, call: scenarios.Scenario) -> None:
        """``call``'s webhooks, as Sipuni sends them, then everything processed."""
        for params in call.events:
            response = await self.client.get(f"/sipuni/{TOKEN}", params=params)
            assert response.status == 200, await response.text()
        await settle(self.app)

    async def missed(self, seq: int = 52010) -> scenarios.Scenario:
        """A missed call from CLIENT a minute ago (inside the recent calls' day and the
        missed call's callback window), ringing 101 and 102."""
        call = scenarios.inbound_missed(
            ("101", "102"), client=CLIENT, start=int(time.time()) - 60, seq=seq
        )
        await self.send(call)
        return call

    async def call_back(
        self, call_id: str, extension: str = "101", token: str = TOKEN_101
    ) -> tuple[int, dict[str, Any]]:
        """POST /agent/call as the agent page does."""
        response = await self.client.post(
            "/agent/call",
            json={"account": ACCOUNT, "extension": extension, "token": token, "call_id": call_id},
        )
        return response.status, await response.json()

    async def calls_placed(self) -> None:
        """The click-to-calls' webhooks sent, and processed, the missed-call lifecycle's
        round (the callback of the missed call) included."""
        await self.sipuni.settled()
        await settle(self.app)
        while await self.app[MISSED_CALLS].settle_round():
            pass
        await settle(self.app)

    def tickets(self) -> list[dict[str, Any]]:
        return [t for t in self.usedesk.snapshot()["tickets"] if "sipuni" in t["tags"]]


@asynccontextmanager
async def world(tmp_path: Path, *, with_key: bool = True, **sipuni: Any) -> AsyncIterator[World]:
    """The service on a loopback port with the console on; ``sipuni``: the Sipuni sandbox's
    options (``extensions``, ``client_answers``…)."""
    usedesk, sandbox = UsedeskSandbox(), SipuniSandbox(key=KEY, **sipuni)
    async with AsyncExitStack() as stack:
        usedesk_url = await stack.enter_async_context(usedesk.serve())
        sipuni_url = await stack.enter_async_context(sandbox.serve())
        config, host = make_config(
            tmp_path,
            config_text(usedesk_url, usedesk.token, sipuni_url if with_key else None),
            # The missed-call lifecycle decides a number at once, not 5 s after its last call.
            extra=console_section() + "\n[missed_calls]\nsettle_seconds = 0\n",
        )
        app = app_for(config, host)
        client = await stack.enter_async_context(TestClient(TestServer(app, host="127.0.0.1")))
        sandbox.webhook_url = str(client.make_url(f"/sipuni/{TOKEN}"))
        yield World(app, client, sandbox, usedesk)
