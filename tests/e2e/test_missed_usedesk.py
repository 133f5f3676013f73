"""Issue 16's acceptance: the missed-call lifecycle through the service into Usedesk.

Sipuni webhooks over HTTP into the running service with a Usedesk integration, the worker,
the missed-call loop and the dispatcher, and the Usedesk sandbox's state and request log
read at the end. The service's clock is a fake one, moved by the test along the calls' own
(Sipuni) times: the settle time, the SLA and the callback window pass without waiting.
Each test runs on SQLite and on PostgreSQL (tests/e2e/conftest.py).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from connector_core.clock import FakeClock
from connector_core.config import STORAGE_URL_ENV
from connector_core.simulator import scenarios
from connector_core.simulator.scenarios import Scenario
from tests.e2e.usedesk_world import World, world
from tests.harness import TOKEN, settle_missed
from tests.store_backends import StoreBackend
from tests.usedesk.missed_world import CLIENT, comments_with

pytestmark = pytest.mark.e2e
START = scenarios.START
MISSED = """
[missed_calls]
callback_window_hours = 24
sla_minutes = 15
settle_seconds = 5
"""
CALLBACK = "callback_owner = true\ncallback_status = 2\n"
NEW_TICKET_PER_CALL = "always_new_ticket = true\n"
ON_DUTY, NEW, SOLVED = 4, 8, 2  # usedesk_world's on-duty agent; Usedesk's status ids
ANNA = 1  # extension 103 in usedesk_world's users: anna@example.com, Анна Админова


@asynccontextmanager
async def service(tmp_path: Path, settings: str = "") -> AsyncIterator[tuple[World, FakeClock]]:
    """The service with the Usedesk integration (``settings``) and ``[missed_calls]`` as
    above, its clock at the scenarios' start."""
    clock = FakeClock(START)
    async with world(tmp_path, settings, extra=MISSED, clock=clock) as w:
        yield w, clock


def three_calls() -> list[Scenario]:
    """Two misses 5 minutes apart (101 and 102 rang), then 103, whom nobody rang, calls back
    10 minutes after the first: within the SLA, so nothing is overdue."""
    return scenarios.missed_then_called_back(client=CLIENT, callback_after=600)


async def in_time_order(w: World, clock: FakeClock, calls: list[Scenario]) -> None:
    """Each call's webhooks, then the missed-call loop when the next call begins (the last
    one 30 minutes on), as the service's own loops would run them."""
    for call, following in zip(calls, [*calls[1:], None], strict=True):
        await w.call(call)
        until = following.events[0] if following else None
        later = int(until["timestamp"]) if until else int(clock.now()) + 1800
        await settle_missed(w.app, clock, later - clock.now())


def number_tickets(w: World) -> list[dict[str, Any]]:
    tickets = w.tickets_of_number(CLIENT)
    assert len(w.clients_with(CLIENT)) == 1
    return tickets


@pytest.mark.parametrize("per_call", ["", NEW_TICKET_PER_CALL], ids=["search", "new_per_call"])
async def test_two_misses_and_a_callback_by_another_employee_make_one_ticket(
    tmp_path: Path, per_call: str
) -> None:
    """Acceptance 1 and 2: one ticket, two «пропущен», one «Перезвонили» naming 103, owned
    by 103's agent and solved (``callback_owner``, ``callback_status = 2``); with "a new
    ticket per call" as well."""
    async with service(tmp_path, CALLBACK + per_call) as (w, clock):
        m1, m2, back = three_calls()
        await in_time_order(w, clock, [m1, m2, back])
        [ticket] = number_tickets(w)
    assert len(comments_with(ticket, "пропущен")) == 2
    assert len(comments_with(ticket, "Повторный звонок без ответа (2-й)")) == 1
    [note] = comments_with(ticket, "Перезвонили")
    assert "Анна Админова (103)" in note
    assert "через 10 мин после первого звонка" in note and "звонков без ответа: 2" in note
    assert ticket["assignee_id"] == ANNA
    assert ticket["status_id"] == SOLVED
    assert ticket["priority"] != "urgent" and "не перезвонили" not in ticket["tags"]


def overdue_updates(w: World) -> list[dict[str, Any]]:
    """The /update/ticket requests that raised the priority (the overdue step's)."""
    return [r.params for r in w.sandbox.requests("/update/ticket") if "priority" in r.params]


async def test_a_miss_past_the_sla_gets_tag_and_priority_once(tmp_path: Path) -> None:
    """Acceptance 3: the tag and the priority change in one update, once, however many more
    rounds the loop runs and however far the clock moves."""
    async with service(tmp_path) as (w, clock):
        await w.call(scenarios.inbound_missed(client=CLIENT, start=START, seq=52801))
        await settle_missed(w.app, clock, 14 * 60)  # within the SLA
        [ticket] = number_tickets(w)
        assert ticket["priority"] != "urgent" and overdue_updates(w) == []
        await settle_missed(w.app, clock, 2 * 60)  # past it
        [ticket] = number_tickets(w)
        assert ticket["priority"] == "urgent"
        assert ticket["tags"].count("не перезвонили") == 1
        assert len(overdue_updates(w)) == 1
        for seconds in (5, 600, 3600, 20 * 3600):
            await settle_missed(w.app, clock, seconds)
        assert len(overdue_updates(w)) == 1
        assert number_tickets(w) == [ticket]


async def test_a_callback_after_the_window_links_nothing(tmp_path: Path) -> None:
    """Acceptance 4: 103 calls back a day and a minute after the miss: no «Перезвонили»,
    and the missed call's ticket is just as it was (owner, status, comments)."""
    async with service(tmp_path, CALLBACK + NEW_TICKET_PER_CALL) as (w, clock):
        await w.call(scenarios.inbound_missed(client=CLIENT, start=START, seq=52901))
        for seconds in (60, 15 * 60, 24 * 3600):
            await settle_missed(w.app, clock, seconds)
        [missed] = number_tickets(w)
        assert missed["assignee_id"] == ON_DUTY and missed["priority"] == "urgent"
        late = scenarios.outbound_answered(
            "103", client=CLIENT, start=int(clock.now()), seq=52902, talk=60
        )
        await w.call(late)
        await settle_missed(w.app, clock, 600)
        tickets = number_tickets(w)
    assert tickets[0] == missed
    assert [t["assignee_id"] for t in tickets] == [ON_DUTY, ANNA]  # the callback's own ticket
    assert not any(comments_with(t, "Перезвонили") for t in tickets)


def end_state(w: World) -> list[dict[str, Any]]:
    """The number's tickets as the lifecycle leaves them: owner, status, priority, the
    overdue tag, and every comment's text. Left out: the ids and times the sandbox gives out
    as requests come, and what belongs to whichever call's end was processed first, since a
    ticket is made then, before later calls are known (its subject and tags, and which call's
    comment is its first message, signed by its owner)."""
    return sorted(
        (
            {
                "status_id": t["status_id"],
                "assignee_id": t["assignee_id"],
                "priority": t["priority"],
                "overdue": "не перезвонили" in t["tags"],
                "comments": sorted((c["type"], c["message"]) for c in t["comments"]),
            }
            for t in number_tickets(w)
        ),
        key=repr,
    )


def interleaved(calls: list[Scenario], rng: random.Random) -> list[dict[str, str]]:
    """All the calls' webhooks in one random order, a third of them sent twice."""
    events = [dict(e) for call in calls for e in call.events]
    events += [dict(e) for e in rng.sample(events, len(events) // 3)]
    rng.shuffle(events)
    return events


def another_store(backend: StoreBackend, request: pytest.FixtureRequest, where: Path) -> None:
    """The services configured from now on use a store of their own: a new SQLite file in
    ``where``, a new PostgreSQL database (the test's ``CONNECTOR_STORAGE_URL`` overrides)."""
    where.mkdir()
    if backend.name == "postgresql":
        request.getfixturevalue("monkeypatch").setenv(
            STORAGE_URL_ENV, request.getfixturevalue("pg_url")
        )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_shuffled_and_repeated_webhooks_end_as_in_order(
    tmp_path: Path, seed: int, on_store_backend: StoreBackend, request: pytest.FixtureRequest
) -> None:
    """Acceptance 5 (the property test's claim, end to end): the three calls' webhooks
    interleaved at random, some twice, give Usedesk the state the calls in time order do:
    one ticket with the same comments, owner and status. Seed 2 ends the callback first,
    seed 3 and 4 the second miss before the first."""
    calls = three_calls()
    async with service(tmp_path, CALLBACK) as (w, clock):
        await in_time_order(w, clock, calls)
        expected = end_state(w)
    [reference] = expected  # the lifecycle's outcome, which the shuffled calls must reach
    assert reference["status_id"] == SOLVED
    assert sum("Перезвонили" in message for _, message in reference["comments"]) == 1
    another_store(on_store_backend, request, tmp_path / "shuffled")
    async with service(tmp_path / "shuffled", CALLBACK) as (w, clock):
        for params in interleaved(calls, random.Random(seed)):
            response = await w.client.post(f"/sipuni/{TOKEN}", data=params)
            assert await response.json() == {"success": True}
        await settle_missed(w.app, clock, 1800)
        assert end_state(w) == expected
