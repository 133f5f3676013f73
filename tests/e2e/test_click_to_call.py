"""Click-to-call against a running service, the Sipuni sandbox and the Usedesk sandbox: an
agent's «Перезвонить» makes Sipuni ring the agent, then the client; the call's webhooks come
back and are processed, linked to the call it was started from; other agents' tokens, the
rate limit, a missing key and Sipuni's refusals each get a clear answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connector_core import calls_cli, calls_view
from connector_core.appkeys import STORE
from connector_core.callstate import Direction
from connector_core.simulator import scenarios
from tests.click_to_call_world import CLIENT, KEY, TOKEN_101, TOKEN_102, world
from tests.console_kit import csrf_in, sign_in
from tests.harness import ACCOUNT

pytestmark = pytest.mark.e2e


async def test_101_calls_a_missed_caller_back_and_the_call_is_linked_to_the_missed_one(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        missed = await w.missed()
        status, body = await w.call_back(missed.call_id)
        assert status == 200, body
        assert body["success"] is True and body["callback_id"]
        await w.calls_placed()

        # Sipuni was asked to ring 101 first (reverse = 0), then the missed call's client.
        [(method, params)] = w.sipuni.requests
        assert method == "callback/call_number"
        assert params == {
            "antiaon": "0",
            "phone": CLIENT,
            "reverse": "0",
            "sipnumber": "101",
            "user": ACCOUNT,
        }
        [placed] = w.sipuni.calls
        assert placed.callback_id == body["callback_id"]
        assert set(placed.statuses) == {200}  # every webhook acknowledged
        first = placed.delivered[0]
        assert (first["short_src_num"], first["dst_num"]) == ("101", CLIENT)

        store = w.app[STORE]
        back = await store.load_call(ACCOUNT, placed.scenario.call_id)
        assert back is not None and back.finished_by == "hangup"
        assert back.direction is Direction.OUTBOUND and back.employee == "101"
        assert back.client_number == f"+{CLIENT}" and back.answers

        # The request and Sipuni's answer are on the missed call; the new call knows its origin.
        origin = await calls_view.load_trace(store, missed.call_id, ACCOUNT)
        [step] = origin.click_to_call
        assert step.request.by == "agent 101" and step.request.outcome == "started"
        assert step.request.callback_id == body["callback_id"]
        assert step.request.phone == f"+{CLIENT}" and step.request.extension == "101"
        followed = await calls_view.load_trace(store, back.call_id, ACCOUNT)
        assert followed.started_from is not None
        assert followed.started_from.call_id == missed.call_id
        assert followed.started_from.request.callback_id == body["callback_id"]
        printed = calls_cli.render_trace(origin)
        assert "click-to-call at " in printed
        assert f"by agent 101: ring 101, then +{CLIENT}: Sipuni started it, callbackId" in printed
        assert "started from the connector: click-to-call by agent 101" in calls_cli.render_trace(
            followed
        )
        assert calls_view.to_json(followed)["started_from"]["call_id"] == missed.call_id

        # The callback's own comment lands on the missed call's ticket (the number's open one).
        [ticket] = w.tickets()
        assert any(back.call_id in c["message"] for c in ticket["comments"])


async def test_another_agents_token_cannot_start_a_call_for_101(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        missed = await w.missed()
        status, body = await w.call_back(missed.call_id, "101", TOKEN_102)
        assert status == 403
        assert body == {
            "success": False,
            "code": "not_your_extension",
            "error": "this is the page token of extension 102: it starts calls for extension"
            " 102 only, not 101",
        }
        for token in ("", "guess", TOKEN_101 + "0", KEY):
            status, body = await w.call_back(missed.call_id, "101", token)
            assert (status, body["code"]) == (403, "not_authorised"), token
        # Nor for an extension that has no agent, nor on another account.
        status, body = await w.call_back(missed.call_id, "103", TOKEN_101)
        assert (status, body["code"]) == (403, "not_your_extension")
        response = await w.client.post(
            "/agent/call",
            json={"account": "999999", "extension": "101", "token": TOKEN_101, "call_id": "1"},
        )
        assert response.status == 404
        assert (await response.json())["error"] == "account '999999' is not in the config"
        # The agents' recent calls are theirs only, too.
        listing = await w.client.get(
            "/agent/calls", params={"account": ACCOUNT, "extension": "101", "token": TOKEN_102}
        )
        assert listing.status == 403
        assert w.sipuni.requests == []  # Sipuni was never asked


async def test_what_the_agent_sends_wrong_is_named(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        status, body = await w.call_back("")
        assert (status, body["error"]) == (400, "call_id is missing: which call to call back")
        status, body = await w.call_back("1700000000.1")
        assert (status, body["error"]) == (404, "account 012345 has no stored call '1700000000.1'")
        response = await w.client.post(
            "/agent/call", data=b"[1]", headers={"Content-Type": "application/json"}
        )
        assert response.status == 400
        assert (await response.json())["error"] == "the body must be a JSON object"
        # A call between two employees has no client to call back; it is not a hidden one.
        between = scenarios.internal("101", "102", start=int(time.time()) - 60)
        await w.send(between)
        status, body = await w.call_back(between.call_id)
        assert (status, body["code"], body["error"]) == (
            422,
            "no_number",
            f"call {between.call_id} has no client number to call back (an internal call,"
            " between employees)",
        )
        assert w.sipuni.requests == []


async def test_an_agent_may_not_start_calls_back_to_back(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        missed = await w.missed()
        assert (await w.call_back(missed.call_id))[0] == 200
        response = await w.client.post(
            "/agent/call",
            json={
                "account": ACCOUNT,
                "extension": "101",
                "token": TOKEN_101,
                "call_id": missed.call_id,
            },
        )
        body = await response.json()
        assert response.status == 429
        assert body["code"] == "rate_limited" and 1 <= body["retry_after"] <= 10
        assert response.headers["Retry-After"] == str(body["retry_after"])
        assert body["error"].startswith("extension 101 started a call moments ago: try again in")
        assert "(one call every 10 s, 3 a minute)" in body["error"]
        # 102 has an allowance of its own.
        assert (await w.call_back(missed.call_id, "102", TOKEN_102))[0] == 200
        await w.calls_placed()
        assert [p["sipnumber"] for _, p in w.sipuni.requests] == ["101", "102"]


async def test_without_a_key_the_page_offers_no_call_back_and_the_endpoint_says_why(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, with_key=False) as w:
        missed = await w.missed()
        listing = await w.client.get(
            "/agent/calls", params={"account": ACCOUNT, "extension": "101", "token": TOKEN_101}
        )
        body = await listing.json()
        assert body["call_back"] is False
        why = (
            "click-to-call is off for account 012345: accounts.012345.sipuni_api_key"
            " (Sipuni's integration key) is not set; see docs/sipuni.md"
        )
        assert body["call_back_off"] == why
        assert [c["call_id"] for c in body["calls"]] == [missed.call_id]  # the list stays
        status, body = await w.call_back(missed.call_id)
        assert (status, body["code"], body["error"]) == (409, "no_api_key", why)


async def test_sipunis_refusal_is_answered_and_kept_on_the_call(tmp_path: Path) -> None:
    async with world(tmp_path, extensions=("101",)) as w:  # Sipuni has no employee 102
        missed = await w.missed()
        status, body = await w.call_back(missed.call_id, "102", TOKEN_102)
        assert status == 502 and body["code"] == "sipuni_refused"
        assert body["error"] == (
            "Sipuni refused the call: Sipuni refused callback/call_number (HTTP 400):"
            ' {"success": false, "message": "no employee with short number 102"}'
        )
        trace = await calls_view.load_trace(w.app[STORE], missed.call_id, ACCOUNT)
        [step] = trace.click_to_call
        assert step.request.outcome == "failed" and step.request.callback_id is None
        assert step.request.error is not None
        assert "no employee with short number 102" in step.request.error
        assert KEY not in (step.request.error + body["error"])


async def test_the_console_calls_back_from_the_chosen_extension(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        missed = await w.missed()
        await sign_in(w.client)
        page_url = f"/console/calls/{ACCOUNT}/{missed.call_id}"
        page = await (await w.client.get(page_url)).text()
        assert 'id="call-back"' in page and "Перезвонить" in page
        # The first phone that rang is offered first, then the others.
        assert '<option value="101">101</option><option value="102">102</option>' in page
        action = f"{page_url}/call-back"

        forged = await w.client.post(action, data={"extension": "102"}, allow_redirects=False)
        assert forged.status == 403
        assert w.sipuni.requests == []

        done = await w.client.post(
            action, data={"csrf": csrf_in(page), "extension": "102", "back": page_url}
        )
        assert done.status == 200 and done.url.path == page_url
        shown = await done.text()
        assert "Sipuni звонит на внутренний номер, затем клиенту." in shown
        assert "Звонки из коннектора" in shown and "console · 102 → +79160000555" in shown
        await w.calls_placed()
        [(_, params)] = w.sipuni.requests
        assert (params["sipnumber"], params["reverse"], params["phone"]) == ("102", "0", CLIENT)
        [placed] = w.sipuni.calls
        followed = await (
            await w.client.get(f"/console/calls/{ACCOUNT}/{placed.scenario.call_id}")
        ).text()
        assert 'id="started-from"' in followed and missed.call_id in followed

        again = await w.client.post(
            action, data={"csrf": csrf_in(page), "extension": "102", "back": page_url}
        )
        text = await again.text()
        assert "С этого номера звонили только что: подождите несколько секунд." in text


async def test_the_console_shows_no_button_without_a_key(tmp_path: Path) -> None:
    async with world(tmp_path, with_key=False) as w:
        missed = await w.missed()
        csrf = await sign_in(w.client)
        page_url = f"/console/calls/{ACCOUNT}/{missed.call_id}"
        page = await (await w.client.get(page_url)).text()
        assert 'id="call-back"' not in page
        # A form posted anyway is refused with the reason.
        done = await w.client.post(
            f"{page_url}/call-back",
            data={"csrf": csrf, "extension": "101", "back": page_url},
            params={"lang": "en"},
        )
        assert "Click-to-call is off: the account has no sipuni_api_key." in await done.text()
