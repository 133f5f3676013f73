"""The agent page in a real browser: the caller's card pops up while the phone rings, with a
desktop notification naming the caller, and goes when another employee answers.

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
# Known to the sandbox's Usedesk: client 1001, with open ticket 5001 owned by agent 2.
KNOWN_CLIENT = "79161234567"
# Put in the page before its own script: records the notifications it raises (and closes)
# and the tones it plays, through the browser's own classes.
OBSERVE_PAGE = """
window.__notes = [];
window.__tones = 0;
const RealNotification = window.Notification;
window.Notification = class extends RealNotification {
  constructor(title, options) {
    super(title, options);
    this.record = {title, body: (options || {}).body || "", closed: false};
    window.__notes.push(this.record);
  }
  close() { this.record.closed = true; super.close(); }
};
const realOscillator = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () {
  window.__tones += 1;
  return realOscillator.call(this);
};
"""


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


NOTIFICATIONS = """
[notifications]
phone_format = "national"
sound = true
"""


async def test_a_ringing_call_notifies_101_by_name_and_another_answering_closes_it(
    tmp_path: Path, needs_chromium: None
) -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as sandbox_url:
        config, host = make_config(
            tmp_path, agents_config(sandbox_url, sandbox.token), extra=NOTIFICATIONS
        )
        app = app_for(config, host)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client, Browser() as browser:
            page = client.make_url(f"/agent/?account=012345&extension=101&token={TOKEN_101}")
            await browser.send(
                "Browser.grantPermissions",
                permissions=["notifications"],
                origin=f"http://127.0.0.1:{page.port}",
            )
            await browser.send("Page.addScriptToEvaluateOnNewDocument", source=OBSERVE_PAGE)
            await browser.goto(str(page))
            await browser.wait_for(
                "document.getElementById('status').textContent === 'Нет звонков'"
            )
            # Permission granted already: no button to ask for it; the sound is on by default.
            assert await browser.evaluate("document.getElementById('notify').hidden") is True
            state = await browser.evaluate("document.getElementById('notify-state').textContent")
            assert state == "Уведомления включены"
            assert await browser.evaluate("document.getElementById('sound').checked") is True

            call = scenarios.inbound_answered(
                ring=["101", "102"], answered_by="102", client=KNOWN_CLIENT
            )
            *ringing, answer, hang_up = call.events
            for params in ringing:
                assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
            await settle(app)
            note = await browser.wait_for(
                "window.__notes.find(n => n.title === 'Иван Петров' && !n.closed)"
            )
            assert note["body"] == "8 (916) 123-45-67 · Входящий звонок · Открыть тикет #5001"
            assert await browser.evaluate("window.__tones") >= 2  # the chime: two tones
            text = await browser.evaluate("document.getElementById('card').innerText")
            # The ticket's owner by name, the number as the operator chose.
            assert "агент Борис Операторов" in text and "8 (916) 123-45-67" in text
            ticket = await browser.evaluate(
                "(a => [a.hidden, a.href, a.target, a.rel, a.textContent])"
                "(document.getElementById('open'))"
            )
            assert ticket == [
                False,
                "https://secure.usedesk.ru/tickets/5001",
                "_blank",
                "noopener",
                "Открыть тикет #5001",
            ]

            # 102 picks up: 101's card goes, and so does every notification it raised.
            assert (await client.get(f"/sipuni/{TOKEN}", params=answer)).status == 200
            await settle(app)
            await browser.wait_for(
                "getComputedStyle(document.getElementById('card')).display === 'none'"
                " && document.getElementById('status').textContent === 'Ответил другой сотрудник'"
            )
            assert await browser.wait_for("window.__notes.every(n => n.closed)")
            assert (await client.get(f"/sipuni/{TOKEN}", params=hang_up)).status == 200
            await settle(app)
            await browser.wait_for(
                "document.getElementById('status').textContent === 'Нет звонков'"
            )

            # The agent turns the sound off: the browser remembers it over the default.
            await browser.evaluate("document.getElementById('sound').click()")
            await browser.goto(str(page))
            await browser.wait_for(
                "document.getElementById('status').textContent === 'Нет звонков'"
            )
            assert await browser.evaluate("document.getElementById('sound').checked") is False


async def test_the_ringing_card_names_the_caller_and_the_owner_in_the_chosen_format(
    tmp_path: Path,
) -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as sandbox_url:
        config, host = make_config(
            tmp_path,
            agents_config(sandbox_url, sandbox.token),
            extra='[notifications]\nphone_format = "international"\n',
        )
        app = app_for(config, host)
        async with TestClient(TestServer(app)) as client:
            call = scenarios.inbound_answered(ring=["101"], client=KNOWN_CLIENT)
            for params in call.events[:1]:
                assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
            await settle(app)
            card = app[BOARD].cards[("012345", "101")]
    assert card["state"] == "ringing" and card["complete"] is True
    assert (card["caller"], card["number"]) == ("+7 916 123-45-67", f"+{KNOWN_CLIENT}")
    assert card["caller_name"] == "Иван Петров"
    assert card["main_link"] == {
        "label": "Открыть тикет #5001",
        "url": "https://secure.usedesk.ru/tickets/5001",
    }
    [part] = card["parts"]
    assert "агент Борис Операторов" in part["lines"][1]


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
