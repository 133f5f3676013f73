"""The console's pages as data: each page's view function over a real store, filled by real
webhooks through the real service (no HTTP session needed), and the actions behind the buttons.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from connector_core.appkeys import (
    DISPATCHER,
    STORE,
    WORKER,
)
from connector_core.callstate import Outcome
from connector_core.clock import FakeClock
from connector_core.console import actions, pages, reads, views
from connector_core.console.filters import (
    PAGE_SIZE,
    SEVERITY_SQL,
    HookStatus,
    Period,
    parse_filter,
)
from connector_core.simulator import scenarios
from connector_core.store.sqlite import SQLiteStore
from tests.console_kit import Services
from tests.harness import TOKEN, make_config, settle
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


async def listed(app: web.Application, **query: str) -> list[str]:
    f = parse_filter(query, pages.sources(app).regions())
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


async def test_the_filters_by_extension_outcome_status_period_and_account(start: Start) -> None:
    clock = FakeClock(1_900_000_000)
    app, client = await start(RECORDER + SABOTEUR, clock=clock)
    await send(client, scenarios.inbound_missed(ring=["103"], call_id="1717171700.1"))
    clock.advance(7200)
    await send(
        client,
        scenarios.outbound_answered(employee="104", call_id="1717171800.2", start=1717171800),
    )
    await settle(app)

    assert await listed(app, extension="103") == ["1717171700.1"]
    assert await listed(app, extension="104") == ["1717171800.2"]  # who dialled
    assert await listed(app, outcome="missed") == ["1717171700.1"]
    assert await listed(app, outcome="answered") == ["1717171800.2"]
    assert await listed(app, period="1h") == ["1717171800.2"]  # by when the service got it
    assert await listed(app, period="24h") == ["1717171800.2", "1717171700.1"]
    # The saboteur's hooks fail and are retried: each call is "retrying", none done.
    assert await listed(app, status="retrying") == ["1717171800.2", "1717171700.1"]
    assert await listed(app, status="done") == []
    assert await listed(app, account="012345", status="dead") == []


async def test_each_row_shows_every_integration_its_status_and_the_crm_link(
    start: Start,
) -> None:
    app, client = await start(
        RECORDER + '[accounts.012345.integrations.crm]\nplugin = "linker"\n' + SABOTEUR,
        extra='phone_format = "8XXXXXXXXXX"\n',
    )
    await send(client, scenarios.inbound_answered(client="79161234567", call_id="1717171700.1"))
    await settle(app)
    [row] = (await views.calls_view(pages.sources(app), parse_filter({}, {"012345": "RU"}))).rows

    assert row.number == "89161234567"  # [console] phone_format
    assert (row.direction, row.outcome) == ("inbound", Outcome.ANSWERED)
    assert row.extensions == ["101", "102"] and row.answered_by == ["101"]
    assert row.duration_seconds == 195
    hooks = {h.name: (h.status, h.link) for h in row.hooks}
    assert hooks == {
        "broken": (HookStatus.RETRYING, None),
        "crm": (HookStatus.DONE, "https://crm.example/tickets/82"),
        "rec": (HookStatus.DONE, None),
    }
    assert row.status is HookStatus.RETRYING  # the worst of them


async def test_pages_of_fifty_newest_first_and_the_next_page_starts_where_one_ended(
    start: Start,
) -> None:
    app, client = await start()
    calls = [
        scenarios.internal(call_id=f"1717{i:06d}.1", start=1717171700 + i)
        for i in range(PAGE_SIZE + 3)
    ]
    await send(client, *calls)
    await settle(app)
    first = await views.calls_view(pages.sources(app), parse_filter({}, {"012345": "RU"}))
    assert len(first.rows) == PAGE_SIZE and first.next_before is not None
    rest = await views.calls_view(
        pages.sources(app), parse_filter({"before": str(first.next_before)}, {"012345": "RU"})
    )
    assert rest.next_before is None
    shown = [r.call_id for r in first.rows + rest.rows]
    assert shown == [c.call_id for c in reversed(calls)]


def test_what_cannot_be_read_in_the_filter_is_said_and_filters_nothing() -> None:
    f = parse_filter(
        {
            "phone": "12",
            "extension": "1a",
            "outcome": "lost",
            "status": "x",
            "period": "2y",
            "account": "999999",
        },
        {"012345": "RU"},
    )
    assert f.problems == (
        "filter.bad_account",
        "filter.bad_phone",
        "filter.bad_extension",
        "filter.bad_outcome",
        "filter.bad_status",
        "filter.bad_period",
    )
    assert (f.account, f.phones, f.phone_digits, f.extension) == (None, (), None, None)
    assert (f.outcome, f.status, f.period) == (None, None, Period.ALL)


def test_a_rows_status_in_sql_is_the_same_as_in_python() -> None:
    db = sqlite3.connect(":memory:")
    for status in ("pending", "done", "dead", "dropped"):
        for attempts in (0, 1, 5):
            [(severity,)] = db.execute(
                f"SELECT {SEVERITY_SQL} FROM (SELECT ? AS status, ? AS attempts)",
                (status, attempts),
            ).fetchall()
            assert HookStatus.by_severity(severity) is HookStatus.of_row(status, attempts)


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

    assert [e.event for e in view.events] == [2, 1, 1]  # arrival order, not event order
    assert [e.kind for e in view.events] == ["event.hangup", "event.ring", "event.ring"]
    sent = [e.sent_at.timestamp() for e in view.events if e.sent_at is not None]
    assert sent == [int(p["timestamp"]) for p in [call.events[-1], *call.events[:-1]]]
    assert all(e.status == "done" for e in view.events)
    assert view.state.outcome is Outcome.MISSED and view.owner is None
    traces = {t.name: t for t in view.integrations}
    assert [h.key for h in traces["rec"].hook_calls] == ["started", "finished"]
    assert traces["rec"].routing is not None and traces["rec"].routing.reason == "routing.all"
    sales = traces["sales"]
    assert sales.hook_calls == [] and sales.status is None
    assert sales.routing is not None and not sales.routing.selected
    assert (sales.routing.reason, sales.routing.schemes) == ("routing.not_selected", ["Продажи"])


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


def test_the_webhook_base_is_the_bound_address_without_a_public_url() -> None:
    config, _ = make_config(Path("/tmp"), "", extra='[server]\nhost = "::1"\nport = 9000\n')
    assert views.webhook_base(config) == "http://[::1]:9000"


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
    app, client = await start(RECORDER, folder="same")
    await send(client, scenarios.inbound_answered(call_id="1717171700.1"))
    await settle(app)
    await client.close()
    # The operator adds an integration and restarts: old calls are not routed to it by
    # themselves; a replay of the call is.
    app, _ = await start(RECORDER + RECORDER.replace("rec]", "late]"), folder="same")
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


class Recording:
    """A connection that keeps every statement run through it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.statements = db, []

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        self.statements.append((sql, args))
        return self.db.execute(sql, args)


def plans(db: sqlite3.Connection, recorded: Recording) -> list[str]:
    return [
        " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        for sql, args in recorded.statements
    ]


async def test_the_pages_find_calls_and_their_rows_through_indexes_not_whole_tables(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "c.db")
    regions = {"012345": "RU"}

    def plan_of(query: dict[str, str]) -> str:
        recorded = Recording(db)
        reads.recent_calls(recorded, parse_filter(query, regions), received_since=None, limit=51)  # type: ignore[arg-type]
        [plan] = plans(db, recorded)
        return plan

    assert "USING INDEX calls_client" in plan_of({"phone": "89161234567"})
    for status in ("dead", "retrying", "pending", "dropped", "done"):
        plan = plan_of({"status": status})
        assert "SCAN dispatches" not in plan, (status, plan)
    recorded = Recording(db)
    reads.hook_summaries(recorded, [("012345", "1.1"), ("012345", "1.2")])  # type: ignore[arg-type]
    reads.queue_depths(recorded)  # type: ignore[arg-type]
    for plan in plans(db, recorded):
        assert "SCAN dispatches" not in plan, plan
    # One call's webhooks and hook calls (SQLiteStore.call_events, dispatches_for).
    for sql in (
        "SELECT id FROM inbox WHERE account = ? AND call_id = ?",
        "SELECT id FROM dispatches WHERE account = ? AND call_id = ? ORDER BY id",
    ):
        steps = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", ("012345", "1.1"))]
        assert steps[0].startswith("SEARCH") and " INDEX " in steps[0], steps
        assert not any(step.startswith("SCAN") for step in steps), steps
