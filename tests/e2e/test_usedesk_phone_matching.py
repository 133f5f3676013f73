"""Usedesk end to end: a caller is matched by the whole number, whatever spelling an agent
typed into Usedesk, and never to a client whose number only ends the same.

Sipuni calls go over HTTP into the real service; the Usedesk sandbox searches ``/clients``
the way Usedesk does (``LIKE %query%`` on the stored string) and its state is checked.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from connector_core.simulator import scenarios
from plugins.usedesk.sandbox.seed import DEFAULT_SEED
from tests.e2e.usedesk_world import World, call_comments, world

pytestmark = pytest.mark.e2e
CALLER = "79035550101"  # as Sipuni sends it
FIVE_SPELLINGS = [
    "+7 903 555-01-01",
    "8 (903) 555-01-01",
    "+7(903)5550101",
    "89035550101",
    "9035550101",
]


def seed_with(clients: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> dict[str, Any]:
    """The default seed (its agents are mapped in the world's settings) plus these records."""
    seed = copy.deepcopy(DEFAULT_SEED)
    seed["clients"] += clients
    seed["tickets"] += tickets
    return seed


def ticket(ticket_id: int, client_id: int, status: int) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "subject": f"Обращение {ticket_id}",
        "client_id": client_id,
        "status_id": status,
        "assignee_id": 3,
        "published_at": "2024-04-01 10:00:00",
        "comments": [{"message": "Первое сообщение", "type": "public", "from": "client"}],
    }


def client_ids(w: World) -> list[int]:
    return [c["id"] for c in w.state()["clients"]]


def ticket_by_id(w: World, ticket_id: int) -> dict[str, Any]:
    return next(t for t in w.state()["tickets"] if t["id"] == ticket_id)


@pytest.mark.parametrize("settings", ["", "always_new_ticket = true"])
async def test_a_stranger_whose_number_only_ends_the_same_is_never_the_caller(
    tmp_path: Path, settings: str
) -> None:
    # 379035550101 is another country's number that ends with the caller's ten digits.
    stranger = {"id": 2001, "name": "Незнакомец", "phones": ["379035550101"]}
    seed = seed_with([stranger], [ticket(6001, 2001, status=1)])
    async with world(tmp_path, settings, seed=seed) as w:
        await w.call(scenarios.inbound_answered(client=CALLER))
        [new] = w.clients_with(CALLER)
        assert new["id"] != 2001 and new["name"] == f"Клиент {CALLER}"
        [theirs] = w.tickets_of(new["id"])
        assert len(call_comments(theirs)) == 1
        # Nothing was written for the stranger: no comment, no ticket.
        assert [t["id"] for t in w.tickets_of(2001)] == [6001]
        assert call_comments(ticket_by_id(w, 6001)) == []


@pytest.mark.parametrize("literal", [False, True], ids=["wildcards", "literal"])
@pytest.mark.parametrize("spelling", FIVE_SPELLINGS)
async def test_each_spelling_an_agent_types_finds_the_client(
    tmp_path: Path, spelling: str, literal: bool
) -> None:
    typed = {"id": 2001, "name": "Ольга Набранная", "phones": [spelling]}
    seed = seed_with([typed], [ticket(6001, 2001, status=1)])
    async with world(tmp_path, seed=seed, literal_search=literal) as w:
        before = client_ids(w)
        await w.call(scenarios.inbound_answered(client=CALLER))
        assert client_ids(w) == before  # no duplicate client
        assert [t["id"] for t in w.tickets_of(2001)] == [6001]
        [comment] = call_comments(ticket_by_id(w, 6001))
        assert f"Клиент: {CALLER}" in comment["message"]
        # The connector first asks whether the search takes LIKE wildcards ("%"; when nothing
        # matches, the list without a query tells a literal search from an empty account).
        queries = [r.params.get("query") for r in w.sandbox.requests("/clients")]
        if literal:
            # A number not seen before then costs three searches.
            assert queries == ["%", None, "5550101", "555-01-01", "555 01 01"]
        else:
            assert queries == ["%", "555%01%01"]  # one pattern finds every spelling


async def test_several_clients_with_the_number_the_one_with_an_open_ticket_gets_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clients = [
        {"id": 2001, "name": "Пётр Первый", "phones": ["+7 903 555-01-01"]},
        {"id": 2002, "name": "Пётр Второй", "phones": ["89035550101"]},
        {"id": 2003, "name": "Пётр Третий", "phones": ["9035550101"]},
        {"id": 2004, "name": "Незнакомец", "phones": ["379035550101"]},
    ]
    tickets = [
        ticket(6001, 2001, status=3),  # closed
        ticket(6002, 2002, status=1),  # open: the conversation in progress
        ticket(6004, 2004, status=1),  # the stranger's, newer, but he is not the caller
    ]
    async with world(tmp_path, seed=seed_with(clients, tickets)) as w:
        before = client_ids(w)
        with caplog.at_level(logging.WARNING, logger="plugins.usedesk.flow"):
            await w.call(scenarios.inbound_answered(client=CALLER))
        assert client_ids(w) == before
        assert len(call_comments(ticket_by_id(w, 6002))) == 1
        assert [call_comments(ticket_by_id(w, t)) for t in (6001, 6004)] == [[], []]
        [warning] = [r for r in caplog.records if "Usedesk clients have the number" in r.message]
        assert warning.levelno == logging.WARNING
        assert warning.message == (
            "012345/usedesk: 3 Usedesk clients have the number …0101: 2001 «Пётр Первый», "
            "2002 «Пётр Второй», 2003 «Пётр Третий»; the call goes to 2002 because it has "
            "the newest open ticket, 6002"
        )
        assert "9035550101" not in warning.message  # no full number in the log
        # Tickets read to choose: 2001 and 2002 (2003 has none); not read again for 2002.
        assert [r.params["client_id"] for r in w.sandbox.requests("/tickets")] == [2001, 2002]


async def test_several_clients_without_an_open_ticket_the_lowest_id_gets_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clients = [
        {"id": 2003, "name": "Пётр Третий", "phones": ["8 (903) 555-01-01"]},
        {"id": 2001, "name": "Пётр Первый", "phones": ["+7(903)5550101"]},
        {"id": 2002, "name": "Пётр Второй", "phones": ["89035550101"]},
    ]
    async with world(tmp_path, seed=seed_with(clients, [ticket(6002, 2002, status=3)])) as w:
        with caplog.at_level(logging.WARNING, logger="plugins.usedesk.flow"):
            await w.call(scenarios.inbound_answered(client=CALLER))
        [new_ticket] = w.tickets_of(2001)
        assert len(call_comments(new_ticket)) == 1
        assert [t["id"] for t in w.tickets_of(2002)] == [6002] and w.tickets_of(2003) == []
        assert w.clients_with(CALLER) == []  # no client created
        assert "the call goes to 2001 because none has an open ticket: the lowest id" in (
            caplog.text
        )


async def test_the_choice_is_remembered_so_the_next_call_searches_nothing(tmp_path: Path) -> None:
    clients = [
        {"id": 2001, "name": "Пётр Первый", "phones": ["+7 903 555-01-01"]},
        {"id": 2002, "name": "Пётр Второй", "phones": ["89035550101"]},
    ]
    async with world(tmp_path, seed=seed_with(clients, [ticket(6001, 2001, status=1)])) as w:
        await w.call(scenarios.inbound_answered(client=CALLER, call_id="1717171700.41"))
        searches = len(w.sandbox.requests("/clients"))
        await w.call(
            scenarios.inbound_answered(
                client=CALLER, call_id="1717179000.42", start=scenarios.START + 7300
            )
        )
        assert len(w.sandbox.requests("/clients")) == searches
        assert len(call_comments(ticket_by_id(w, 6001))) == 2
        assert w.tickets_of(2002) == []
