"""The plugin host: registration through entry points, owner-only calls, safe auth checks,
routing hooks that plugins can override, and agent cards with their sinks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connector_core import hookimpl
from connector_core.app import check_authorization
from connector_core.appkeys import BOARD, INTEGRATIONS
from connector_core.callstate import CallState, SchemeVisit
from connector_core.hooks import PluginHost
from connector_core.integrations import AuthStatus, Integration
from connector_core.simulator import scenarios
from tests.harness import TOKEN, app_for, make_config, seen, settle


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
        }
    ] or complete["parts"] == [
        {
            "title": "recorder crm",
            "lines": ["rings 101"],
            "links": [("call", f"https://crm.example/calls/{call.call_id}")],
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
