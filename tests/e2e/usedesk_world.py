"""The end-to-end setting: the real service and the Usedesk sandbox, each on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.app import create_app
from connector_core.clock import Clock
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from plugins.usedesk.sandbox.core import SeedSource
from tests.harness import TOKEN, app_for, make_config, settle

USERS = (
    '[{extension = "101", agent = 2}, {extension = "102", agent = 3},'
    ' {extension = "103", agent = "anna@example.com"}]'
)


@dataclass
class World:
    app: web.Application
    client: TestClient
    sandbox: UsedeskSandbox

    async def call(self, scenario: scenarios.Scenario, *, method: str = "GET") -> None:
        for params in scenario.events:
            if method == "GET":
                response = await self.client.get(f"/sipuni/{TOKEN}", params=params)
            else:
                response = await self.client.post(f"/sipuni/{TOKEN}", data=params)
            assert await response.json() == {"success": True}
        await settle(self.app)

    def state(self) -> dict[str, Any]:
        return self.sandbox.snapshot()

    def clients_with(self, digits: str) -> list[dict[str, Any]]:
        return [
            c for c in self.state()["clients"] if any(p["phone"] == digits for p in c["phones"])
        ]

    def tickets_of(self, client_id: int) -> list[dict[str, Any]]:
        return [t for t in self.state()["tickets"] if t["client_id"] == client_id]

    def tickets_of_number(self, digits: str) -> list[dict[str, Any]]:
        return [t for c in self.clients_with(digits) for t in self.tickets_of(c["id"])]

    def writes(self) -> list[str]:
        return [r.path for r in self.sandbox.requests(writes_only=True)]


def call_comments(ticket: dict[str, Any]) -> list[dict[str, Any]]:
    """Comments the calls wrote. A ticket created at the call's end carries that call's
    comment as its first message (it names the call id, ``additional_id``); the first message
    of a ticket created earlier is its body, not a call comment."""
    return [
        c
        for c in ticket["comments"]
        if not c["is_first"] or (ticket["additional_id"] or "\0") in c["message"]
    ]


@asynccontextmanager
async def world(
    tmp_path: Path,
    settings: str = "",
    *,
    extra: str = "",
    others: str = "",
    clock: Clock | None = None,
    seed: SeedSource = None,
    background: bool = False,
    literal_search: bool = False,
    limits: str = "rate_limit_per_minute = 1000\nburst_per_second = 100",
) -> AsyncIterator[World]:
    """The service with a Usedesk integration (``settings`` added to its table), other
    integrations' tables in ``others``, and top-level tables in ``extra``; the sandbox holds
    ``seed`` (the default seed if None). With ``background`` the service's own loops run (do
    not ``World.call`` then: it drains the queue itself). ``literal_search`` makes the
    sandbox's /clients take ``%`` literally (an API that escapes LIKE wildcards). ``limits``:
    the rate limit's keys (by default far above what a test sends)."""
    sandbox = UsedeskSandbox(seed=seed, like_wildcards=not literal_search)
    async with sandbox.serve() as base_url:
        config, host = make_config(
            tmp_path,
            f"""
[accounts.012345.integrations.usedesk]
api_token = "{sandbox.token}"
base_url = "{base_url}"
{limits}
users = {USERS}
on_duty_user = 4
{settings}
{others}
""",
            extra=extra,
        )
        app = (
            create_app(config, host=host, clock=clock)
            if background
            else app_for(config, host, clock=clock)
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield World(app, client, sandbox)
        finally:
            await client.close()
