"""Sipuni's API against a running connector: a click-to-call through the Sipuni sandbox comes
back as webhooks and is processed like any call; ``connector check`` and the setup page read
the schemes from Sipuni; the integration key shows in no log line and no console page."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector_core import cli
from connector_core.appkeys import STORE
from connector_core.callstate import Direction
from connector_core.logcontext import setup_logging
from connector_core.simulator import scenarios
from connector_core.simulator.sipuni_sandbox import SipuniSandbox
from connector_core.sipuni_api import SIPUNI_TZ, SipuniApi
from tests.console_kit import console_section, sign_in
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle

pytestmark = pytest.mark.e2e
KEY = "0.sipuni-KEY-4c1d9e"
STUB = '[accounts.012345.integrations.amocrm_stub]\nusers = { "101" = 1 }\n'


def _account_keys(url: str, key: str = KEY) -> str:
    return f'sipuni_api_key = "{key}"\nsipuni_api_url = "{url}"\n'


async def test_a_click_to_call_rings_the_employee_then_the_client_and_is_processed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = SipuniSandbox(key=KEY)
    async with sandbox.serve() as url:
        config, host = make_config(tmp_path, _account_keys(url) + STUB, extra=console_section())
        setup_logging("DEBUG", config.secrets())
        app = app_for(config, host)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            sandbox.webhook_url = str(client.make_url(f"/sipuni/{TOKEN}"))
            async with SipuniApi(account=ACCOUNT, key=KEY, base_url=url) as api:
                started = await api.call_number("8 (903) 555-00-11", "101")
            await sandbox.settled()
            await settle(app)
            [placed] = sandbox.calls
            assert placed.callback_id == started.callback_id is not None
            assert set(placed.statuses) == {200}  # every webhook acknowledged
            assert placed.delivered[-1]["callbackId"] == started.callback_id

            call = await app[STORE].load_call(ACCOUNT, placed.scenario.call_id)
            assert call is not None and call.finished_by == "hangup"
            assert call.direction is Direction.OUTBOUND and call.employee == "101"
            assert call.client_number == "+79035550011" and call.answers

            # The key is a secret of the config: the log masks it wherever it turns up.
            logging.getLogger("connector_core.test").warning("driver said: %s", KEY)
            await sign_in(client)
            pages = [
                await (await client.get(path)).text()
                for path in (
                    "/console/setup",
                    "/console/integrations",
                    "/console/calls",
                    f"/console/calls/{ACCOUNT}/{placed.scenario.call_id}",
                )
            ]
    log = capsys.readouterr().err
    assert "driver said: ***" in log and KEY not in log
    assert all(KEY not in page for page in pages)
    setup = pages[0]
    assert "Схемы в Sipuni" in setup and "000-913898" in setup
    assert "schemes = [&#34;Входящая&#34;, &#34;Исходящая&#34;" in setup  # to copy


async def test_the_setup_page_says_why_sipunis_schemes_are_not_shown(tmp_path: Path) -> None:
    config, host = make_config(tmp_path, STUB, extra=console_section())
    async with TestClient(TestServer(app_for(config, host), host="127.0.0.1")) as client:
        await sign_in(client)
        page = await (await client.get("/console/setup", params={"lang": "en"})).text()
        assert "No Sipuni integration key (the account&#39;s sipuni_api_key)" in page
    sandbox = SipuniSandbox(key=KEY)
    (tmp_path / "wrong").mkdir()
    async with sandbox.serve() as url:
        wrong = _account_keys(url, "0.wrong-key-000") + STUB
        config, host = make_config(tmp_path / "wrong", wrong, extra=console_section())
        async with TestClient(TestServer(app_for(config, host), host="127.0.0.1")) as client:
            await sign_in(client)
            page = await (await client.get("/console/setup", params={"lang": "en"})).text()
    assert "Could not read the schemes from Sipuni: AuthError:" in page
    assert "0.wrong-key-000" not in page


async def test_the_setup_page_names_the_configs_schemes_sipuni_does_not_have(
    tmp_path: Path,
) -> None:
    sandbox = SipuniSandbox(key=KEY)
    routing = 'schemes = ["Входящая", "Продажи 2"]\ntransfer_schemes = ["000-200"]\n'
    async with sandbox.serve() as url:
        config, host = make_config(
            tmp_path, _account_keys(url) + STUB + routing, extra=console_section()
        )
        async with TestClient(TestServer(app_for(config, host), host="127.0.0.1")) as client:
            await sign_in(client)
            page = await (await client.get("/console/setup")).text()
    assert "В настройках есть схемы, которых нет в Sipuni" in page
    assert (
        "<li><code>amocrm_stub.schemes[1]</code> «Продажи 2»: может быть, «Продажи»?</li>"
    ) in page
    listed = page.split('<ul class="unknown-schemes">')[1].split("</ul>")[0]
    assert listed.count("<li>") == 1  # schemes[0] and transfer_schemes[0] are Sipuni's


def _config_file(tmp_path: Path, account_keys: str, routing: str) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "c.db"}"\n'
        f'[accounts.{ACCOUNT}]\ntoken = "{TOKEN}"\n{account_keys}'
        f"[accounts.{ACCOUNT}.integrations.amocrm_stub]\n{routing}",
        encoding="utf-8",
    )
    return path


async def test_check_names_a_scheme_sipuni_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routing = 'schemes = ["Входящая", "Продажи 2"]\ntransfer_schemes = ["000-200"]\n'
    sandbox = SipuniSandbox(key=KEY)
    async with sandbox.serve() as url:
        path = _config_file(tmp_path, _account_keys(url), routing)
        code = await asyncio.to_thread(cli.main, ["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "sipuni api 012345: ok, 4 scheme(s): «Входящая», «Исходящая»" in out
    where = f"accounts.{ACCOUNT}.integrations.amocrm_stub"
    assert (
        f"error: {where}.schemes[1]: Sipuni has no scheme 'Продажи 2'; did you mean 'Продажи'?"
        " Sipuni's schemes: «Входящая» (000-913898), «Исходящая» (000-913901)"
    ) in out
    assert 'to copy: schemes = ["Входящая", "Исходящая", "Распределитель", "Продажи"]' in out
    assert "schemes[0]" not in out and "transfer_schemes" not in out  # both are Sipuni's
    assert KEY not in out


async def test_check_without_a_key_says_the_comparison_was_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path, "", 'schemes = ["Продажи 2"]\n')
    code = await asyncio.to_thread(cli.main, ["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        "  accounts.012345.sipuni_api_key is not set, so the schemes were not compared with"
        " Sipuni's own list"
    ) in out
    assert "warning: accounts.012345.integrations.amocrm_stub.schemes[0]" not in out
    assert "no stored call went through a scheme yet" in out  # the fallback comparison


async def test_check_says_when_sipuni_refuses_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = SipuniSandbox(key=KEY)
    async with sandbox.serve() as url:
        path = _config_file(tmp_path, _account_keys(url, "0.wrong-key-000"), "")
        code = await asyncio.to_thread(cli.main, ["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "error: accounts.012345.sipuni_api_key: Sipuni's schemes: AuthError: Sipuni refused" in out
    )
    assert "check the account number and sipuni_api_key" in out and "0.wrong-key-000" not in out


async def test_the_sandbox_drops_the_webhooks_it_is_told_to_and_still_lists_the_calls(
    tmp_path: Path,
) -> None:
    config, host = make_config(tmp_path, STUB)
    app = app_for(config, host)
    sandbox = SipuniSandbox(key=KEY)
    start = int(datetime(2024, 6, 1, 9, tzinfo=SIPUNI_TZ).timestamp())
    calls = [
        scenarios.inbound_answered(start=start + 60 * i, call_id=f"{start + 60 * i}.{i}")
        for i in range(3)
    ]
    async with TestClient(TestServer(app, host="127.0.0.1")) as client, sandbox.serve() as url:
        sandbox.webhook_url = str(client.make_url(f"/sipuni/{TOKEN}"))
        for call, delivery in zip(calls, ("all", "none", "no_final_hangup"), strict=True):
            sandbox.play(call, delivery)  # type: ignore[arg-type]
        await sandbox.settled()
        await settle(app)
        store = app[STORE]
        delivered, dropped, unfinished = [await store.load_call(ACCOUNT, c.call_id) for c in calls]
        async with SipuniApi(account=ACCOUNT, key=KEY, base_url=url) as api:
            since = datetime.fromtimestamp(start, SIPUNI_TZ)
            history = await api.calls_since(since, since + timedelta(hours=1))
    assert delivered is not None and delivered.finished_by == "hangup"
    assert dropped is None
    assert unfinished is not None and unfinished.ended_at is None and unfinished.answers
    assert [row.record_id for row in history] == [c.call_id for c in calls]
