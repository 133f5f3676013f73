"""The console over HTTP once signed in: every page renders in Russian by default and in
English on request, the live list is a fragment of the same rows, and a button does its
action and comes back to the page with a message."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from connector_core.appkeys import STORE, WORKER
from connector_core.simulator import scenarios
from tests.console_kit import PASSWORD, console_section, csrf_in, sign_in
from tests.harness import TOKEN, app_for, make_config, settle

STUB = '[accounts.012345.integrations.amocrm_stub]\nusers = { "101" = 1 }\n'
CALL = "1717171700.1"


async def test_every_page_in_russian_then_in_english(tmp_path: Path) -> None:
    config, host = make_config(tmp_path, STUB, extra=console_section())
    app = app_for(config, host)
    async with TestClient(TestServer(app)) as client:
        for params in scenarios.inbound_answered(client="79161234567", call_id=CALL).events:
            await client.get(f"/sipuni/{TOKEN}", params=params)
        await settle(app)
        await sign_in(client)
        pages = {
            "/console/calls": ("Звонки", "Calls"),
            f"/console/calls/012345/{CALL}": ("События Sipuni", "Sipuni events"),
            "/console/integrations": ("Неудавшиеся вызовы", "Dead letters"),
            "/console/setup": ("Адрес для Sipuni", "The address for Sipuni"),
        }
        for path, (russian, _) in pages.items():
            response = await client.get(path)
            assert response.status == 200, path
            assert russian in await response.text(), path
        for path, (_, english) in pages.items():
            response = await client.get(path, params={"lang": "en"})
            assert english in await response.text(), path
        # The choice sticks to the browser (a cookie) until changed again.
        assert "Dead letters" in await (await client.get("/console/integrations")).text()
        await client.get("/console/calls", params={"lang": "ru"})
        assert "Звонки" in await (await client.get("/console/calls")).text()


async def test_the_live_list_is_the_rows_of_the_page_with_the_same_filter(tmp_path: Path) -> None:
    config, host = make_config(tmp_path, STUB, extra=console_section())
    app = app_for(config, host)
    async with TestClient(TestServer(app)) as client:
        await sign_in(client)
        page = await (
            await client.get("/console/calls", params={"phone": "8 916 123-45-67"})
        ).text()
        assert 'data-live-url="/console/calls/rows?phone=8+916+123-45-67"' in page
        assert "Звонков нет." in page
        for params in scenarios.inbound_answered(client="79161234567", call_id=CALL).events:
            await client.get(f"/sipuni/{TOKEN}", params=params)
        await settle(app)
        rows = await client.get("/console/calls/rows", params={"phone": "8 916 123-45-67"})
        text = await rows.text()
        assert rows.status == 200 and text.lstrip().startswith("<tr")
        assert f'data-call-id="{CALL}"' in text and "+79161234567" in text
        other = await client.get("/console/calls/rows", params={"phone": "8 916 000-00-00"})
        assert CALL not in await other.text()


async def test_a_button_does_its_action_and_the_page_says_so(tmp_path: Path) -> None:
    config, host = make_config(tmp_path, STUB, extra=console_section())
    app = app_for(config, host)
    async with TestClient(TestServer(app)) as client:
        for params in scenarios.inbound_answered(call_id=CALL).events:
            await client.get(f"/sipuni/{TOKEN}", params=params)
        await app[WORKER].drain()
        [row, *_] = await app[STORE].pending_dispatches(10)
        await app[STORE].fail_dispatch(row.id, "the CRM refused it", None)
        csrf = await sign_in(client)
        page = await (await client.get(f"/console/calls/012345/{CALL}")).text()
        assert "the CRM refused it" in page and f"/console/dead-letters/{row.id}/retry" in page

        response = await client.post(
            f"/console/dead-letters/{row.id}/retry",
            data={"csrf": csrf, "back": f"/console/calls/012345/{CALL}"},
        )
        assert response.url.path == f"/console/calls/012345/{CALL}"
        assert "Поставлено в очередь снова." in await response.text()
        # Shown once.
        assert "Поставлено" not in await (await client.get(f"/console/calls/012345/{CALL}")).text()
        await settle(app)
        hooks = await (await client.get(f"/console/calls/012345/{CALL}/hooks")).text()
        assert f'data-dispatch="{row.id}"' in hooks and "hook-dead" not in hooks

        again = await client.post(f"/console/dead-letters/{row.id}/retry", data={"csrf": csrf})
        assert again.url.path == "/console/integrations"
        assert "Этого вызова уже нет среди неудавшихся." in await again.text()


async def test_a_wrong_password_says_so_and_an_unknown_call_is_404(tmp_path: Path) -> None:
    config, host = make_config(tmp_path, STUB, extra=console_section())
    async with TestClient(TestServer(app_for(config, host))) as client:
        form = await client.get("/console/login")
        response = await client.post(
            "/console/login",
            data={"csrf": csrf_in(await form.text()), "password": PASSWORD[::-1]},
        )
        assert response.status == 401 and "Неверный пароль." in await response.text()
        await sign_in(client)
        missing = await client.get("/console/calls/012345/404.0")
        assert missing.status == 404 and await missing.text() == "Такого звонка нет."
        assert (await client.get("/console", allow_redirects=False)).status == 308
        assert (await client.get("/console/")).url.path == "/console/calls"
