"""Plugins registered through an entry point, routed by scheme, isolated from each other.

The recorder and saboteur plugins (tests/plugin_kit.py) are found through the
``connector_core`` entry-point group; events go over real HTTP to the service on a loopback
port; what each integration's hooks saw is read back from the store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connector_core import router, tracker
from connector_core.appkeys import STORE
from connector_core.callstate import CallState, LifecycleKind
from connector_core.events import SipuniEvent, parse_event
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration, IntegrationType, RoutingSettings
from connector_core.simulator import scenarios
from connector_core.store.base import NewDispatch
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen, settle

ROUTES = """
[accounts.012345.integrations.all_calls]
plugin = "recorder"

[accounts.012345.integrations.sales_only]
plugin = "recorder"
schemes = ["000-200"]

[accounts.012345.integrations.after_transfer]
plugin = "recorder"
transfer_schemes = ["Продажи"]

[accounts.012345.integrations.broken]
plugin = "saboteur"
mode = "raise"

[accounts.012345.integrations.stuck]
plugin = "saboteur"
mode = "hang"
hook_timeout_seconds = 0.2
"""


@pytest.fixture
async def service(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    config, host = make_config(tmp_path, ROUTES)
    app = app_for(config, host)
    client = await aiohttp_client(app)
    return app, client


async def send(client, scenario: scenarios.Scenario, method: str = "GET") -> None:
    for params in scenario.events:
        if method == "GET":
            response = await client.get(f"/sipuni/{TOKEN}", params=params)
        else:
            response = await client.post(f"/sipuni/{TOKEN}/", data=params)
        assert response.status == 200, await response.text()
        assert await response.json() == {"success": True}


def calls(distributed: bool) -> tuple[scenarios.Scenario, scenarios.Scenario]:
    """A call that stays in the distributor scheme and one transferred into sales."""
    stays = scenarios.scheme_transfer(transferred=False, call_id="1717171700.1")
    moves = scenarios.scheme_transfer(
        transferred=True, call_id="1717171800.2", start=scenarios.START + 100
    )
    return stays, moves


def keys(journal: list[str], call_id: str) -> list[str]:
    return [k.split(":", 2)[2] for k in journal if k.startswith(f"seen:{call_id}:")]


async def test_hook_call_started(service) -> None:
    """Also covers answered and finished: each once, in order, for an all-schemes integration."""
    app, client = service
    stays, moves = calls(True)
    await send(client, stays)
    await send(client, moves, method="POST")
    await settle(app)
    journal = await seen(app, "all_calls")
    assert keys(journal, stays.call_id) == ["started:", "answered:101", "finished:answered"]
    assert keys(journal, moves.call_id)[0] == "started:"
    assert keys(journal, moves.call_id)[-1] == "finished:answered"
    assert not [k for k in journal if k.startswith("dup")]


async def test_hook_filter_call(service) -> None:
    """schemes = ["000-200"]: only the call that went through sales is seen."""
    app, client = service
    stays, moves = calls(True)
    await send(client, stays)
    await send(client, moves)
    await settle(app)
    journal = await seen(app, "sales_only")
    assert keys(journal, stays.call_id) == []
    assert keys(journal, moves.call_id)[0] == "started:"
    assert "finished:answered" in keys(journal, moves.call_id)


async def test_hook_call_reached_transfer_scheme(service) -> None:
    """transfer_schemes: nothing before the transfer; the transfer hook first, then the rest."""
    app, client = service
    stays, moves = calls(True)
    await send(client, stays)
    await send(client, moves)
    await settle(app)
    journal = await seen(app, "after_transfer")
    assert keys(journal, stays.call_id) == []
    got = keys(journal, moves.call_id)
    assert got[0] == "reached_transfer_scheme:000-200"
    assert "started:" not in got
    assert got[-1] == "finished:answered"
    assert got.count("reached_transfer_scheme:000-200") == 1


async def test_hook_call_entered_scheme(service) -> None:
    app, client = service
    _, moves = calls(True)
    await send(client, moves)
    await settle(app)
    assert "entered_scheme:000-200" in keys(await seen(app, "all_calls"), moves.call_id)


async def test_hook_call_transferred(service) -> None:
    app, client = service
    call = scenarios.inbound_transferred(first="101", to="102")
    await send(client, call)
    await settle(app)
    got = keys(await seen(app, "all_calls"), call.call_id)
    assert got == ["started:", "answered:101", "transferred:102", "finished:answered"]


async def test_hook_call_answered(service) -> None:
    app, client = service
    call = scenarios.outbound_answered(employee="103")
    await send(client, call)
    await settle(app)
    got = keys(await seen(app, "all_calls"), call.call_id)
    assert got == ["started:", "answered:103", "finished:answered"]


async def test_hook_call_finished(service) -> None:
    """A missed call finishes as missed; duplicates and a replay of every event add nothing."""
    app, client = service
    call = scenarios.inbound_missed()
    await send(client, call)
    await send(client, call)
    await settle(app)
    got = keys(await seen(app, "all_calls"), call.call_id)
    assert got == ["started:", "finished:missed"]


async def test_a_raising_or_hanging_plugin_does_not_stop_the_others(service) -> None:
    app, client = service
    from connector_test_plugins import saboteur  # the real module loaded by the host

    before = len(saboteur.ATTEMPTS)
    call = scenarios.inbound_answered()
    await send(client, call)
    await settle(app)
    assert len(saboteur.ATTEMPTS) - before >= 2  # both saboteurs were really called
    assert keys(await seen(app, "all_calls"), call.call_id) == [
        "started:",
        "answered:101",
        "finished:answered",
    ]
    rows = await app[STORE].dispatches_for(ACCOUNT, call.call_id)
    errors = {r.integration: r.last_error for r in rows if r.last_error}
    assert errors == {
        f"{ACCOUNT}/broken": "RuntimeError: saboteur plugin fails on purpose",
        f"{ACCOUNT}/stuck": "the plugin did not finish within its hook timeout",
    }


async def test_a_call_handed_back_and_forth_gets_every_transfer_hook_once(service) -> None:
    app, client = service
    call_id, t0 = "1717171700.77", 1717171700
    base = {
        "call_id": call_id,
        "src_num": "79161234567",
        "src_type": "1",
        "dst_type": "2",
        "treeName": "Входящая",
        "treeNumber": "000-913898",
    }

    def leg(event: int, ext: str, at: int, **extra: str) -> dict[str, str]:
        return {
            **base,
            "event": str(event),
            "dst_num": f"012345{ext}",
            "short_dst_num": ext,
            "timestamp": str(at),
            **extra,
        }

    events = [
        leg(1, "101", t0),
        leg(3, "101", t0 + 5),
        leg(1, "102", t0 + 20, transfer_from="101"),
        leg(3, "102", t0 + 25),
        leg(1, "101", t0 + 40, transfer_from="102"),
        leg(3, "101", t0 + 45),
        leg(1, "102", t0 + 60, transfer_from="101"),
        leg(3, "102", t0 + 65),
        leg(
            2,
            "102",
            t0 + 90,
            status="ANSWER",
            call_start_timestamp=str(t0),
            call_answer_timestamp=str(t0 + 5),
            last_called="102",
        ),
    ]
    for params in events:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    await settle(app)
    got = keys(await seen(app, "all_calls"), call_id)
    # The recorder journals by target; the second hand-over to 102 is its own hook call.
    assert got == [
        "started:",
        "answered:101",
        "transferred:102",
        "transferred:101",
        "finished:answered",
    ]
    rows = await app[STORE].dispatches_for(ACCOUNT, call_id)
    assert [r.key for r in rows if r.integration.endswith("/all_calls")] == [
        "started",
        "answered",
        "transferred:102",
        "transferred:101",
        "transferred:102#2",
        "finished",
    ]
    assert {r.status for r in rows if r.integration.endswith("/all_calls")} == {"done"}


# --- a scheme known by its name first, by its number later -----------------------------------


class NoEffects:
    async def get(self, key: str) -> dict[str, Any] | None:
        return None

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        return True


class NoSettings(BaseModel):
    pass


def integration(name: str, routing: RoutingSettings) -> Integration:
    kind = IntegrationType("recorder", NoSettings)
    return Integration(ACCOUNT, name, kind, NoSettings(), routing, NoEffects())


def states(s: scenarios.Scenario) -> list[CallState]:
    """The call's state after each of its events, as the worker routes it."""
    state: CallState | None = None
    result = []
    for params in s.events:
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account=ACCOUNT, region="RU", received_at=1.0)
        result.append(state)
    return result


NAMED_FIRST = scenarios.with_scheme_named_by(scenarios.scheme_transfer(), "treeName", (1, 2))


def test_one_transfer_scheme_row_per_call_whatever_the_schemes_spelling() -> None:
    host = PluginHost()
    after_transfer = integration("t", RoutingSettings(transfer_schemes=["Продажи"]))
    proposed: dict[str, NewDispatch] = {}  # by key, as the store keeps them
    for state in states(NAMED_FIRST):
        for row in router.plan(state, [after_transfer], host, now=0.0):
            proposed.setdefault(row.key, row)
    reached = [r for r in proposed.values() if r.kind is LifecycleKind.REACHED_TRANSFER_SCHEME]
    assert [r.key for r in reached] == ["reached_transfer_scheme"]
    assert reached[0].record.scheme is not None and reached[0].record.scheme.name == "Продажи"
    # The entry into the transfer scheme is the transfer itself, under either spelling.
    assert sorted(proposed) == ["answered", "finished", "reached_transfer_scheme"]


def test_a_scheme_selected_by_number_is_routed_once_its_number_arrives() -> None:
    host = PluginHost()
    sales = integration("s", RoutingSettings(schemes=["000-200"]))
    plans = [router.plan(state, [sales], host, now=0.0) for state in states(NAMED_FIRST)]
    # Until the hang-up names sales by its number, the call is not known to be in 000-200.
    assert [[r.key for r in plan] for plan in plans[:-1]] == [[], [], [], []]
    # Then every record it is owed, the entry under the id it was announced with (the name)
    # and the payload the call knows now (the number).
    assert [r.key for r in plans[-1]] == [
        "started",
        "entered_scheme:Продажи",
        "answered",
        "finished",
    ]
    assert plans[-1][1].record.scheme == states(NAMED_FIRST)[-1].schemes[1]
    assert plans[-1][1].record.scheme.id == "000-200"


async def test_scheme_named_then_numbered_runs_each_hook_once(service) -> None:
    """Each event routed and dispatched before the next arrives, as in production."""
    app, client = service
    for params in NAMED_FIRST.events:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
        await settle(app)
    call_id = NAMED_FIRST.call_id
    assert keys(await seen(app, "after_transfer"), call_id) == [
        "reached_transfer_scheme:Продажи",  # ran while only the name was known
        "answered:101",
        "finished:answered",
    ]
    assert keys(await seen(app, "all_calls"), call_id) == [
        "started:",
        "entered_scheme:Продажи",
        "answered:101",
        "finished:answered",
    ]
    # Selected by number: seen from the event that brought it, the scheme with its number.
    assert keys(await seen(app, "sales_only"), call_id) == [
        "started:",
        "entered_scheme:000-200",
        "answered:101",
        "finished:answered",
    ]
    for name in ("all_calls", "sales_only", "after_transfer"):
        assert not [k for k in await seen(app, name) if k.startswith("dup")], name
    rows = await app[STORE].dispatches_for(ACCOUNT, call_id)
    mine = [r for r in rows if not r.integration.endswith(("/broken", "/stuck"))]
    assert {r.status for r in mine} == {"done"}, [(r.key, r.last_error) for r in mine]
    reached = [r for r in rows if r.kind is LifecycleKind.REACHED_TRANSFER_SCHEME]
    assert [r.integration for r in reached] == [f"{ACCOUNT}/after_transfer"]


async def test_rows_written_by_release_1_run_with_their_arguments(service, tmp_path: Path) -> None:
    """Rows without a record (release 1's INSERT) run, read once from their key."""
    app, _ = service
    moved = NAMED_FIRST
    handed = scenarios.inbound_transferred(first="101", to="102", seq=77)
    old_rows = [
        (moved, ["started", "entered_scheme:Продажи", "answered", "finished"]),
        (handed, ["started", "answered", "transferred:102", "finished"]),
    ]
    for s, old_keys in old_rows:
        await app[STORE].commit_event(None, states(s)[-1], [])
        db = sqlite3.connect(tmp_path / "connector.db")
        with db:
            db.executemany(
                "INSERT INTO dispatches"
                " (account, call_id, integration, key, not_before, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(ACCOUNT, s.call_id, f"{ACCOUNT}/all_calls", key, 0.0, 0.0) for key in old_keys],
            )
        db.close()
    await settle(app)
    journal = await seen(app, "all_calls")
    assert keys(journal, moved.call_id) == [
        "started:",
        "entered_scheme:000-200",  # the key said the name; the hook gets the number too
        "answered:101",
        "finished:answered",
    ]
    assert keys(journal, handed.call_id) == [
        "started:",
        "answered:101",
        "transferred:102",
        "finished:answered",
    ]
    for s, _ in old_rows:
        rows = await app[STORE].dispatches_for(ACCOUNT, s.call_id)
        assert [(r.status, r.record) for r in rows] == [("done", None)] * 4
