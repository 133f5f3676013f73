"""The agent page in a real browser: the caller's card pops up while the phone rings.

Needs Debian's ``chromium`` (CI installs it; set CONNECTOR_BROWSER_TESTS=1 to make its
absence a failure instead of a skip). CONNECTOR_SCREENSHOTS=<dir> keeps the screenshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector_core.appkeys import BOARD
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.browser.cdp import Browser, chromium_path
from tests.harness import TOKEN, app_for, make_config, settle

pytestmark = pytest.mark.e2e
TOKEN_101 = "agent-101-token-0000000"
TOKEN_102 = "agent-102-token-0000000"
CLIENT = "79160000777"


@pytest.fixture
def needs_chromium() -> None:
    if chromium_path() is None:
        if os.environ.get("CONNECTOR_BROWSER_TESTS"):
            pytest.fail("chromium is required here: apt-get install chromium")
        pytest.skip("chromium is not installed")


def agents_config(sandbox_url: str, token: str, notifications: bool = True) -> str:
    return f"""
agents = {{ "101" = "{TOKEN_101}", "102" = "{TOKEN_102}" }}
[accounts.012345.integrations.usedesk]
api_token = "{token}"
base_url = "{sandbox_url}"
burst_per_second = 50
notifications = {str(notifications).lower()}
users = [{{ extension = "101", agent = 2 }}, {{ extension = "102", agent = 3 }}]
on_duty_user = 4
# The ticket is made while the phone rings, so the card links to it (the default makes it
# when someone answers).
ticket_created_on = "ring"
"""


async def test_card_pops_up_while_101_rings_and_clears_at_hang_up(
    tmp_path: Path, needs_chromium: None
) -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as sandbox_url:
        config, host = make_config(tmp_path, agents_config(sandbox_url, sandbox.token))
        app = app_for(config, host)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client, Browser() as browser:
            page = client.make_url(f"/agent/?account=012345&extension=101&token={TOKEN_101}")
            await browser.goto(str(page))
            await browser.wait_for(
                "document.getElementById('status').textContent === 'Нет звонков'"
            )

            call = scenarios.inbound_missed(ring=["101", "102"], client=CLIENT)
            *ringing, hang_up = call.events
            for params in ringing:
                assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
            await settle(app)
            caller = await browser.wait_for(
                "getComputedStyle(document.getElementById('card')).display === 'block'"
                " && document.getElementById('caller').textContent"
            )
            assert caller == f"+{CLIENT}"
            links = await browser.wait_for(
                "[...document.querySelectorAll('#parts a')].map(a => a.href).join(' ')"
            )
            [ticket] = [t for t in sandbox.snapshot()["tickets"] if "sipuni" in t["tags"]]
            assert f"https://secure.usedesk.ru/tickets/{ticket['id']}" in links
            text = await browser.evaluate("document.getElementById('card').innerText")
            assert "Входящий звонок" in text and f"Тикет #{ticket['id']}" in text
            shot = tmp_path / "agent-page.png"
            await browser.screenshot(shot)
            assert shot.stat().st_size > 5_000
            if os.environ.get("CONNECTOR_SCREENSHOTS"):
                shutil.copy(shot, Path(os.environ["CONNECTOR_SCREENSHOTS"]) / shot.name)

            assert (await client.get(f"/sipuni/{TOKEN}", params=hang_up)).status == 200
            await settle(app)
            await browser.wait_for(
                "getComputedStyle(document.getElementById('card')).display === 'none'"
            )


async def test_another_agents_token_cannot_open_101s_stream(tmp_path: Path) -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as sandbox_url:
        config, host = make_config(tmp_path, agents_config(sandbox_url, sandbox.token))
        async with TestClient(TestServer(app_for(config, host))) as client:
            for token, extension in [
                (TOKEN_102, "101"),
                ("", "101"),
                (TOKEN_101, "103"),
                (TOKEN_101[:-1], "101"),
            ]:
                response = await client.get(
                    "/agent/events",
                    params={"account": "012345", "extension": extension, "token": token},
                )
                assert response.status == 404, (token, extension)
                assert await response.json() == {"success": False, "error": "not found"}
            own = await client.get(
                "/agent/events",
                params={"account": "012345", "extension": "101", "token": TOKEN_101},
            )
            assert own.status == 200
            assert own.headers["Content-Type"] == "text/event-stream"
            assert await own.content.readuntil(b"\n\n") == b"event: clear\ndata: {}\n\n"
            own.close()


async def test_no_cards_with_notifications_off_and_nothing_queued_for_absent_agents(
    tmp_path: Path,
) -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as sandbox_url:
        for notifications in (False, True):
            config, host = make_config(
                tmp_path / str(notifications),
                agents_config(sandbox_url, sandbox.token, notifications),
            )
            app = app_for(config, host)
            async with TestClient(TestServer(app)) as client:
                calls = [
                    scenarios.inbound_answered(
                        client=CLIENT,
                        # Other calls each round: on PostgreSQL both rounds share a database.
                        call_id=f"1717171700.{notifications:d}{i}",
                        start=scenarios.START + i * 600,
                    )
                    for i in range(3)
                ]
                for call in calls:
                    *ringing, end = call.events
                    for params in ringing:
                        await client.get(f"/sipuni/{TOKEN}", params=params)
                    await settle(app)
                    ringing_cards = dict(app[BOARD].cards)
                    await client.get(f"/sipuni/{TOKEN}", params=end)
                    await settle(app)
                    # Nobody had the page open: at most the live card, none after hang-up.
                    assert app[BOARD].cards == {}
                    if notifications:
                        assert set(ringing_cards) == {("012345", "101"), ("012345", "102")}
                    else:
                        assert ringing_cards == {}
