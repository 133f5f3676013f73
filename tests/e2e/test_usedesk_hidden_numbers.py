"""Usedesk end to end: calls from hidden numbers (Sipuni sends no usable caller number)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from connector_core.simulator import scenarios
from tests.e2e.usedesk_world import World, call_comments, world

pytestmark = pytest.mark.e2e
HIDDEN = "Скрытый номер"
ON_DUTY = 4  # on_duty_user in the e2e world


def missed(client: str, n: int) -> scenarios.Scenario:
    """The n-th missed call from ``client`` (each its own call id, an hour apart)."""
    return scenarios.inbound_missed(client=client, seq=61000 + n, start=scenarios.START + 3600 * n)


def named(w: World, name: str) -> list[dict[str, Any]]:
    return [c for c in w.state()["clients"] if c["name"] == name]


async def test_missed_hidden_calls_go_to_one_hidden_number_client_for_the_on_duty_agent(
    tmp_path: Path,
):
    async with world(tmp_path) as w:
        clients_before = len(w.state()["clients"])
        first = missed("anonymous", 1)
        await w.call(first)
        [client] = named(w, HIDDEN)
        assert client["phones"] == []
        [ticket] = w.tickets_of(client["id"])
        assert ticket["assignee_id"] == ON_DUTY
        [comment] = call_comments(ticket)
        assert "Пропущен" in comment["message"] and first.call_id in comment["message"]

        second = missed("", 2)  # a second hidden caller, this time an empty src_num
        await w.call(second)
        assert [c["id"] for c in named(w, HIDDEN)] == [client["id"]]
        assert len(w.state()["clients"]) == clients_before + 1  # no duplicate client
        [ticket] = w.tickets_of(client["id"])  # the open ticket gets the second call
        comments = call_comments(ticket)
        assert [first.call_id in c["message"] for c in comments] == [True, False]
        assert second.call_id in comments[1]["message"]
        assert ticket["assignee_id"] == ON_DUTY


async def test_with_always_new_ticket_each_hidden_call_gets_its_own_ticket(tmp_path: Path):
    async with world(tmp_path, "always_new_ticket = true") as w:
        await w.call(missed("anonymous", 1))
        await w.call(missed("unknown", 2))
        [client] = named(w, HIDDEN)
        tickets = w.tickets_of(client["id"])
        assert len(tickets) == 2
        assert [t["assignee_id"] for t in tickets] == [ON_DUTY, ON_DUTY]
        assert [len(call_comments(t)) for t in tickets] == [1, 1]


async def test_an_existing_client_of_that_name_is_used_not_created(tmp_path: Path):
    async with world(tmp_path, 'hidden_number_client = "Аноним"') as w:
        status, body = w.sandbox.call(
            "/create/client", {"api_token": w.sandbox.token, "name": "аноним"}
        )
        assert status == 200
        await w.call(missed("anonymous", 1))
        assert named(w, "Аноним") == []
        [ticket] = w.tickets_of(body["client_id"])
        assert len(call_comments(ticket)) == 1


async def test_hidden_number_skip_creates_nothing_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="plugins.usedesk")
    async with world(tmp_path, 'hidden_number = "skip"') as w:
        before = w.state()
        await w.call(missed("anonymous", 1))
        assert w.writes() == []
        assert w.state()["clients"] == before["clients"]
        assert w.state()["tickets"] == before["tickets"]
    assert 'call skipped: no usable client number (anonymous); hidden_number = "skip"' in (
        caplog.text
    )


async def test_an_answered_hidden_call_creates_nothing_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="plugins.usedesk")
    async with world(tmp_path) as w:
        await w.call(scenarios.inbound_answered(client="anonymous"))
        assert w.writes() == []
        assert named(w, HIDDEN) == []
    assert "no usable client number (anonymous); the call was answered" in caplog.text


async def test_a_deleted_hidden_number_client_is_found_again_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    async with world(tmp_path) as w:
        await w.call(missed("anonymous", 1))
        [old] = named(w, HIDDEN)
        w.sandbox.delete_client(old["id"])  # an agent deletes the card (and its tickets)
        await w.call(missed("anonymous", 2))
        [new] = named(w, HIDDEN)
        assert new["id"] != old["id"]
        [ticket] = w.tickets_of(new["id"])
        assert len(call_comments(ticket)) == 1
    # The client was made with the first ticket, so the link led to it through that ticket.
    [first] = [r for r in w.sandbox.requests("/create/ticket")][:1]
    made_with = first.response["ticket_id"]
    assert f"no longer knows client of ticket {made_with} linked to «{HIDDEN}»" in caplog.text
