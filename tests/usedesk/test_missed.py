"""The Usedesk plugin on the missed-call lifecycle, against the sandbox.

Two misses from one number, then an employee calls back: one ticket holds both misses, the
count, and one «Перезвонили»; its owner and status are as configured. A miss past the SLA
gets its tag and priority and the on-duty agent a card, once. Every hook run twice (a retry)
changes nothing more. Helpers: ``missed_world.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core.callstate import CallState
from connector_core.plugin import TransientError
from plugins.usedesk import missed
from plugins.usedesk.settings import UsedeskSettings
from tests.usedesk.missed_world import (
    MissedWorld,
    callback_by,
    comments_with,
    missed_call,
    missed_world,
)


async def two_misses_and_a_callback(world: MissedWorld) -> tuple[CallState, CallState, CallState]:
    """Two misses 5 minutes apart, and 102 (Вера, agent 3) calls back 65 minutes after the
    first; each lifecycle hook run twice, as after a lost answer."""
    first = await world.call(missed_call(0, 1))
    second = await world.call(missed_call(5, 2))
    await world.missed_again(second, first)
    await world.missed_again(second, first)
    back = await world.call(callback_by("102", 65, 3))
    await world.called_back(back, first, second)
    await world.called_back(back, first, second)
    return first, second, back


@pytest.mark.parametrize(
    "always_new_ticket", [False, True], ids=["search_statuses", "a new ticket per call"]
)
async def test_two_misses_and_a_callback_make_one_ticket(
    tmp_path: Path, always_new_ticket: bool
) -> None:
    async with missed_world(
        tmp_path, always_new_ticket=always_new_ticket, callback_owner=True, callback_status=2
    ) as world:
        first, second, back = await two_misses_and_a_callback(world)
        writes = world.writes()
        # Retried again afterwards: nothing more is written.
        await world.missed_again(second, first)
        await world.called_back(back, first, second)
        assert world.writes() == writes
    [ticket] = world.tickets()
    assert len(comments_with(ticket, "пропущен")) == 2  # the two calls' own comments
    assert len(comments_with(ticket, "Повторный звонок без ответа (2-й)")) == 1
    [callback] = comments_with(ticket, "Перезвонили")
    assert "Вера Продажина (102)" in callback
    assert "через 1 ч 5 мин после первого звонка" in callback
    assert "разговор 2:15" in callback and "звонков без ответа: 2" in callback
    assert len(comments_with(ticket, back.call_id)) == 2  # the call's comment, and the note
    assert ticket["assignee_id"] == 3  # the employee who called back
    assert ticket["status_id"] == 2  # Выполнен, as configured


async def test_without_the_callback_settings_the_note_alone_is_written(tmp_path: Path) -> None:
    async with missed_world(tmp_path) as world:  # callback_owner off, no callback_status
        await two_misses_and_a_callback(world)
    [ticket] = world.tickets()
    assert len(comments_with(ticket, "Перезвонили")) == 1
    assert ticket["assignee_id"] == 4  # the on-duty agent's, from the first miss
    assert ticket["status_id"] == 8  # Новый


async def test_with_the_same_ticket_off_a_new_ticket_per_call_stays(tmp_path: Path) -> None:
    async with missed_world(tmp_path, always_new_ticket=True, missed_same_ticket_hours=0) as world:
        await two_misses_and_a_callback(world)
    tickets = world.tickets()
    assert len(tickets) == 3  # what "a new ticket per call" did before
    # The callback is still written on the first miss's ticket, and no count note anywhere.
    assert len(comments_with(tickets[0], "Перезвонили")) == 1
    assert not any(comments_with(t, "Повторный звонок") for t in tickets)


async def test_after_the_callback_the_number_gets_new_tickets_again(tmp_path: Path) -> None:
    async with missed_world(tmp_path, always_new_ticket=True) as world:
        await two_misses_and_a_callback(world)
        await world.call(missed_call(120, 4))
    assert len(world.tickets()) == 2


async def test_a_miss_past_the_same_ticket_hours_gets_its_own_ticket(tmp_path: Path) -> None:
    async with missed_world(tmp_path, always_new_ticket=True, missed_same_ticket_hours=1) as world:
        await world.call(missed_call(0, 1))
        await world.call(missed_call(61, 2))
    assert len(world.tickets()) == 2


async def test_a_ticket_made_on_ring_is_the_first_misses_ticket(tmp_path: Path) -> None:
    # With ticket_created_on = "ring" the ticket is made before it is known the call is
    # missed: the number's open missed-call ticket is taken then instead.
    async with missed_world(
        tmp_path, always_new_ticket=True, ticket_created_on="ring", callback_status=3
    ) as world:
        await two_misses_and_a_callback(world)
    [ticket] = world.tickets()
    assert len(comments_with(ticket, "пропущен")) == 2
    assert len(comments_with(ticket, "Перезвонили")) == 1
    assert ticket["status_id"] == 3


async def test_an_overdue_miss_gets_tag_priority_and_a_card_once(tmp_path: Path) -> None:
    async with missed_world(
        tmp_path, overdue_tag="перезвонить", overdue_priority="urgent"
    ) as world:
        first = await world.call(missed_call(0, 1))
        second = await world.call(missed_call(5, 2))
        await world.overdue(first, second)
        writes = world.writes()
        await world.overdue(first, second)  # a retry
        assert world.writes() == writes
        card = world.card("104")  # the on-duty agent's extension
        assert world.card("101") is None and world.card("102") is None
    [ticket] = world.tickets()
    assert ticket["priority"] == "urgent"
    assert ticket["tags"].count("перезвонить") == 1
    updates = [c for c in ticket["changes"] if c["target"] in ("priority", "new_tags")]
    assert len(updates) == 2  # one change of each, made by one request
    assert writes.count("/update/ticket") == 1
    assert card is not None and card["state"] == "missed_overdue"
    assert card["call_id"] == first.call_id
    [part] = card["parts"]
    assert part["lines"][0].startswith("Не перезвонили за 15 мин: ")
    assert part["lines"][1] == "звонков без ответа: 2"
    assert part["links"] == [["Тикет", f"https://secure.usedesk.ru/tickets/{ticket['id']}"]] or (
        part["links"] == [("Тикет", f"https://secure.usedesk.ru/tickets/{ticket['id']}")]
    )


async def test_an_overdue_miss_with_nothing_configured_changes_nothing(tmp_path: Path) -> None:
    async with missed_world(
        tmp_path, overdue_tag="", overdue_priority="", overdue_card=False
    ) as world:
        first = await world.call(missed_call(0, 1))
        writes = world.writes()
        await world.overdue(first)
        assert world.writes() == writes and world.card("104") is None


def test_an_overdue_priority_is_raised_never_lowered() -> None:
    assert missed.raised_priority("medium", "urgent") == "urgent"
    assert missed.raised_priority("extreme", "urgent") is None
    assert missed.raised_priority("urgent", "urgent") is None
    assert missed.raised_priority(None, "low") is None  # Usedesk's default is medium
    assert missed.raised_priority("low", "") is None  # overdue_priority = "": unchanged


def test_spans_read_as_a_person_says_them() -> None:
    assert missed.span(3900, "ru") == "1 ч 5 мин"
    assert missed.span(7200, "ru") == "2 ч"
    assert missed.span(45, "en") == "45 s"


def test_a_callback_status_outside_usedesks_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="a Usedesk status id is 1-10"):
        UsedeskSettings.model_validate({"api_token": "t", "callback_status": 12})


async def test_a_note_whose_answer_was_lost_is_not_written_twice(tmp_path: Path) -> None:
    async with missed_world(tmp_path, write_settle_seconds=0) as world:
        first = await world.call(missed_call(0, 1))
        back = await world.call(callback_by("102", 30, 3))
        # Usedesk writes the note but the connection drops before the answer.
        world.sandbox.faults.configure(
            {"mode": "drop", "apply": True, "count": 1, "paths": ["/create/comment"]}
        )
        with pytest.raises(TransientError):
            await world.called_back(back, first)
        await world.called_back(back, first)  # the retry finds it by its marker
    [ticket] = world.tickets()
    assert len(comments_with(ticket, "Перезвонили")) == 1
