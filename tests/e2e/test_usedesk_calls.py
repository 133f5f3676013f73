"""Usedesk end to end: Sipuni calls over HTTP → the service → the Usedesk sandbox's state."""

from __future__ import annotations

import asyncio
import html
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connector_core.app import expiry_interval
from connector_core.appkeys import SUPERVISOR, WORKER
from connector_core.clock import FakeClock
from connector_core.simulator import scenarios
from tests.e2e.usedesk_world import call_comments, world
from tests.harness import TOKEN, settle

pytestmark = pytest.mark.e2e
NEW = "79160000001"


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for the service's own loops to make ``predicate`` true (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def test_inbound_answered_creates_client_ticket_owner_and_one_comment(tmp_path: Path):
    async with world(tmp_path) as w:
        call = scenarios.inbound_answered(ring=["101", "102"], answered_by="101", client=NEW)
        await w.call(call)
        [client] = w.clients_with(NEW)
        assert client["name"] == f"Клиент {NEW}"
        [ticket] = w.tickets_of(client["id"])
        assert ticket["subject"] == f"Входящий звонок {NEW}"
        assert ticket["status_id"] == 8  # still New: the plugin's update was silent
        assert (ticket["type"], ticket["tags"]) == ("question", ["sipuni", "inbound"])
        assert ticket["assignee_id"] == 2  # the agent of extension 101, who answered
        assert ticket["additional_id"] == call.call_id
        [comment] = call_comments(ticket)
        assert comment["type"] == "private" and comment["user_id"] == 2
        link = html.escape(call.expected["record_url"], quote=True)
        assert f'<a href="{link}">Запись звонка</a>' in comment["message"]
        for text in (
            "Входящий звонок</b>: Отвечен",
            f"Клиент: {NEW}",
            "Сотрудник: Борис Операторов",  # agent 2's name in Usedesk, mapped to 101
            "Схема: Входящая",
            "Конец звонка: Сообщён",
            "Длительность: 3:15, разговор: 3:06",
            call.call_id,
        ):
            assert text in comment["message"], text


@pytest.mark.parametrize(("first_on_line", "owner"), [(False, 4), (True, 3)])
async def test_missed_call_goes_to_on_duty_or_first_on_the_line(
    tmp_path: Path, first_on_line: bool, owner: int
):
    setting = f"first_on_line_responsible = {str(first_on_line).lower()}"
    async with world(tmp_path, setting) as w:
        # 102 rang first, 101 a second later; nobody answered.
        await w.call(scenarios.inbound_missed(ring=["102", "101"], client=NEW, ring_gap=1))
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        assert ticket["assignee_id"] == owner
        [comment] = call_comments(ticket)
        assert "Пропущен" in comment["message"]


async def test_outbound_ticket_goes_to_the_calling_employee(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(scenarios.outbound_answered(employee="102", client="8" + NEW[1:]))
        [client] = w.clients_with(NEW)  # written digits-only in the 7… format
        [ticket] = w.tickets_of(client["id"])
        assert ticket["subject"] == f"Исходящий звонок {NEW}"
        assert ticket["assignee_id"] == 3
        assert len(call_comments(ticket)) == 1


async def test_transferred_call_belongs_to_the_last_to_answer(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(scenarios.inbound_transferred(first="101", to="103", client=NEW))
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        assert ticket["assignee_id"] == 1  # 103 → anna@example.com, resolved through /users
        [comment] = call_comments(ticket)
        assert "Сотрудник: Анна Админова" in comment["message"]  # where the call ended
        assert comment["user_id"] == 1  # signed by the agent who ended up with it


async def test_a_call_moved_into_another_scheme_names_the_scheme_it_ended_in(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(scenarios.scheme_transfer(target=("000-300", "Поддержка"), client=NEW))
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        [comment] = call_comments(ticket)
        assert "Схема: Поддержка" in comment["message"]


async def test_a_custom_comment_gets_every_new_variable(tmp_path: Path):
    template = (
        'templates.comment = "{agent}|{agents}|{dialled_by}|{final_scheme}|{schemes}|'
        '{line}|{end}|{end_code}|{call_id}"'
    )
    async with world(tmp_path, template) as w:
        call = scenarios.scheme_transfer(target=("000-300", "Поддержка"), client=NEW)
        await w.call(call)
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        [comment] = call_comments(ticket)
        assert comment["message"] == (
            "Борис Операторов|Борис Операторов||Поддержка|Распределитель → Поддержка|"
            f"74951234567|Сообщён|reported|{call.call_id}"
        )


async def test_repeat_caller_reuses_client_and_ticket_with_two_requests(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(scenarios.inbound_answered(client=NEW, call_id="1717171700.1"))
        before = len(w.sandbox.requests())
        await w.call(
            scenarios.inbound_answered(
                client=NEW, call_id="1717179999.2", start=scenarios.START + 8000
            )
        )
        repeat = [r.path for r in w.sandbox.requests()][before:]
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        assert len(call_comments(ticket)) == 2
        # The number is remembered with the ticket its client was made with: one /ticket
        # shows it still open (and gives the client's id); the ticket is already assigned.
        assert repeat == ["/ticket", "/create/comment"]


async def test_existing_assigned_ticket_keeps_its_owner(tmp_path: Path):
    async with world(tmp_path) as w:
        # Client 1002 is stored with "8 (495) 123-45-67" in the sandbox's seed; give it an open
        # ticket.
        status, body = w.sandbox.call(
            "/create/ticket",
            {
                "api_token": w.sandbox.token,
                "subject": "Заказ",
                "message": "…",
                "client_id": 1002,
                "assignee_id": 3,
                "status": 1,
            },
        )
        assert status == 200
        await w.call(scenarios.inbound_answered(answered_by="101", client="+74951234567"))
        assert w.clients_with("74951234567") == []  # no new client
        tickets = w.tickets_of(1002)
        ours = next(t for t in tickets if t["id"] == body["ticket_id"])
        assert ours["assignee_id"] == 3
        [comment] = call_comments(ours)
        # Signed by the agent of 101, who spoke to the client, not by the ticket's owner nor
        # by Usedesk's default author (the company's first user).
        assert comment["user_id"] == 2
        assert len(tickets) == 2  # the closed seed ticket and ours: nothing created


async def test_internal_calls_create_nothing(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(scenarios.internal(from_ext="101", to_ext="102"))
        assert w.writes() == []


async def test_calls_outside_the_schemes_create_nothing(tmp_path: Path):
    async with world(tmp_path, 'schemes = ["000-200"]') as w:
        await w.call(scenarios.inbound_answered(client=NEW))
        assert w.writes() == []


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_replaying_everything_twice_and_shuffled_changes_nothing(tmp_path: Path, seed: int):
    calls = [
        scenarios.inbound_answered(client=NEW, call_id="1717171700.11"),
        scenarios.inbound_missed(
            client="79160000002", call_id="1717171800.12", start=scenarios.START + 100
        ),
        scenarios.outbound_answered(
            client="79160000003", call_id="1717171900.13", start=scenarios.START + 200
        ),
        scenarios.inbound_transferred(
            client="79160000004", call_id="1717172000.14", start=scenarios.START + 300
        ),
    ]
    async with world(tmp_path) as w:
        for call in calls:
            await w.call(call)
        first = w.state()
        rng = random.Random(seed)
        for call in calls:
            await w.call(scenarios.shuffled(call, rng), method="POST")
        assert w.state() == first


async def test_create_client_off_skips_unknown_numbers(tmp_path: Path):
    async with world(tmp_path, "create_client = false") as w:
        await w.call(scenarios.inbound_answered(client=NEW))
        assert w.writes() == []


async def test_outbound_unanswered_is_not_missed_and_belongs_to_the_caller(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(scenarios.outbound_unanswered(employee="101", client=NEW))
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        assert ticket["assignee_id"] == 2  # the agent of 101, who dialled (not on duty)
        [comment] = call_comments(ticket)
        assert "Исходящий звонок</b>: Не отвечен" in comment["message"]
        assert "Сотрудник: Борис Операторов" in comment["message"]  # who dialled
        assert comment["user_id"] == 2


@pytest.mark.parametrize("spelling", ["8", "7", "+7"])
async def test_every_spelling_of_a_number_finds_the_same_client(tmp_path: Path, spelling: str):
    async with world(tmp_path) as w:
        first = scenarios.inbound_answered(client=NEW, call_id="1717171700.31")
        await w.call(first)
        again = scenarios.with_number_spelling(
            scenarios.inbound_missed(
                client=NEW, call_id="1717179000.32", start=scenarios.START + 7300
            ),
            spelling,
        )
        assert again.events[0]["src_num"].startswith(spelling)
        await w.call(again)
        [client] = w.clients_with(NEW)  # no second client for the other spelling
        [ticket] = w.tickets_of(client["id"])
        assert len(call_comments(ticket)) == 2


async def test_a_call_whose_final_hang_up_is_lost_is_finished_by_the_timeout(tmp_path: Path):
    clock = FakeClock()
    async with world(tmp_path, clock=clock) as w:
        lost = scenarios.without_final_hangup(scenarios.inbound_answered(client=NEW))
        await w.call(lost)
        [client] = w.clients_with(NEW)
        [ticket] = w.tickets_of(client["id"])
        assert call_comments(ticket) == []  # still talking, as far as anyone knows
        clock.advance(7200 + 1)  # tracker.hangup_timeout_seconds
        assert await w.app[WORKER].expire_idle() == 1
        await settle(w.app)
        [ticket] = w.tickets_of(client["id"])
        [comment] = call_comments(ticket)
        assert ticket["assignee_id"] == 2 and "Отвечен" in comment["message"]
        assert "Конец звонка: Не сообщён: звонок закрыт по тайм-ауту" in comment["message"]


@pytest.mark.parametrize(("timeout", "interval"), [(8, 2.0), (2, 1.0), (0.5, 1.0), (7200, 60.0)])
def test_the_expiry_interval_is_a_quarter_of_the_hang_up_timeout_within_bounds(
    timeout: float, interval: float
):
    assert expiry_interval(timeout) == interval


async def test_the_service_finishes_a_call_soon_after_a_short_hang_up_timeout(tmp_path: Path):
    """The service's own expiry loop (not a test calling it) closes a call whose hang-up was
    lost, a quarter of the timeout later: with a 2 s timeout it no longer waits a minute."""
    clock = FakeClock()
    extra = "hangup_timeout_seconds = 2"  # the harness puts it under [tracker]
    async with world(tmp_path, extra=extra, clock=clock, background=True) as w:
        assert w.app[SUPERVISOR].loops["expiry"].interval == 1.0
        lost = scenarios.without_final_hangup(scenarios.inbound_answered(client=NEW))
        for params in lost.events:
            response = await w.client.get(f"/sipuni/{TOKEN}", params=params)
            assert await response.json() == {"success": True}
        await eventually(lambda: len(w.tickets_of_number(NEW)) == 1)
        clock.advance(3)  # past the hang-up timeout; the next expiry round is ≤ 1 s away
        await eventually(lambda: any(call_comments(t) for t in w.tickets_of_number(NEW)))
        [ticket] = w.tickets_of_number(NEW)
        [comment] = call_comments(ticket)
        assert "Конец звонка: Не сообщён: звонок закрыт по тайм-ауту" in comment["message"]
