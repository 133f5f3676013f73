"""The console's pages as data: each page's view function over a real store, filled by real
webhooks through the real service (no HTTP session needed), and the actions behind the buttons.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from connector_core import tracker
from connector_core.appkeys import (
    DISPATCHER,
    STORE,
    WORKER,
)
from connector_core.callstate import LifecycleEvent, LifecycleKind, Outcome
from connector_core.clock import FakeClock
from connector_core.console import actions, pages, views
from connector_core.console.filters import PAGE_SIZE, Period, parse_filter, row_status, store_query
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios
from connector_core.store.base import CallQuery, DeliveryStatus, NewDispatch
from connector_core.store.sqlite import SQLiteStore
from tests.console_kit import Services, sign_in
from tests.harness import TOKEN, settle
from tests.plugin_kit import add_test_plugin

LINKER = '''
"""Keeps a ticket per call under call:<id>, and says where the ticket is."""
from pydantic import BaseModel, ConfigDict
from connector_core import hookimpl
from connector_core.integrations import IntegrationType


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[dict] = []


class Runtime:
    def __init__(self, integration):
        pass

    def call_link(self, record):
        return f"https://crm.example/tickets/{record['ticket']}"


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("linker", Settings, factory=Runtime))


@hookimpl
async def connector_call_started(integration, call):
    await integration.effects.put(f"call:{call.call_id}", {"ticket": 70 + len(call.call_id)})
'''

RECORDER = '[accounts.012345.integrations.rec]\nplugin = "recorder"\n'
SALES_ONLY = '[accounts.012345.integrations.sales]\nplugin = "recorder"\nschemes = ["Продажи"]\n'
SABOTEUR = '[accounts.012345.integrations.broken]\nplugin = "saboteur"\n'

Start = Callable[..., Awaitable[tuple[web.Application, TestClient]]]


@pytest.fixture
async def start(tmp_path: Path, test_plugins_dir: Path) -> AsyncIterator[Start]:
    add_test_plugin(test_plugins_dir, "linker", LINKER)
    services = Services(tmp_path)

    async def start(
        integrations: str = RECORDER, **kwargs: Any
    ) -> tuple[web.Application, TestClient]:
        return await services.start(integrations, **kwargs)

    yield start
    await services.close()


async def send(client: TestClient, *calls: scenarios.Scenario) -> None:
    for call in calls:
        for params in call.events:
            assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200


async def call_then_restart(
    start: Start, before: str, after: str
) -> tuple[web.Application, TestClient]:
    """Call 1717171700.1 handled with the integrations ``before``; then the service started
    again on the same store with ``after``, as after an operator's change to the config."""
    app, client = await start(before, folder="same")
    await send(client, scenarios.inbound_answered(call_id="1717171700.1"))
    await settle(app)
    await client.close()
    return await start(after, folder="same")


async def listed(app: web.Application, **query: str) -> list[str]:
    sources = pages.sources(app)
    f = parse_filter(query, sources.regions(), sources.integrations)
    assert f.problems == ()
    return [row.call_id for row in (await views.calls_view(pages.sources(app), f)).rows]


# --- the calls page -----------------------------------------------------------------------------


async def test_a_number_is_found_in_any_spelling_and_by_a_few_of_its_digits(
    start: Start,
) -> None:
    app, client = await start()
    await send(
        client,
        scenarios.inbound_answered(client="79161234567", call_id="1717171700.1"),
        scenarios.inbound_missed(client="79035550011", call_id="1717171800.2", start=1717171800),
    )
    await settle(app)
    for spelling in ("89161234567", "+7 (916) 123-45-67", "9161234567", "7 916 123 45 67"):
        assert await listed(app, phone=spelling) == ["1717171700.1"], spelling
    assert await listed(app, phone="555-00") == ["1717171800.2"]
    assert await listed(app, phone="+7 999 000-00-00") == []
    assert await listed(app) == ["1717171800.2", "1717171700.1"]  # newest first


async def test_the_filters_by_extension_outcome_integration_status_period_and_account(
    start: Start,
) -> None:
    clock = FakeClock(scenarios.START + 7200 + 600)
    app, client = await start(RECORDER + SABOTEUR, clock=clock)
    await send(client, scenarios.inbound_missed(ring=["103"], call_id="1717171700.1"))
    await send(
        client,
        scenarios.outbound_answered(
            employee="104", call_id="1717178900.2", start=scenarios.START + 7200
        ),
    )
    await settle(app)

    assert await listed(app, extension="103") == ["1717171700.1"]
    assert await listed(app, extension="104") == ["1717178900.2"]  # who dialled
    assert await listed(app, outcome="missed") == ["1717171700.1"]
    assert await listed(app, outcome="answered") == ["1717178900.2"]
    assert await listed(app, period="1h") == ["1717178900.2"]  # by when the call started
    assert await listed(app, period="24h") == ["1717178900.2", "1717171700.1"]
    # The saboteur's hooks fail and are retried; the recorder's are done: a status is an
    # integration's, any one's unless the filter names it.
    assert await listed(app, status="retrying") == ["1717178900.2", "1717171700.1"]
    assert await listed(app, status="done") == ["1717178900.2", "1717171700.1"]
    assert await listed(app, status="done", integration="012345/broken") == []
    assert await listed(app, status="retrying", integration="012345/rec") == []
    assert await listed(app, integration="012345/rec", outcome="missed") == ["1717171700.1"]
    assert await listed(app, account="012345", status="dead") == []


async def test_each_row_shows_every_integration_its_status_and_the_crm_link(
    start: Start,
) -> None:
    app, client = await start(
        RECORDER
        + '[accounts.012345.integrations.crm]\nplugin = "linker"\n'
        + '[accounts.012345.integrations.amo]\nplugin = "amocrm_stub"\nsubdomain = "acme"\n'
        + SABOTEUR,
        extra='phone_format = "8XXXXXXXXXX"\n',
    )
    await send(client, scenarios.inbound_answered(client="79161234567", call_id="1717171700.1"))
    await settle(app)
    [row] = (await views.calls_view(pages.sources(app), parse_filter({}, {"012345": "RU"}))).rows

    assert row.number == "89161234567"  # [console] phone_format
    assert (row.summary.direction, row.summary.outcome) == ("inbound", Outcome.ANSWERED)
    assert row.summary.extensions == ["101", "102"] and row.answered_by == ["101"]
    assert row.summary.duration_seconds == 195
    hooks = {h.name: (h.status, h.link) for h in row.hooks}
    assert hooks == {
        "rec": (DeliveryStatus.DONE, None),
        # Reported by the plugin with its decisions (amocrm_stub: the contact's page) ...
        "amo": (DeliveryStatus.DONE, "https://acme.amocrm.ru/contacts/list/?term=79161234567"),
        # ... or, for a plugin that reports none, named by its runtime's call_link.
        "crm": (DeliveryStatus.DONE, "https://crm.example/tickets/82"),
        "broken": (DeliveryStatus.RETRYING, None),
    }
    assert row.status is DeliveryStatus.RETRYING  # the worst of them


async def test_pages_of_fifty_newest_first_and_none_lost_where_calls_started_together(
    start: Start,
) -> None:
    app, client = await start()
    # Sipuni's times are whole seconds: a page may end amid calls that started together.
    calls = [
        scenarios.internal(call_id=f"1717{i:06d}.1", start=1717171700 + i // 6)
        for i in range(PAGE_SIZE + 3)
    ]
    await send(client, *calls)
    await settle(app)
    regions = {"012345": "RU"}
    first = await views.calls_view(pages.sources(app), parse_filter({}, regions))
    assert len(first.rows) == PAGE_SIZE and first.next_page is not None
    assert first.rows[-1].summary.started_at == first.rows[-2].summary.started_at
    rest = await views.calls_view(
        pages.sources(app), parse_filter(first.filter.query(after=first.next_page), regions)
    )
    assert rest.next_page is None
    shown = [r.call_id for r in first.rows + rest.rows]
    assert shown == [c.call_id for c in reversed(calls)]


def test_what_cannot_be_read_in_the_filter_is_said_and_filters_nothing() -> None:
    f = parse_filter(
        {
            "phone": "12",
            "extension": "1a",
            "outcome": "lost",
            "status": "x",
            "integration": "012345/nope",
            "period": "2y",
            "account": "999999",
            "before": "yesterday",
            "before_call": "1.1",
        },
        {"012345": "RU"},
        ["012345/rec"],
    )
    assert f.problems == (
        "filter.bad_account",
        "filter.bad_phone",
        "filter.bad_extension",
        "filter.bad_outcome",
        "filter.bad_status",
        "filter.bad_integration",
        "filter.bad_period",
    )
    assert (f.account, f.whole_number, f.phone_digits, f.extension) == (None, False, None, None)
    assert (f.outcome, f.status, f.integration, f.period, f.after) == (
        None,
        None,
        None,
        Period.ALL,
        None,
    )
    assert store_query(f, {"012345": "RU"}, now=0.0, limit=51) == CallQuery(limit=51)


async def test_a_rows_status_is_the_one_the_store_lists_its_call_with(tmp_path: Path) -> None:
    """The page names a hook call's status in Python (``row_status``), the store a call's
    in SQL: with one row per call, the two must agree."""
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    expected = ["done", "pending", "retrying", "dead", "dropped"]
    record = LifecycleEvent(kind=LifecycleKind.STARTED, id="started")
    for call_id in expected:
        event = parse_event(scenarios.internal(call_id=call_id).events[0])
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(None, event, account="012345", region="RU", received_at=1.0)
        await store.commit_event(None, state, [NewDispatch("012345/rec", record)])
    rows = {r.call_id: r for r in await store.pending_dispatches(10)}
    await store.complete_dispatch(rows["done"].id)
    await store.fail_dispatch(rows["retrying"].id, "refused", 9e9)
    for call_id in ("dead", "dropped"):
        await store.fail_dispatch(rows[call_id].id, "refused", None)
    await store.drop_dispatch(rows["dropped"].id)
    for call_id in expected:
        [row] = await store.dispatches_for("012345", call_id)
        [call] = await store.find_calls(CallQuery(call_id=call_id))
        assert row_status(row.status, row.attempts) == call.statuses["012345/rec"] == call_id
        # And the calls page's filter finds it by that status, and only it.
        found = await store.find_calls(CallQuery(status=DeliveryStatus(call_id)))
        assert [c.state.call_id for c in found] == [call_id]
    await store.close()


# --- one call -----------------------------------------------------------------------------------


async def test_one_call_shows_its_events_as_they_came_the_state_and_each_integration(
    start: Start,
) -> None:
    app, client = await start(RECORDER + SALES_ONLY)
    call = scenarios.inbound_missed(client="79161234567", call_id="1717171700.1")
    # Out of order, as Sipuni sometimes delivers: the hang-up first.
    for params in [call.events[-1], *call.events[:-1]]:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    await settle(app)
    view = await views.call_view(pages.sources(app), "012345", "1717171700.1")
    assert view is not None

    assert [e.raw.event for e in view.events] == [2, 1, 1]  # arrival order, not event order
    assert [e.raw.event_name for e in view.events] == ["hangup", "ring", "ring"]
    sent = [e.sent_at.timestamp() for e in view.events if e.sent_at is not None]
    assert sent == [int(p["timestamp"]) for p in [call.events[-1], *call.events[:-1]]]
    assert all(e.raw.status == "done" for e in view.events)
    assert view.state.outcome is Outcome.MISSED and view.owner is None
    traces = {t.name: t for t in view.integrations}
    rec = traces["rec"]
    assert [(g.record, g.status) for g in rec.hooks] == [
        ("started", DeliveryStatus.DONE),
        ("finished", DeliveryStatus.DONE),
    ]
    assert [[a.attempt for a in g.attempts] for g in rec.hooks] == [[1], [1]]
    assert [(r.sees, r.reason) for r in rec.routing] == [(True, 'schemes = "all": every call')]
    sales = traces["sales"]
    assert sales.hooks == [] and sales.status is None
    [hidden] = sales.routing
    assert not hidden.sees and hidden.reason.startswith("none of schemes (Продажи)")


async def test_the_routing_shown_is_the_one_recorded_not_what_the_config_says_now(
    start: Start,
) -> None:
    # The operator widens the integration to every call and adds another: the call was not
    # routed to either, and the page says so rather than what the config would decide today.
    widened = SALES_ONLY.replace('["Продажи"]', '"all"') + RECORDER
    app, client = await call_then_restart(start, SALES_ONLY, widened)
    view = await views.call_view(pages.sources(app), "012345", "1717171700.1")
    assert view is not None
    traces = {t.name: t for t in view.integrations}
    [step] = traces["sales"].routing
    assert not step.sees and "none of schemes (Продажи)" in step.reason
    assert traces["rec"].routing == [] and traces["rec"].configured
    await sign_in(client)
    page = await (await client.get("/console/calls/012345/1717171700.1")).text()
    assert "Решение о маршрутизации не записано" in page


async def test_one_call_shows_each_attempt_its_crm_requests_and_the_decisions_with_reasons(
    start: Start,
) -> None:
    amo = (
        '[accounts.012345.integrations.amo]\nplugin = "amocrm_stub"\nsubdomain = "acme"\n'
        'users = { "101" = 7 }\n'
    )
    app, client = await start(amo + SABOTEUR)
    await send(client, scenarios.inbound_answered(client="79161234567", call_id="1717171700.1"))
    await settle(app)
    view = await views.call_view(pages.sources(app), "012345", "1717171700.1")
    assert view is not None
    traces = {t.name: t for t in view.integrations}

    amo_hooks = {g.record: g for g in traces["amo"].hooks}
    [started] = amo_hooks["started"].attempts
    assert [(r.method, r.path, r.outcome) for r in started.requests] == [
        ("contact_find_or_create", "POST /api/v4/contacts", "ok"),
        ("lead_create", "POST /api/v4/leads", "ok"),
    ]
    [finished] = amo_hooks["finished"].attempts
    note, responsible = finished.decisions
    assert note.text == "inbound call 1717171700.1: answered, 195 s (talk 186 s)"
    assert responsible.what == "responsible user 7"
    assert responsible.why.startswith("extension 101 answered")
    assert traces["amo"].link == "https://acme.amocrm.ru/contacts/list/?term=79161234567"
    # The saboteur's first attempt failed: its error, and when it is tried again.
    [broken] = [g for g in traces["broken"].hooks if g.record == "started"]
    [failed] = broken.attempts
    assert failed.outcome == "retry" and failed.retry_at is not None
    assert failed.error == "RuntimeError: saboteur plugin fails on purpose"
    assert broken.status is DeliveryStatus.RETRYING and broken.row is not None

    # The page shows all of it.
    await sign_in(client)
    page = await (await client.get("/console/calls/012345/1717171700.1")).text()
    for shown in (
        "POST /api/v4/contacts",
        "responsible user 7",
        "extension 101 answered",
        "inbound call 1717171700.1: answered, 195 s (talk 186 s)",
        "saboteur plugin fails on purpose",
        "не удалось, будет повтор",
        "schemes = &#34;all&#34;: every call",
    ):
        assert shown in page, shown


async def test_no_such_call_is_none(start: Start) -> None:
    app, _ = await start()
    assert await views.call_view(pages.sources(app), "012345", "404.0") is None


# --- integrations and setup ---------------------------------------------------------------------


async def test_integrations_show_queues_the_last_error_and_the_work_set_aside(
    start: Start,
) -> None:
    app, client = await start(RECORDER + SABOTEUR)
    await send(client, scenarios.inbound_answered(call_id="1717171700.1"))
    await client.get(f"/sipuni/{TOKEN}", params={"event": "1"})  # no call_id: rejected
    await settle(app)
    view = await views.integrations_view(pages.sources(app))

    health = {h.integration: h for h in view.integrations}
    broken = health["012345/broken"]
    assert (broken.depth.retrying, broken.depth.dead) == (1, 0)
    assert broken.depth.last_error == "RuntimeError: saboteur plugin fails on purpose"
    assert broken.circuit is not None and not broken.circuit.open and broken.running == 0
    assert health["012345/rec"].depth.last_error is None
    assert view.dead_letters == [] and view.quarantined == []
    [rejected] = view.rejected
    assert "call_id" in rejected.reason


async def test_setup_gives_the_webhook_url_the_schemes_and_the_unmapped_extensions(
    start: Start,
) -> None:
    mapped = (
        '[accounts.012345.integrations.crm]\nplugin = "linker"\n'
        'users = [{ extension = "101" }, { extension = "105" }]\n'
    )
    app, client = await start(
        mapped, extra='[server]\npublic_url = "https://connector.example.com/"\n'
    )
    await send(
        client,
        scenarios.inbound_answered(ring=["101", "102"], call_id="1717171700.1"),
        scenarios.scheme_transfer(call_id="1717171800.2", start=1717171800),
    )
    await settle(app)
    view = await views.setup_view(pages.sources(app))
    [account] = view.accounts

    assert account.webhook_url == f"https://connector.example.com/sipuni/{TOKEN}"
    assert {(s.id, s.name) for s in account.schemes} >= {("000-913898", "Входящая")}
    assert account.schemes_line.startswith('schemes = ["') and "000-913898" in account.schemes_line
    rows = {e.extension: e for e in account.extensions}
    assert rows["101"].mapped_in == ["crm"] and not rows["101"].unmapped
    assert rows["102"].unmapped and rows["102"].calls >= 1
    assert rows["105"].calls == 0 and not rows["105"].unmapped  # mapped, never rung yet
    assert TOKEN not in view.config_text and "**" in view.config_text
    assert "scrypt" not in view.config_text


@pytest.mark.parametrize(
    ("host", "base"),
    [("::1", "http://[::1]:9000"), ("0.0.0.0", "http://<this machine's address>:9000")],
)
async def test_without_a_public_url_setup_shows_the_bound_address(
    start: Start, host: str, base: str
) -> None:
    # Listening on every interface says nothing of the address Sipuni reaches: a placeholder,
    # as connector init and the start-up log show it, never a URL that cannot work.
    app, _ = await start("", extra=f'[server]\nhost = "{host}"\nport = 9000\n')
    [account] = (await views.setup_view(pages.sources(app))).accounts
    assert account.webhook_url == f"{base}/sipuni/{TOKEN}"


# --- actions ------------------------------------------------------------------------------------


async def test_a_dead_letter_retried_runs_again_and_a_dropped_one_stays_dropped(
    start: Start,
) -> None:
    app, client = await start()
    await send(client, scenarios.inbound_answered(call_id="1717171700.1"))
    await app[WORKER].drain()
    store = app[STORE]
    first, second = (await store.pending_dispatches(10))[:2]
    await store.fail_dispatch(first.id, "refused", None)
    await store.fail_dispatch(second.id, "refused", None)

    done = await actions.retry_dead_letter(store, app[DISPATCHER], first.id)
    assert done == actions.Done("flash.retried", True)
    assert app[DISPATCHER].wakeup.is_set()  # the running dispatcher takes it up now
    assert await actions.drop_dead_letter(store, second.id) == actions.Done("flash.dropped", True)
    assert await actions.retry_dead_letter(store, app[DISPATCHER], second.id) == actions.Done(
        "flash.not_dead", False
    )
    await settle(app)
    statuses = {d.key: d.status for d in await store.dispatches_for("012345", "1717171700.1")}
    assert statuses[first.key] == "done" and statuses[second.key] == "dropped"


async def test_replay_gives_an_integration_added_since_the_hook_calls_it_is_owed(
    start: Start,
) -> None:
    # The operator adds an integration and restarts: old calls are not routed to it by
    # themselves; a replay of the call is.
    app, _ = await call_then_restart(start, RECORDER, RECORDER + RECORDER.replace("rec]", "late]"))
    rows = await app[STORE].dispatches_for("012345", "1717171700.1")
    assert {r.integration for r in rows} == {"012345/rec"}

    done = await actions.replay_call(
        app[STORE], app[WORKER], app[DISPATCHER], "012345", "1717171700.1"
    )
    assert done == actions.Done("flash.replayed", True)
    await settle(app)
    rows = await app[STORE].dispatches_for("012345", "1717171700.1")
    late = [r for r in rows if r.integration == "012345/late"]
    assert [r.key for r in late] == ["started", "answered", "finished"]
    assert all(r.status == "done" for r in rows)
    assert await actions.replay_call(
        app[STORE], app[WORKER], app[DISPATCHER], "012345", "404.0"
    ) == actions.Done("flash.no_events", False)


# --- the pages read through indexes -------------------------------------------------------------

# What a page may scan: json_each over one row's JSON, the calls in start order through
# calls_started (newest first, stopping at the page's end), and partial indexes of the rows
# set aside or waiting (few by design).
BOUNDED_SCANS = re.compile(
    r"SCAN (CONSTANT ROW|\w+ VIRTUAL TABLE|calls USING (COVERING )?INDEX calls_started"
    r"|\w+ USING INDEX (inbox_quarantined|dispatches_pending))"  # partial: few rows
)


async def traced(app: web.Application, run: Callable[[], Awaitable[object]]) -> list[str]:
    """Each statement ``run`` had the store execute, with its query plan (read on the SQLite
    store's own thread: its one connection)."""
    store, statements = app[STORE], []
    await store._run(lambda db: db.set_trace_callback(statements.append))
    try:
        await run()
    finally:
        await store._run(lambda db: db.set_trace_callback(None))

    def explain(db: sqlite3.Connection) -> list[str]:
        return [
            sql + "\n  " + " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements
        ]

    return await store._run(explain)


async def test_the_pages_find_calls_and_their_records_through_indexes_not_whole_tables(
    start: Start,
) -> None:
    app, client = await start(RECORDER + SABOTEUR)
    await send(client, scenarios.inbound_answered(call_id="1717171700.1"))
    await settle(app)
    sources = pages.sources(app)
    queries: list[dict[str, str]] = [
        {},
        {"phone": "89161234567"},
        {"phone": "4567"},
        {"extension": "101"},
        {"outcome": "missed", "period": "24h"},
        {"before": "1717171700.0", "before_call": "1717171700.1"},
        {"integration": "012345/rec"},
        *({"status": status.value} for status in DeliveryStatus),
        *({"status": status.value, "integration": "012345/rec"} for status in DeliveryStatus),
    ]
    plans = {}
    for query in queries:
        f = parse_filter(query, sources.regions(), sources.integrations)
        assert f.problems == (), query
        plans[str(query)] = await traced(app, lambda f=f: views.calls_view(sources, f))
    plans["call"] = await traced(app, lambda: views.call_view(sources, "012345", "1717171700.1"))
    # The integrations page also counts whole tables (store.stats) and lists the newest
    # rejected webhooks (by rowid, up to its LIMIT): not what is checked here.
    elsewhere = await traced(app, lambda: asyncio.gather(app[STORE].stats(), app[STORE].rejected()))
    plans["integrations"] = [
        s for s in await traced(app, lambda: views.integrations_view(sources)) if s not in elsewhere
    ]

    whole = [
        (page, statement)
        for page, statements in plans.items()
        for statement in statements
        for step in statement.split("\n  ")[1].split(" | ")
        if step.startswith("SCAN") and not BOUNDED_SCANS.match(step)
    ]
    assert whole == [], "\n".join(map(str, whole))
    [by_number, *_] = plans[str({"phone": "89161234567"})]
    assert "USING INDEX calls_client_number" in by_number, by_number
