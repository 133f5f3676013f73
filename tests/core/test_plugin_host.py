"""The plugin host: registration through entry points, plugins checked as they load (a
misspelt hook refuses the plugin, in ``connector plugins``, ``check`` and ``serve``), the typed
facade calling only the owning plugin, safe auth checks, routing hooks that plugins can
override and that are skipped when they raise, and agent cards with their sinks."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connector_core import cli
from connector_core.app import check_authorization
from connector_core.appkeys import BOARD, INTEGRATIONS
from connector_core.hooks import PluginError, PluginHost
from connector_core.plugin import (
    AuthResult,
    AuthStatus,
    CallState,
    CardPart,
    Integration,
    IntegrationType,
    RegisterIntegrationType,
    RoutingSettings,
    SchemeVisit,
    Transfer,
    hookimpl,
)
from connector_core.simulator import scenarios
from tests.e2e.process import ROOT, free_port
from tests.harness import TOKEN, app_for, make_config, seen, settle
from tests.plugin_kit import install_plugins


def test_hook_register_integration_types(test_plugins_dir: Path) -> None:
    host = PluginHost()
    host.load(["recorder"])
    assert set(host.types) == {"recorder"}  # only the named plugin is imported
    assert host.types["recorder"].settings_model.model_json_schema()["properties"] == {
        "label": {"default": "", "title": "Label", "type": "string"}
    }
    info = {i.name: i for i in host.info()}
    assert info["recorder"].loaded and not info["saboteur"].loaded
    assert "connector_call_started" in info["recorder"].hooks


def test_unknown_or_broken_plugins_are_reported_not_fatal(test_plugins_dir: Path) -> None:
    host = PluginHost()
    host.load(["recorder", "no_such_plugin"])
    assert host.errors == {"no_such_plugin": "no installed plugin named 'no_such_plugin'"}
    assert "recorder" in host.types


async def test_hook_check_authorization(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.good]
plugin = "recorder"
[accounts.012345.integrations.bad]
plugin = "saboteur"
""",
    )
    app = app_for(config, host)
    client = await aiohttp_client(app)
    good, bad = app[INTEGRATIONS]["012345/good"], app[INTEGRATIONS]["012345/bad"]
    assert (await check_authorization(host, good)).status is AuthStatus.OK
    result = await check_authorization(host, bad)
    # A raising check is reported by exception type only: its text could hold a secret.
    assert (result.status, result.reason) == (
        AuthStatus.CANNOT_CONNECT,
        "the check raised RuntimeError",
    )
    body = await (await client.get("/readyz")).json()
    assert body["integrations"]["012345/bad"]["auth"] == "cannot_connect"
    assert body["degraded"] is True and body["ready"] is True


class EntrySchemeCounts:
    """A plugin that widens transfer-scheme processing to the scheme a call enters first."""

    @hookimpl
    def connector_transfer_scheme(
        self, integration: Integration, call: CallState
    ) -> SchemeVisit | None:
        return call.schemes[0] if call.schemes else None


async def test_hook_transfer_scheme(tmp_path: Path, test_plugins_dir: Path, aiohttp_client) -> None:
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.gated]
plugin = "recorder"
transfer_schemes = ["000-100"]
""",
    )
    host.register(EntrySchemeCounts(), "entry_scheme_counts")
    app = app_for(config, host)
    client = await aiohttp_client(app)
    call = scenarios.scheme_transfer(transferred=False)
    for params in call.events:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    await settle(app)
    keys = [k for k in await seen(app, "gated") if k.startswith("seen:")]
    # Without the plugin the call never left the distributor, so the integration saw nothing.
    assert keys[0] == f"seen:{call.call_id}:reached_transfer_scheme:000-100"
    assert keys[-1] == f"seen:{call.call_id}:finished:answered"


class Collector:
    def __init__(self) -> None:
        self.cards: list[tuple[str, str, dict[str, Any]]] = []

    async def deliver(self, account: str, extension: str, card: dict[str, Any]) -> None:
        self.cards.append((account, extension, card))


class SinkPlugin:
    def __init__(self, sink: Collector) -> None:
        self.sink = sink

    @hookimpl
    def connector_register_notification_sinks(self, register) -> None:  # type: ignore[no-untyped-def]
        register(self.sink)


@pytest.fixture
async def notifying(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.crm]
plugin = "recorder"
notifications = true
[accounts.012345.integrations.quiet]
plugin = "recorder"
""",
    )
    sink = Collector()
    host.register(SinkPlugin(sink), "sink")
    app = app_for(config, host)
    return app, await aiohttp_client(app), sink


async def test_hook_register_notification_sinks(notifying) -> None:
    app, client, sink = notifying
    call = scenarios.inbound_answered(ring=["101", "102"], answered_by="101")
    for params in call.events:
        await client.get(f"/sipuni/{TOKEN}", params=params)
        await settle(app)
    states = {(ext, c["state"]) for _, ext, c in sink.cards}
    assert {
        ("101", "ringing"),
        ("102", "ringing"),
        ("101", "answered"),
        ("102", "answered_elsewhere"),
        ("101", "ended"),
        ("102", "ended"),
    } <= states
    # The board keeps only live cards: the call is over, so nothing is left to show.
    assert app[BOARD].cards == {}


async def test_hook_agent_card(notifying) -> None:
    app, client, sink = notifying
    call = scenarios.inbound_answered(ring=["101"], answered_by="101")
    await client.get(f"/sipuni/{TOKEN}", params=call.events[0])
    await settle(app)
    first, complete = [c for _, ext, c in sink.cards if ext == "101"][:2]
    # At once: the caller, no CRM parts yet; then the same card with the parts.
    assert (first["caller"], first["parts"], first["complete"]) == ("+79161234567", [], False)
    assert complete["complete"] is True
    assert complete["parts"] == [
        {
            "title": "recorder crm",
            "lines": ["rings 101"],
            "links": [["call", f"https://crm.example/calls/{call.call_id}"]],
            "caller_name": "",
            "main_link": None,
        }
    ] or complete["parts"] == [
        {
            "title": "recorder crm",
            "lines": ["rings 101"],
            "links": [("call", f"https://crm.example/calls/{call.call_id}")],
            "caller_name": "",
            "main_link": None,
        }
    ]
    # The integration without notifications added no part.
    assert all(p["title"] != "recorder quiet" for _, _, c in sink.cards for p in c["parts"])
    assert app[BOARD].cards[("012345", "101")]["state"] == "ringing"


async def test_no_cards_when_notifications_are_off(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.quiet]
plugin = "recorder"
""",
    )
    sink = Collector()
    host.register(SinkPlugin(sink), "sink")
    app = app_for(config, host)
    client = await aiohttp_client(app)
    for params in scenarios.inbound_answered().events:
        await client.get(f"/sipuni/{TOKEN}", params=params)
    await settle(app)
    await asyncio.sleep(0)
    assert sink.cards == [] and app[BOARD].cards == {}


# --- the typed facade ------------------------------------------------------------------------


class Effects:
    """An effect store that keeps nothing: the facade tests' plugins record in ``calls``."""

    async def get(self, key: str) -> dict[str, Any] | None:
        return None

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        return True


class Settings(BaseModel):
    label: str = ""


class Typed:
    """A plugin with one integration type and every per-integration hook, recording calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str, object]] = []

    @hookimpl
    def connector_register_integration_types(self, register: RegisterIntegrationType) -> None:
        register(IntegrationType(self.name, Settings))

    def _seen(self, hook: str, integration: Integration, arg: object = None) -> None:
        self.calls.append((hook, integration.key, arg))

    @hookimpl
    async def connector_check_authorization(self, integration: Integration) -> AuthResult:
        self._seen("check_authorization", integration)
        return AuthResult(AuthStatus.OK, self.name)

    @hookimpl
    async def connector_call_started(self, integration: Integration, call: CallState) -> None:
        self._seen("started", integration, call.call_id)

    @hookimpl
    async def connector_call_answered(self, integration: Integration, call: CallState) -> None:
        self._seen("answered", integration, call.call_id)

    @hookimpl
    async def connector_call_transferred(
        self, integration: Integration, call: CallState, transfer: Transfer
    ) -> None:
        self._seen("transferred", integration, transfer.to_extension)

    @hookimpl
    async def connector_call_entered_scheme(
        self, integration: Integration, call: CallState, scheme: SchemeVisit
    ) -> None:
        self._seen("entered_scheme", integration, scheme.key)

    @hookimpl
    def connector_call_reached_transfer_scheme(
        self, integration: Integration, call: CallState, scheme: SchemeVisit
    ) -> None:  # a plain function works as well as a coroutine
        self._seen("reached_transfer_scheme", integration, scheme.key)

    @hookimpl
    async def connector_call_finished(self, integration: Integration, call: CallState) -> None:
        self._seen("finished", integration, call.call_id)

    @hookimpl
    def connector_agent_card(
        self, integration: Integration, call: CallState, extension: str
    ) -> CardPart:
        self._seen("agent_card", integration, extension)
        return CardPart(title=self.name)


def instance(host: PluginHost, kind: str, name: str = "crm") -> Integration:
    return Integration(
        account="012345",
        name=name,
        type=host.types[kind],
        settings=Settings(),
        routing=RoutingSettings(),
        effects=Effects(),
    )


SCHEME = SchemeVisit(id="000-200", name="Продажи", entered_at=1)
CALL = CallState(account="012345", call_id="1717171717.1", schemes=[SCHEME])


async def test_typed_methods_call_the_owning_plugin_only() -> None:
    host = PluginHost()
    first, second = Typed("first"), Typed("second")
    host.register(first, "first")
    host.register(second, "second")
    mine = instance(host, "first")
    transfer = Transfer(from_extension="101", to_extension="102", at=2)

    assert await host.check_authorization(mine) == AuthResult(AuthStatus.OK, "first")
    await host.call_started(mine, CALL)
    await host.call_answered(mine, CALL)
    await host.call_transferred(mine, CALL, transfer)
    await host.call_entered_scheme(mine, CALL, SCHEME)
    await host.call_reached_transfer_scheme(mine, CALL, SCHEME)
    await host.call_finished(mine, CALL)
    assert await host.agent_card(mine, CALL, "101") == CardPart(title="first")
    assert host.has_agent_card(mine)

    key = "012345/crm"
    assert first.calls == [
        ("check_authorization", key, None),
        ("started", key, CALL.call_id),
        ("answered", key, CALL.call_id),
        ("transferred", key, "102"),
        ("entered_scheme", key, "000-200"),
        ("reached_transfer_scheme", key, "000-200"),
        ("finished", key, CALL.call_id),
        ("agent_card", key, "101"),
    ]
    assert second.calls == []  # the other plugin implements every hook too, and is not called


async def test_a_hook_answering_the_wrong_type_is_an_error_naming_the_hook() -> None:
    class Sloppy(Typed):
        @hookimpl
        async def connector_check_authorization(self, integration: Integration) -> AuthResult:
            return "ok"  # type: ignore[return-value]  # the mistake under test

    host = PluginHost()
    host.register(Sloppy("sloppy"), "sloppy")
    with pytest.raises(TypeError) as caught:
        await host.check_authorization(instance(host, "sloppy"))
    assert str(caught.value) == (
        "connector_check_authorization of sloppy returned str, not AuthResult or None"
    )
    # The service's check turns it into a failed check instead of stopping.
    result = await check_authorization(host, instance(host, "sloppy"))
    assert (result.status, result.reason) == (
        AuthStatus.CANNOT_CONNECT,
        "the check raised TypeError",
    )


async def test_a_hook_called_without_an_argument_its_plugin_takes_says_which() -> None:
    host = PluginHost()
    host.register(Typed("typed"), "typed")
    with pytest.raises(TypeError) as caught:
        await host.call("connector_call_transferred", instance(host, "typed"), call=CALL)
    assert str(caught.value) == (
        "connector_call_transferred was called without its argument 'transfer', which "
        "tests.core.test_plugin_host.Typed.connector_call_transferred of plugin 'typed' takes"
    )


def test_notification_sinks_come_from_every_plugin() -> None:
    host = PluginHost()
    sink = Collector()
    host.register(SinkPlugin(sink), "sink")
    assert host.notification_sinks() == [sink]


# --- plugins are checked at load (check_pending and more) ------------------------------------

MISSPELT = '''
"""Implements connector_call_finshed: a hook that does not exist."""
from pydantic import BaseModel
from connector_core.plugin import IntegrationType, hookimpl


class Settings(BaseModel):
    pass


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("misspelt", Settings))


@hookimpl
async def connector_call_finshed(integration, call):
    pass
'''


@pytest.fixture
def misspelt_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = install_plugins(tmp_path / "site", "connector_misspelt", {"misspelt": MISSPELT})
    monkeypatch.syspath_prepend(str(root))
    return root


MISSPELT_ERROR = (
    "refused: connector_misspelt.misspelt.connector_call_finshed is marked @hookimpl, "
    "but connector_call_finshed is not a hook (did you mean connector_call_finished?)"
)


def test_a_misspelt_hook_refuses_the_plugin_naming_plugin_and_function(
    misspelt_plugin: Path,
) -> None:
    host = PluginHost()
    host.load(["misspelt", "amocrm_stub"])
    assert host.errors == {"misspelt": MISSPELT_ERROR}
    assert set(host.types) == {"amocrm_stub"}  # nothing of it stays, the others load
    assert host.pm.get_plugin("misspelt") is None
    info = {i.name: i for i in host.info()}
    assert (info["misspelt"].loaded, info["misspelt"].error) == (False, MISSPELT_ERROR)
    host.pm.check_pending()  # what stays registered is sound


def test_a_hook_left_unmarked_or_written_as_a_wrapper_is_refused() -> None:
    class Unmarked:
        def connector_call_started(self, integration: Integration, call: CallState) -> None:
            pass  # without @hookimpl pluggy would never call it

    class Wrapper:
        @hookimpl(wrapper=True)
        def connector_call_started(self, integration: Integration, call: CallState) -> Any:
            return (yield)

    host = PluginHost()
    with pytest.raises(PluginError) as unmarked:
        host.register(Unmarked(), "unmarked")
    assert unmarked.value.problems == [
        f"{__name__}.test_a_hook_left_unmarked_or_written_as_a_wrapper_is_refused.<locals>"
        ".Unmarked.connector_call_started looks like a hook but is not marked @hookimpl, "
        "so it would never be called"
    ]
    with pytest.raises(PluginError, match=r"Wrapper.connector_call_started is a hook wrapper"):
        host.register(Wrapper(), "wrapper")
    assert host.pm.get_plugin("unmarked") is None and host.pm.get_plugin("wrapper") is None


def test_plugins_lists_the_misspelt_hook(misspelt_plugin: Path, capsys) -> None:
    assert cli.main(["plugins"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"misspelt 1.0  (connector_misspelt.misspelt)\n  error: {MISSPELT_ERROR}\n" in out
    assert cli.main(["plugins", "--json"]) == cli.EXIT_OK
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["misspelt"]["error"] == MISSPELT_ERROR
    assert entries["misspelt"]["hooks"] == []
    assert entries["amocrm_stub"]["error"] is None


MISSPELT_CONFIG = """
[storage]
path = "connector.db"
[accounts.012345]
token = "misspelt-token-0123456789"
[accounts.012345.integrations.m]
plugin = "misspelt"
"""
MISSPELT_STDERR = f"The configuration has 1 error(s):\n  - plugin 'misspelt': {MISSPELT_ERROR}\n"


def test_check_with_a_misspelt_hook_exits_2(
    misspelt_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "connector.toml"
    config.write_text(MISSPELT_CONFIG, encoding="utf-8")
    assert cli.main(["check", "--config", str(config)]) == cli.EXIT_BAD_CONFIG
    out, err = capsys.readouterr()
    assert (out, err) == ("", MISSPELT_STDERR)
    assert not (tmp_path / "connector.db").exists()  # refused before anything started


@pytest.mark.e2e
def test_serve_with_a_misspelt_hook_fails_start_up_with_exit_2(
    misspelt_plugin: Path, tmp_path: Path
) -> None:
    config = tmp_path / "connector.toml"
    config.write_text(MISSPELT_CONFIG + f"[server]\nport = {free_port()}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(misspelt_plugin), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "connector_core", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == cli.EXIT_BAD_CONFIG, result.stderr
    assert result.stderr.endswith(MISSPELT_STDERR)  # after the host's own log line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "connector.db").exists()


# --- routing hooks are guarded ---------------------------------------------------------------


class Raising:
    @hookimpl
    def connector_filter_call(self, integration: Integration, call: CallState) -> bool:
        raise RuntimeError("filter broken on purpose")

    @hookimpl
    def connector_transfer_scheme(self, integration: Integration, call: CallState) -> SchemeVisit:
        raise RuntimeError("transfer broken on purpose")


class Hides:
    @hookimpl
    def connector_filter_call(self, integration: Integration, call: CallState) -> bool | None:
        return False if integration.name == "hidden" else None


class Misbehaves:
    @hookimpl
    async def connector_filter_call(self, integration: Integration, call: CallState) -> bool:
        return False  # async: a routing hook must be a plain function

    @hookimpl
    def connector_transfer_scheme(self, integration: Integration, call: CallState) -> str:
        return "000-200"  # not a SchemeVisit


def test_a_raising_routing_hook_is_skipped_logged_and_counted(caplog) -> None:
    host = PluginHost()
    host.register(Typed("crm"), "crm")
    host.register(Hides(), "hides")
    host.register(Raising(), "raising")  # registered last: asked first
    seen, hidden = instance(host, "crm"), instance(host, "crm", "hidden")
    gated = instance(host, "crm", "gated")
    gated.routing = RoutingSettings(transfer_schemes=["000-200"])
    entry = SchemeVisit(id="000-100", name="Распределитель", entered_at=0)
    call = CALL.model_copy(update={"schemes": [entry, SCHEME]})

    with caplog.at_level(logging.ERROR, logger="connector_core.hooks"):
        assert host.filter_call(seen, call) is True  # the built-in filter: schemes = "all"
        assert host.filter_call(hidden, call) is False  # the next plugin's answer
        assert host.transfer_scheme(gated, call) == SCHEME  # the built-in answer
        assert host.decide("connector_filter_call", hidden, call=call) is False
    assert host.routing_errors == {
        ("raising", "connector_filter_call"): 3,
        ("raising", "connector_transfer_scheme"): 1,
    }
    lines = [r.getMessage() for r in caplog.records]
    where = f"{__name__}.Raising.connector_filter_call"
    assert lines[0] == (
        f"routing hook {where} of plugin 'raising' failed for 012345/crm, skipped (the next "
        "implementation decides, the built-in one last): RuntimeError: filter broken on purpose"
    )
    assert "012345/hidden" in lines[1] and "012345/gated" in lines[2]
    # The traceback once per implementation, not on every event.
    assert [bool(r.exc_info) for r in caplog.records] == [True, False, True, False]


def test_routing_hooks_that_are_async_or_answer_the_wrong_type_are_skipped(recwarn, caplog) -> None:
    host = PluginHost()
    host.register(Typed("crm"), "crm")
    host.register(Misbehaves(), "misbehaves")
    gated = instance(host, "crm")
    gated.routing = RoutingSettings(transfer_schemes=["000-200"])
    call = CALL.model_copy(update={"schemes": [SCHEME, SCHEME]})
    assert host.filter_call(gated, call) is True
    assert host.transfer_scheme(gated, call) == SCHEME
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "TypeError: it is async; routing hooks must be plain functions" in messages
    assert "TypeError: it returned str, not SchemeVisit or None" in messages
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_decide_refuses_a_hook_that_is_not_a_routing_hook() -> None:
    host = PluginHost()
    host.register(Typed("crm"), "crm")
    with pytest.raises(ValueError, match="connector_call_started is not a routing hook"):
        host.decide("connector_call_started", instance(host, "crm"), call=CALL)
