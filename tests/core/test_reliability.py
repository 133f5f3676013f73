"""Retries, the circuit breaker, the retry horizon, auth failures, dead letters and replay."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from connector_core.appkeys import DISPATCHER, INTEGRATIONS, STORE, WORKER
from connector_core.cli import main, parse_since
from connector_core.clock import FakeClock
from connector_core.dispatcher import Breaker, RetryPolicy
from connector_core.errors import AuthError, InvalidRequestError, RetryLater, TransientError
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config
from tests.plugin_kit import add_test_plugin

FLAKY = '''
"""A plugin whose CRM fails the way the test tells it to."""
from connector_core import hookimpl
from connector_core.integrations import IntegrationType
from pydantic import BaseModel

FAILURES: list[Exception] = []
CALLS: list[str] = []


class Settings(BaseModel):
    pass


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("flaky", Settings))


@hookimpl
async def connector_call_started(integration, call):
    CALLS.append(call.call_id)
    if FAILURES:
        raise FAILURES.pop(0)
'''


@pytest.fixture
def flaky(test_plugins_dir: Path):
    module = add_test_plugin(test_plugins_dir, "flaky", FLAKY)

    module.FAILURES.clear()
    module.CALLS.clear()
    return module


async def run_due(app) -> None:
    await app[WORKER].drain()
    await app[DISPATCHER].dispatch_due()
    await app[DISPATCHER].wait_idle()


@pytest.fixture
async def service(tmp_path: Path, flaky, aiohttp_client):
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.crm]
plugin = "flaky"
""",
    )
    clock = FakeClock()
    app = app_for(config, host, clock=clock)
    client = await aiohttp_client(app)
    call = scenarios.inbound_answered()
    await client.get(f"/sipuni/{TOKEN}", params=call.events[0])
    return app, client, clock, call


async def rows(app, call) -> list:
    return await app[STORE].dispatches_for(ACCOUNT, call.call_id)


async def test_transient_failures_are_retried_after_backoff_honouring_retry_after(
    service, flaky
) -> None:
    app, _, clock, call = service
    flaky.FAILURES.extend([TransientError("Usedesk answered 429", retry_after=30)])
    await run_due(app)
    [row] = await rows(app, call)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.not_before >= clock.now() + 30  # Retry-After wins over the shorter backoff
    clock.advance(29)
    await run_due(app)
    assert flaky.CALLS == [call.call_id]  # not yet
    clock.advance(2)
    await run_due(app)
    [row] = await rows(app, call)
    assert row.status == "done" and flaky.CALLS == [call.call_id] * 2


async def test_a_hook_that_asks_to_retry_later_waits_that_long_and_opens_no_circuit(
    service, flaky
) -> None:
    app, _, clock, call = service
    policy = RetryPolicy()
    waits = policy.breaker_threshold + 2  # more than would open the circuit as failures
    flaky.FAILURES.extend([RetryLater("a create may still land", seconds=40)] * waits)
    for _ in range(waits):
        await run_due(app)
        [row] = await rows(app, call)
        assert row.status == "pending" and row.not_before == clock.now() + 40  # no backoff
        clock.advance(40)
    breaker = app[DISPATCHER].breaker(f"{ACCOUNT}/crm")
    assert not breaker.is_open and breaker.failures == 0
    await run_due(app)
    [row] = await rows(app, call)
    assert row.status == "done" and flaky.CALLS == [call.call_id] * (waits + 1)


async def test_invalid_requests_are_dead_lettered_at_once(service, flaky) -> None:
    app, _, _, call = service
    flaky.FAILURES.append(InvalidRequestError("Usedesk: client_id does not exist"))
    await run_due(app)
    [row] = await rows(app, call)
    assert (row.status, row.last_error) == (
        "dead",
        "InvalidRequestError: Usedesk: client_id does not exist",
    )


async def test_auth_failures_keep_work_queued_and_show_in_readyz(service, flaky) -> None:
    app, client, clock, call = service
    flaky.FAILURES.extend([AuthError("the API key was refused")] * 50)
    for _ in range(50):
        await run_due(app)
        clock.advance(61)
    [row] = await rows(app, call)
    assert row.status == "pending"  # 50 refusals later, still waiting for new credentials
    body = await (await client.get("/readyz")).json()
    assert body["integrations"][f"{ACCOUNT}/crm"] == {
        "auth": "auth_failed",
        "reason": "AuthError: the API key was refused",
    }


async def test_work_past_the_retry_horizon_goes_to_the_dead_letters(service, flaky) -> None:
    app, _, clock, call = service
    flaky.FAILURES.extend([TransientError("Usedesk is down")] * 1000)
    horizon = RetryPolicy().horizon_seconds
    while clock.now() < 1_700_000_000 + horizon + 700:
        await run_due(app)
        clock.advance(600)
    [row] = await rows(app, call)
    assert row.status == "dead" and row.last_error == "TransientError: Usedesk is down"
    assert row.attempts > 50


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    policy = RetryPolicy(breaker_threshold=3, breaker_cooldown_seconds=10)
    breaker = Breaker(policy)
    for _ in range(3):
        assert breaker.allow(0)
        breaker.failure(0)
    assert breaker.is_open and not breaker.allow(5)
    assert breaker.allow(10) and not breaker.allow(10)  # one probe at a time
    breaker.failure(10)  # the probe failed: twice the cooldown
    assert not breaker.allow(29) and breaker.allow(30)
    breaker.success()
    assert not breaker.is_open and breaker.allow(30) and breaker.allow(30)


async def test_a_store_failure_inside_a_hook_is_retried_without_opening_the_circuit(
    service, flaky
) -> None:
    app, _client, clock, call = service
    policy = RetryPolicy()
    disk_full = sqlite3.OperationalError("database or disk is full")
    flaky.FAILURES.extend([disk_full] * (policy.breaker_threshold + 2))
    for _ in range(policy.breaker_threshold + 2):
        await run_due(app)
        clock.advance(policy.max_delay_seconds)
    breaker = app[DISPATCHER].breaker(f"{ACCOUNT}/crm")
    assert not breaker.is_open and breaker.failures == 0
    await run_due(app)  # the store is writable again: the next attempt goes through
    [row] = await rows(app, call)
    assert row.status == "done" and row.attempts == policy.breaker_threshold + 3
    assert "database or disk is full" in (row.last_error or "")


async def test_an_open_breaker_holds_back_other_calls_of_that_integration(service, flaky) -> None:
    app, client, clock, call = service
    policy = RetryPolicy()
    flaky.FAILURES.extend([TransientError("down")] * (policy.breaker_threshold + 1))
    first = [call] + [scenarios.inbound_answered(call_id=f"1717171700.{i}") for i in range(4)]
    for c in first[1:]:
        await client.get(f"/sipuni/{TOKEN}", params=c.events[0])
    await run_due(app)
    breaker = app[DISPATCHER].breaker(f"{ACCOUNT}/crm")
    assert breaker.is_open and len(flaky.CALLS) == policy.breaker_threshold

    later = [scenarios.inbound_answered(call_id=f"1717171800.{i}") for i in range(6)]
    for c in later:
        await client.get(f"/sipuni/{TOKEN}", params=c.events[0])
    await run_due(app)
    assert len(flaky.CALLS) == policy.breaker_threshold  # the open circuit sent nothing
    clock.advance(policy.breaker_cooldown_seconds + 1)
    await run_due(app)
    assert len(flaky.CALLS) == policy.breaker_threshold + 1  # one probe; it failed
    clock.advance(policy.breaker_cooldown_seconds + 1)
    await run_due(app)
    assert len(flaky.CALLS) == policy.breaker_threshold + 1  # the cooldown doubled
    for _ in range(10):
        clock.advance(policy.max_delay_seconds)
        await run_due(app)
    assert not breaker.is_open
    assert sorted(set(flaky.CALLS)) == sorted(c.call_id for c in first + later)
    statuses = {r.status for c in first + later for r in await rows(app, c)}
    assert statuses == {"done"}


async def test_metrics_count_events_hook_calls_and_queue_depth(service, flaky) -> None:
    app, client, _, _ = service
    await client.get(f"/sipuni/{TOKEN}", params={"event": "x", "call_id": "1"})
    await run_due(app)
    text = await (await client.get("/metrics")).text()
    assert f'connector_events_received_total{{account="{ACCOUNT}",event="1"}} 1.0' in text
    assert f'connector_events_rejected_total{{account="{ACCOUNT}"}} 1.0' in text
    assert "connector_events_processed_total 1.0" in text
    assert (
        f'connector_hook_calls_total{{hook="started",integration="{ACCOUNT}/crm",'
        f'outcome="done"}} 1.0' in text
    )
    assert "connector_inbox_pending 0.0" in text and "connector_dispatches_dead 0.0" in text


def write_config(tmp_path: Path, integrations: str) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(f"""
[storage]
path = "connector.db"
[tracker]
finish_settle_seconds = 0
[accounts.{ACCOUNT}]
token = "{TOKEN}"
{integrations}
""")
    return path


def test_dlq_list_show_retry_drop(tmp_path: Path, flaky, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, '[accounts.012345.integrations.crm]\nplugin = "flaky"\n')
    recording = tmp_path / "calls.txt"
    calls = [scenarios.inbound_missed(call_id=f"1717171700.{i}") for i in range(2)]
    recording.write_text(
        "\n".join(json.dumps({"account": ACCOUNT, "params": e}) for c in calls for e in c.events)
    )
    flaky.FAILURES.extend([InvalidRequestError("refused"), InvalidRequestError("refused")])
    assert main(["replay", str(recording), "--config", str(config)]) == 0
    capsys.readouterr()

    assert main(["dlq", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and all("started" in line and "refused" in line for line in listed)
    first, second = (int(line.split()[0]) for line in listed)
    assert main(["dlq", "show", str(first), "--config", str(config)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dispatch"]["status"] == "dead" and shown["call"]["outcome"] == "missed"
    assert main(["dlq", "drop", str(second), "--config", str(config)]) == 0
    assert main(["dlq", "retry", str(first), "--config", str(config)]) == 0
    assert main(["dlq", "retry", "999", "--config", str(config)]) == 1
    capsys.readouterr()
    assert main(["dlq", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "the dead-letter queue is empty\n"
    # The retried row runs at the next start (here: a replay of nothing new).
    assert main(["replay", "--since", "1d", "--config", str(config)]) == 0
    assert flaky.CALLS.count(calls[0].call_id) == 2 and flaky.CALLS.count(calls[1].call_id) == 1


def test_replay_since_gives_a_new_integration_the_calls_it_missed(
    tmp_path: Path, flaky, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recording = tmp_path / "calls.txt"
    call = scenarios.inbound_answered()
    recording.write_text(
        "\n".join(json.dumps({"account": ACCOUNT, "params": e}) for e in call.events)
    )
    before = write_config(tmp_path, '[accounts.012345.integrations.old]\nplugin = "recorder"\n')
    assert main(["replay", str(recording), "--config", str(before)]) == 0
    after = write_config(
        tmp_path,
        '[accounts.012345.integrations.old]\nplugin = "recorder"\n'
        '[accounts.012345.integrations.new]\nplugin = "flaky"\n',
    )
    assert main(["replay", "--since", "2h", "--config", str(after)]) == 0
    assert f"replayed {len(call.events)} stored event(s)" in capsys.readouterr().out
    assert flaky.CALLS == [call.call_id]


def test_parse_since() -> None:
    assert parse_since("2h", 10_000.0) == 2_800.0
    assert parse_since("2024-01-01T00:00:00", 0) == 1_704_067_200
    with pytest.raises(SystemExit, match="neither a duration"):
        parse_since("yesterday", 0)


def test_integration_keys(service) -> None:
    app = service[0]
    assert list(app[INTEGRATIONS]) == [f"{ACCOUNT}/crm"]


async def test_a_stalled_integrations_backlog_does_not_starve_the_others(
    tmp_path: Path, flaky, aiohttp_client
) -> None:
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.crm]
plugin = "flaky"
[accounts.012345.integrations.ok]
plugin = "recorder"
""",
    )
    clock = FakeClock()
    app = app_for(config, host, clock=clock)
    client = await aiohttp_client(app)
    # Refused credentials stall "crm": its rows come due again every minute, and since that
    # is no CRM failure its circuit stays closed (an open one would offer a single probe row),
    # so its whole backlog is due in every scan.
    flaky.FAILURES.extend([AuthError("the API key was refused")] * 100)
    early = [scenarios.inbound_answered(call_id=f"1717171700.{i}") for i in range(8)]
    for call in early:
        await client.get(f"/sipuni/{TOKEN}", params=call.events[0])
    await app[WORKER].drain()
    await app[DISPATCHER].dispatch_due()
    await app[DISPATCHER].wait_idle()
    assert not app[DISPATCHER].breaker(f"{ACCOUNT}/crm").is_open
    later = scenarios.inbound_answered(call_id="1717179999.1")
    await client.get(f"/sipuni/{TOKEN}", params=later.events[0])
    await app[WORKER].drain()
    clock.advance(RetryPolicy().auth_retry_seconds)  # the stalled rows are all due again
    # A batch smaller than the stalled backlog (9 rows due, "crm" scanned first): the
    # healthy integration still gets its turn.
    assert await app[DISPATCHER].dispatch_due(limit=4) == 5
    await app[DISPATCHER].wait_idle()
    ok_rows = [r for r in await rows(app, later) if r.integration.endswith("/ok")]
    assert [(r.key, r.status) for r in ok_rows] == [("started", "done")]
