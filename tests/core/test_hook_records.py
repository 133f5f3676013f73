"""Each hook call is kept with its call (attempt, outcome, error, the CRM requests and the
decisions its plugin reported), secrets masked; each routing decision with its reason."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from connector_core import calls_view, router, tracker
from connector_core.appkeys import STORE
from connector_core.callrecords import CrmRequest, Decision, HookOutcome, Routing
from connector_core.callstate import CallState
from connector_core.clock import FakeClock
from connector_core.errors import InvalidRequestError, TransientError
from connector_core.events import SipuniEvent, parse_event
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration, IntegrationType, RoutingSettings
from connector_core.plugin import hookimpl
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle
from tests.plugin_kit import add_test_plugin

API_SECRET = "reporter-api-secret-0123456789"
REPORTER = '''
"""A CRM plugin that reports its requests and decisions, echoing secrets as careless CRMs do."""
from pydantic import BaseModel, SecretStr
from connector_core.plugin import Decision, IntegrationType, hookimpl

FAILURES: list[Exception] = []
WEBHOOK_TOKEN = ""  # set by the test: the Sipuni token a CRM might echo


class Settings(BaseModel):
    api_secret: SecretStr


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("reporter", Settings))


@hookimpl
def connector_check_authorization(integration):
    # Outside a hook call: not kept anywhere, and no error either.
    integration.report(Decision("authorised"))


@hookimpl
async def connector_call_started(integration, call):
    secret = integration.settings.api_secret.get_secret_value()
    integration.on_crm_request(
        "create/ticket", 0.25, "ok", status=201, path=f"/create/ticket?api_token={secret}"
    )
    integration.on_crm_request("clients", 0.125, "ok")  # a client that reports no status
    integration.report(
        Decision(
            "ticket 5001 created",
            f"new caller {call.client_number}",
            link="https://desk.example/tickets/5001",
            text=f"call {call.call_id}; webhook /sipuni/{WEBHOOK_TOKEN}; key {secret}",
        )
    )
    if FAILURES:
        raise FAILURES.pop(0)
'''


@pytest.fixture
def reporter(test_plugins_dir: Path):
    module = add_test_plugin(test_plugins_dir, "reporter", REPORTER)
    module.FAILURES.clear()
    module.WEBHOOK_TOKEN = TOKEN
    return module


@pytest.fixture
async def service(tmp_path: Path, reporter, aiohttp_client):
    config, host = make_config(
        tmp_path,
        f"""
[accounts.012345.integrations.desk]
plugin = "reporter"
api_secret = "{API_SECRET}"
""",
    )
    clock = FakeClock()
    app = app_for(config, host, clock=clock)
    client = await aiohttp_client(app)
    call = scenarios.inbound_missed(client="89161234567")
    await client.get(f"/sipuni/{TOKEN}", params=call.events[0])
    return SimpleNamespace(app=app, client=client, clock=clock, call=call, db=config.storage.path)


async def test_every_attempt_is_kept_with_its_requests_and_decisions(service, reporter) -> None:
    reporter.FAILURES.append(TransientError(f"Desk answered 503 (key {API_SECRET})"))
    await settle(service.app)
    service.clock.advance(3600)
    await settle(service.app)

    trace = await calls_view.load_trace(service.app[STORE], service.call.call_id)
    [desk] = trace.integrations
    assert desk.integration == f"{ACCOUNT}/desk"
    assert desk.status == "done" and desk.link == "https://desk.example/tickets/5001"
    [row] = desk.rows
    assert (row.record, row.hook, row.status, row.attempts) == (
        "started",
        "connector_call_started",
        "done",
        2,
    )
    first, second = desk.hook_calls
    assert (first.attempt, first.outcome, second.attempt, second.outcome) == (
        1,
        HookOutcome.RETRY,
        2,
        HookOutcome.DONE,
    )
    assert first.error == "TransientError: Desk answered 503 (key ***)"
    assert first.retry_at is not None and first.retry_at > first.started_at
    assert second.started_at == first.started_at + 3600  # the service's clock
    assert second.error is None and second.retry_at is None
    assert second.requests == (
        CrmRequest(
            "create/ticket",
            "ok",
            0.25,
            second.started_at - 0.25,
            status=201,
            path="/create/ticket?api_token=***",
        ),
        CrmRequest("clients", "ok", 0.125, second.started_at - 0.125),
    )
    assert second.decisions == (
        Decision(
            "ticket 5001 created",
            "new caller +79161234567",
            link="https://desk.example/tickets/5001",
            text=f"call {service.call.call_id}; webhook /sipuni/***; key ***",
        ),
    )
    assert desk.decisions == [*first.decisions, *second.decisions]


async def test_no_secret_reaches_the_stored_records(service, reporter) -> None:
    reporter.FAILURES.append(TransientError(f"echo {API_SECRET} {TOKEN}"))
    await settle(service.app)
    service.clock.advance(3600)
    await settle(service.app)
    with sqlite3.connect(service.db) as db:
        stored = [data for (data,) in db.execute("SELECT data FROM call_records")]
    text = "\n".join(stored)
    assert '"create/ticket"' in text and "ticket 5001 created" in text  # requests are kept…
    assert API_SECRET not in text and TOKEN not in text  # …without the secrets
    assert API_SECRET.upper() not in text.upper()


async def test_a_dead_letter_is_kept_as_the_last_attempt(service, reporter) -> None:
    reporter.FAILURES.append(InvalidRequestError("Desk: unknown client_id 7"))
    await settle(service.app)
    trace = await calls_view.load_trace(service.app[STORE], service.call.call_id)
    [desk] = trace.integrations
    [attempt] = desk.hook_calls
    assert (attempt.outcome, attempt.error, attempt.retry_at) == (
        HookOutcome.DEAD,
        "InvalidRequestError: Desk: unknown client_id 7",
        None,
    )
    assert desk.status == "dead" and desk.rows[0].status == "dead"


async def test_a_decision_outside_a_hook_call_is_not_kept(service, reporter) -> None:
    from connector_core.app import check_authorization
    from connector_core.appkeys import HOST, INTEGRATIONS

    integration = service.app[INTEGRATIONS][f"{ACCOUNT}/desk"]
    await check_authorization(service.app[HOST], integration)  # reports "authorised"
    await settle(service.app)
    trace = await calls_view.load_trace(service.app[STORE], service.call.call_id)
    assert [d.what for d in trace.integrations[0].decisions] == ["ticket 5001 created"]


# -- routing decisions and their reasons ------------------------------------------------------


class _Settings(BaseModel):
    pass


KIND: IntegrationType[_Settings, None] = IntegrationType("plain", _Settings)


class _VipOnly:
    """A plugin whose filter decides for the integration named "vip" only."""

    @hookimpl
    def connector_filter_call(self, integration: Integration, call: CallState) -> bool | None:
        return False if integration.name == "vip" else None


def integration(name: str, **routing: object) -> Integration:
    return Integration(
        account=ACCOUNT,
        name=name,
        type=KIND,
        settings=_Settings(),
        routing=RoutingSettings.model_validate(routing),
        effects=None,  # type: ignore[arg-type]  # routing reads no effects
    )


def states(scenario: scenarios.Scenario) -> list[CallState]:
    state, result = None, []
    for params in scenario.events:
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account=ACCOUNT, region="RU", received_at=1.0)
        result.append(state)
    return result


def reasons(scenario: scenarios.Scenario, *integrations: Integration) -> dict[str, list[Routing]]:
    host = PluginHost()
    host.register(_VipOnly(), "vip_only")
    seen: dict[str, list[Routing]] = {i.key: [] for i in integrations}
    for state in states(scenario):
        for record in router.route(state, integrations, host, now=1.0).decisions:
            assert isinstance(record.entry, Routing)
            if record.entry not in seen[record.integration]:
                seen[record.integration].append(record.entry)
    return seen


def test_routing_says_why_an_integration_sees_a_call_or_not() -> None:
    moves = scenarios.scheme_transfer(transferred=True, call_id="1717171800.2")
    seen = reasons(
        moves,
        integration("all"),
        integration("support", schemes=["000-999"]),
        integration("sales", schemes=["Продажи"]),
        integration("after_transfer", transfer_schemes=["Продажи"]),
        integration("vip"),
    )
    assert seen[f"{ACCOUNT}/all"] == [
        Routing(sees=True, scheme_filter='schemes = "all": every call')
    ]
    support = seen[f"{ACCOUNT}/support"]  # one reason per path the call had
    assert not any(r.sees for r in support)
    assert support[-1].scheme_filter == (
        "none of schemes (000-999) is on its path; the call's path:"
        " 000-100 (Распределитель) → 000-200 (Продажи)"
    )
    *before, sales = seen[f"{ACCOUNT}/sales"]
    assert sales == Routing(sees=True, scheme_filter="selected by schemes: went through Продажи")
    assert before and not any(r.sees for r in before)
    waits, moved = seen[f"{ACCOUNT}/after_transfer"]
    assert not waits.sees and waits.transfer_scheme is not None
    assert waits.transfer_scheme.startswith("waits for a move into one of transfer_schemes")
    assert moved.sees and moved.transfer_scheme is not None
    assert moved.transfer_scheme.startswith("moved into transfer scheme")
    assert "Продажи" in moved.transfer_scheme
    assert seen[f"{ACCOUNT}/vip"] == [
        Routing(
            sees=False, scheme_filter="plugin 'vip_only' left out the call (connector_filter_call)"
        )
    ]


async def test_the_worker_keeps_each_routing_decision_once(
    tmp_path: Path, test_plugins_dir
) -> None:
    config, host = make_config(
        tmp_path,
        """
[accounts.012345.integrations.sales]
plugin = "recorder"
transfer_schemes = ["Продажи"]
""",
    )
    from aiohttp.test_utils import TestClient, TestServer

    app = app_for(config, host)
    async with TestClient(TestServer(app)) as client:
        moves = scenarios.scheme_transfer(transferred=True, call_id="1717171800.2")
        for params in [*moves.events, *moves.events]:  # every webhook twice
            await client.get(f"/sipuni/{TOKEN}", params=params)
        await settle(app)
        trace = await calls_view.load_trace(app[STORE], moves.call_id)
    [sales] = trace.integrations
    assert [step.sees for step in sales.routing] == [False, True]
    assert "moved into transfer scheme" in sales.routing[1].reason
