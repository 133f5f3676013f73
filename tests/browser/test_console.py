"""The operator console in a real browser: sign in, find a call by a differently spelt number,
open its timeline, retry a dead letter and watch it turn done, read the setup page.

Needs Debian's ``chromium`` (CI installs it; CONNECTOR_BROWSER_TESTS=1 makes its absence a
failure instead of a skip). CONNECTOR_SCREENSHOTS=<dir> keeps the screenshots that
docs/console.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.browser.cdp import Browser
from tests.browser.test_agent_page import needs_chromium  # noqa: F401 - a fixture
from tests.console_kit import PASSWORD, console_section
from tests.harness import TOKEN, app_for, make_config, settle

pytestmark = pytest.mark.e2e
ANSWERED = scenarios.inbound_answered(
    ring=["101", "102"], client="79160000777", call_id="1717171700.11"
)
TRANSFERRED = scenarios.scheme_transfer(
    ring=["101", "105"],
    answered_by="105",
    client="79035550011",
    call_id="1717172300.12",
    start=scenarios.START + 600,
)
FAILING = scenarios.inbound_missed(
    ring=["102"], client="79261112233", call_id="1717172900.13", start=scenarios.START + 1200
)


def usedesk(sandbox_url: str, token: str) -> str:
    """Usedesk on the sandbox, and beside it the amoCRM stub (which reports its requests and
    decisions: the responsible user and why)."""
    return f"""
[accounts.012345.integrations.amocrm_stub]
subdomain = "acme"
users = {{ "101" = 11 }}
[accounts.012345.integrations.usedesk]
api_token = "{token}"
base_url = "{sandbox_url}"
burst_per_second = 50
users = [{{ extension = "101", agent = 2 }}, {{ extension = "102", agent = 3 }}]
on_duty_user = 4
phone_format = "+7XXXXXXXXXX"
"""


async def send(client: TestClient, app: web.Application, call: scenarios.Scenario) -> None:
    for params in call.events:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    await settle(app)


async def text(browser: Browser, selector: str) -> str:
    return str(await browser.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))


async def viewport(browser: Browser, height: int = 860) -> None:
    await browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )


async def shot(browser: Browser, folder: Path, name: str) -> None:
    """The whole page (up to 2400 px high) as a PNG."""
    path = folder / name
    height = int(await browser.evaluate("document.documentElement.scrollHeight"))
    await viewport(browser, min(max(height, 600), 2400))
    await browser.screenshot(path)
    await viewport(browser)
    assert path.stat().st_size > 5_000
    if os.environ.get("CONNECTOR_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["CONNECTOR_SCREENSHOTS"]) / name)


async def test_an_operator_finds_a_call_reads_it_retries_its_dead_letter_and_reads_setup(
    tmp_path: Path,
    needs_chromium: None,  # noqa: F811
) -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as sandbox_url:
        config, host = make_config(
            tmp_path, usedesk(sandbox_url, sandbox.token), extra=console_section()
        )
        app = app_for(config, host)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client, Browser() as browser:
            await viewport(browser)
            await send(client, app, ANSWERED)
            await send(client, app, TRANSFERRED)
            # Usedesk refuses the missed call's ticket (made at its end, with the comment in
            # it): the call's end becomes a dead letter.
            sandbox.set_faults(mode="error", message="Канал закрыт", paths=["/create/ticket"])
            await send(client, app, FAILING)
            sandbox.clear_faults()
            await client.get(f"/sipuni/{TOKEN}", params={"event": "2"})  # rejected: no call_id
            [dead] = await app[STORE].dead_dispatches()
            assert (dead.call_id, dead.key) == (FAILING.call_id, "finished")

            # Signed out, the console sends the browser to its login page.
            await browser.goto(str(client.make_url("/console/")))
            await browser.wait_for("location.pathname === '/console/login'")
            await shot(browser, tmp_path, "console-login.png")
            await browser.evaluate(
                f"document.getElementById('password').value = {json.dumps(PASSWORD)};"
                " document.getElementById('sign-in').click()"
            )
            await browser.wait_for(
                "location.pathname === '/console/calls'"
                " && document.querySelectorAll('tr.call').length === 3"
            )
            await shot(browser, tmp_path, "console-calls.png")

            # The client's number as an operator might type it, not as Sipuni sent it.
            await browser.evaluate(
                "document.getElementById('phone').value = '8 (916) 000-07-77';"
                " document.getElementById('find').click()"
            )
            found = await browser.wait_for(
                "location.search.includes('phone=')"
                " && [...document.querySelectorAll('tr.call')].map(r => r.dataset.callId)"
            )
            assert found == [ANSWERED.call_id]
            row = await text(browser, "tr.call")
            assert "+79160000777" in row and "Отвечен" in row and "usedesk: готово" in row
            assert "amocrm_stub: готово" in row

            # Its timeline: the Sipuni events in arrival order, the call they make, the hooks.
            await browser.evaluate("document.querySelector('tr.call a.open').click()")
            await browser.wait_for("document.querySelectorAll('tr.event').length === 4")
            events = await browser.evaluate(
                "[...document.querySelectorAll('tr.event td:nth-child(3)')].map(c => c.innerText)"
            )
            assert events == [
                "Звонок сотруднику (1)",
                "Звонок сотруднику (1)",
                "Ответ (3)",
                "Завершение (2)",
            ]
            assert await text(browser, "#owner") == "101"
            hooks = await text(browser, "#hooks")
            # Each integration's routing as it was decided, with the reason recorded then.
            assert 'Видит звонок: schemes = "all": every call' in hooks
            assert "started" in hooks and "finished" in hooks and "ошибка" not in hooks
            # What the stub decided, and why: the owner of the call in amoCRM.
            stub = await text(browser, "section[data-integration='012345/amocrm_stub']")
            assert "responsible user 11: extension 101 answered" in stub
            # And Usedesk's: the ticket's owner with the reason, and the request that made it.
            desk = await text(browser, "section[data-integration='012345/usedesk']")
            assert "owner 2: answered (extension 101)" in desk
            assert "POST /create/ticket" in desk and "200" in desk
            # Each CRM request it made: method, path, outcome.
            requests = await browser.evaluate(
                "[...document.querySelectorAll("
                "'section[data-integration=\"012345/amocrm_stub\"] tr.crm-request')]"
                ".map(r => r.innerText)"
            )
            assert any(
                "contact_find_or_create" in r and "POST /api/v4/contacts" in r and "ok" in r
                for r in requests
            ), requests
            await shot(browser, tmp_path, "console-call.png")

            # The dead letter, on the integrations page, with the rejected webhook.
            await browser.evaluate("document.querySelector('nav a:nth-child(2)').click()")
            await browser.wait_for(f"!!document.querySelector('tr[data-dispatch=\"{dead.id}\"]')")
            assert "Канал закрыт" in await text(browser, "table.dead-letters")
            assert "call_id" in await text(browser, "table.rejected")
            await shot(browser, tmp_path, "console-integrations.png")

            # To the call, retry, and watch the live section turn the row done.
            await browser.evaluate(
                f"document.querySelector('tr[data-dispatch=\"{dead.id}\"] a').click()"
            )
            cell = f"document.querySelector('#hooks tr[data-dispatch=\"{dead.id}\"] td.status')"
            assert await browser.wait_for(f"{cell} && {cell}.innerText") == "ошибка"
            await shot(browser, tmp_path, "console-dead-letter.png")
            await browser.evaluate(
                f"document.querySelector('tr[data-dispatch=\"{dead.id}\"] button.retry').click()"
            )
            await browser.wait_for(
                "!!document.querySelector('.flash')"
                " && document.querySelector('.flash').innerText === 'Поставлено в очередь снова.'"
            )
            assert await text(browser, f"tr[data-dispatch='{dead.id}'] td.status") in (
                "в очереди",
                "готово",
            )
            await settle(app)  # the dispatcher's round, as the running service would do it
            assert await browser.wait_for(f"{cell}.innerText === 'готово' && 'done'") == "done"
            comments = [c for t in sandbox.snapshot()["tickets"] for c in t.get("comments", [])]
            assert any(FAILING.call_id in json.dumps(c, ensure_ascii=False) for c in comments)

            # Setup: the schemes seen, and 105 (rung, answered) that no integration maps.
            await browser.evaluate("document.querySelector('nav a:nth-child(3)').click()")
            await browser.wait_for("document.querySelectorAll('tr.scheme').length >= 3")
            schemes = await text(browser, "table.schemes")
            for scheme in ("000-913898", "Входящая", "000-100", "Распределитель", "Продажи"):
                assert scheme in schemes
            unmapped = await browser.evaluate(
                "[...document.querySelectorAll('tr.extension.unmapped')]"
                ".map(r => r.dataset.extension)"
            )
            assert unmapped == ["105"]
            assert f"/sipuni/{TOKEN}" in await text(browser, "#webhook-012345")
            config_text = await text(browser, "#effective-config")
            assert sandbox.token not in config_text and "scrypt" not in config_text
            await shot(browser, tmp_path, "console-setup.png")
            # No live list may be asking the server for a fragment while it shuts down.
            await browser.goto("about:blank")
            await browser.wait_for("location.href === 'about:blank'")
