"""The missed-call lifecycle through the service: webhooks over HTTP on loopback, the worker,
the missed-call loop and the dispatcher, the recorder plugin's journal read from the store.

Each test runs on SQLite and on PostgreSQL (tests/e2e/conftest.py). The service's clock is
a fake one, moved by the test: the SLA and the settle time pass without waiting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.appkeys import STORE
from connector_core.clock import FakeClock
from connector_core.simulator import scenarios
from connector_core.simulator.scenarios import Scenario
from tests.console_kit import console_section, sign_in
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle_missed

pytestmark = pytest.mark.e2e
START = scenarios.START
SETTLE = 5
ROUTES = f"""
[accounts.{ACCOUNT}.integrations.all_calls]
plugin = "recorder"

[accounts.{ACCOUNT}.integrations.inbound_only]
plugin = "recorder"
schemes = ["{scenarios.INBOUND_SCHEME[0]}"]
"""
MISSED = f"""
[missed_calls]
callback_window_hours = 24
sla_minutes = 15
settle_seconds = {SETTLE}
"""


@pytest.fixture
async def service(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    config, host = make_config(tmp_path, ROUTES, extra=MISSED)
    clock = FakeClock(START)
    app = app_for(config, host, clock=clock)
    client = await aiohttp_client(app)
    return app, client, clock


async def send(client, *calls: Scenario) -> None:
    for call in calls:
        for params in call.events:
            response = await client.get(f"/sipuni/{TOKEN}", params=params)
            assert response.status == 200, await response.text()


async def run(app: web.Application, clock: FakeClock, seconds: float = SETTLE + 1) -> None:
    await settle_missed(app, clock, seconds)


async def journal(app: web.Application, integration: str) -> list[str]:
    """The recorder's entries for ``integration``: ``<call id>:<hook>:<argument>``."""
    effects = await app[STORE].effects(f"{ACCOUNT}/{integration}").items()
    return [key.split(":", 1)[1] for key, _ in effects if not key.startswith("dup")]


def hooks(entries: list[str], hook: str) -> list[str]:
    return [e for e in entries if e.split(":")[1] == hook]


async def test_hook_call_missed_again(service) -> None:
    """Two missed calls then a callback by an employee nobody rang: the second missed call
    is a repeat of the first, reported once to each integration that saw it."""
    app, client, clock = service
    m1, m2, back = scenarios.missed_then_called_back()
    await send(client, m1, m2, back)
    await run(app, clock, 1000)
    for name in ("all_calls", "inbound_only"):
        entries = await journal(app, name)
        assert hooks(entries, "missed_again") == [f"{m2.call_id}:missed_again:{m1.call_id}"]
    # Sent again, run again: nothing new.
    await send(client, m1, m2, back)
    await run(app, clock)
    assert hooks(await journal(app, "all_calls"), "missed_again") == [
        f"{m2.call_id}:missed_again:{m1.call_id}"
    ]


async def test_hook_call_called_back(service) -> None:
    """The callback answers both missed calls, after the callback's own finished hook; it
    reaches the integration that sees only inbound calls (it holds the missed ticket)."""
    app, client, clock = service
    m1, m2, back = scenarios.missed_then_called_back(callback_after=600)
    await send(client, m1, m2, back)
    await run(app, clock, 1000)
    answered_at = START + 600 + 10  # the client picks up 10 s after the employee dials
    expected = f"{back.call_id}:called_back:{m1.call_id},{m2.call_id}/103/{answered_at - START}"
    everything = await journal(app, "all_calls")
    assert [e for e in everything if e.startswith(back.call_id)] == [
        f"{back.call_id}:started:",
        f"{back.call_id}:answered:103",
        f"{back.call_id}:finished:answered",
        expected,
    ]
    # Calls' hooks run concurrently across calls: in order within a call only.
    assert sorted(e for e in everything if ":finished:" in e) == [
        f"{m1.call_id}:finished:missed",
        f"{m2.call_id}:finished:missed",
        f"{back.call_id}:finished:answered",
    ]
    inbound = await journal(app, "inbound_only")
    assert [e for e in inbound if e.startswith(back.call_id)] == [expected]
    assert hooks(everything, "missed_overdue") == []  # called back within the SLA
    rows = await app[STORE].dispatches_for(ACCOUNT, back.call_id)
    assert {r.status for r in rows} == {"done"}


async def test_a_callback_within_the_sla_leaves_nothing_overdue(service) -> None:
    app, client, clock = service
    m1, m2, back = scenarios.missed_then_called_back(callback_after=600)
    await send(client, m1, m2, back)
    await run(app, clock, 700)
    clock.advance(3600)
    await run(app, clock)
    entries = await journal(app, "all_calls")
    assert hooks(entries, "missed_overdue") == []
    assert len(hooks(entries, "called_back")) == 1


async def test_a_callback_after_the_window_links_nothing(service) -> None:
    app, client, clock = service
    m1 = scenarios.inbound_missed(start=START, seq=52601)
    late = scenarios.outbound_answered(start=START + 24 * 3600 + 60, seq=52602)
    await send(client, m1)
    await run(app, clock, 60)
    clock.advance(24 * 3600)
    await send(client, late)
    await run(app, clock)
    entries = await journal(app, "all_calls")
    assert hooks(entries, "called_back") == []
    assert hooks(entries, "missed_again") == []


async def test_hook_call_missed_overdue(service) -> None:
    """A missed call nobody calls back: overdue once the SLA has passed, and never again."""
    app, client, clock = service
    m1 = scenarios.inbound_missed(start=START, seq=52701)
    await send(client, m1)
    await run(app, clock, 60)  # 1 min after the call began
    assert hooks(await journal(app, "all_calls"), "missed_overdue") == []
    await run(app, clock, 15 * 60)
    await run(app, clock, 3600)
    expected = [f"{m1.call_id}:missed_overdue:{m1.call_id}"]
    assert hooks(await journal(app, "all_calls"), "missed_overdue") == expected
    assert hooks(await journal(app, "inbound_only"), "missed_overdue") == expected
    rows = await app[STORE].dispatches_for(ACCOUNT, m1.call_id)
    assert [r.key for r in rows if r.integration.endswith("/all_calls")] == [
        "started",
        "finished",
        "missed_overdue",
    ]


async def test_metrics_and_the_console_count_missed_calls_and_callbacks(
    tmp_path: Path, test_plugins_dir: Path
) -> None:
    config, host = make_config(tmp_path, ROUTES, extra=MISSED + console_section())
    clock = FakeClock(START)
    app = app_for(config, host, clock=clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await send(client, *scenarios.missed_then_called_back(callback_after=600))
        await run(app, clock, 1000)
        metrics = await (await client.get("/metrics")).text()
        assert f'connector_missed_calls_total{{account="{ACCOUNT}"}} 2.0' in metrics
        assert f'connector_called_back_total{{account="{ACCOUNT}"}} 1.0' in metrics
        # 610 s from the first miss to the client's answer: in the 900 s bucket, not 300 s.
        bucket = 'connector_time_to_callback_seconds_bucket{{account="{}",le="{}"}} {}'
        assert bucket.format(ACCOUNT, "300.0", "0.0") in metrics
        assert bucket.format(ACCOUNT, "900.0", "1.0") in metrics
        await sign_in(client)
        page = await (await client.get("/console/integrations")).text()
        assert "Пропущенные и перезвоны" in page
        row = f'<tr data-account="{ACCOUNT}"><td>{ACCOUNT}</td><td>2</td><td>0</td><td>1</td></tr>'
        assert row in page
        english = await (await client.get("/console/integrations", params={"lang": "en"})).text()
        assert "Missed calls and callbacks" in english and "Not called back" in english
