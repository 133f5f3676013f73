"""The in-memory Usedesk sandbox: every endpoint, every documented quirk, faults and control.

Most tests go through HTTP with pytest-aiohttp's ``aiohttp_client`` so the wire format (JSON vs
form bodies, bare arrays, HTTP 200 errors) is what is checked. Time is a ticking fake clock and
the rate observer reads a fake monotonic clock, so nothing here depends on wall time except the
fault tests, which only assert lower bounds or generous upper bounds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.usedesk.sandbox import (
    DEFAULT_TOKEN,
    FaultConfigError,
    RateObserver,
    SeedError,
    UsedeskSandbox,
    create_app,
    load_seed,
)
from plugins.usedesk.sandbox.params import decode_form

ApiCall = Callable[..., Awaitable[tuple[int, Any]]]
ROOT = Path(__file__).resolve().parents[2]


class Ticker:
    """A clock that moves one second per reading, so every write gets a distinct time."""

    def __init__(self) -> None:
        self.moment = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sandbox() -> UsedeskSandbox:
    return UsedeskSandbox(clock=Ticker())


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: UsedeskSandbox) -> TestClient:
    return await aiohttp_client(create_app(sandbox))


@pytest.fixture
def api(client: TestClient, sandbox: UsedeskSandbox) -> ApiCall:
    """POST a JSON body with the right token; returns (HTTP status, parsed body)."""

    async def call(path: str, **params: Any) -> tuple[int, Any]:
        resp = await client.post(path, json={"api_token": sandbox.token, **params})
        return resp.status, await resp.json()

    return call


def many_clients_seed(count: int) -> dict[str, Any]:
    return {
        "clients": [
            {"id": i, "name": f"Client {i:03d}", "phones": [f"7900000{i:04d}"]}
            for i in range(1, count + 1)
        ],
    }


# -- transport, token, encodings ------------------------------------------------------------


async def test_missing_or_wrong_token_is_http_401(client: TestClient) -> None:
    for body in ({}, {"api_token": "wrong"}):
        resp = await client.post("/clients", json=body)
        assert resp.status == 401
        assert await resp.json() == {"error": "Invalid api token"}


async def test_token_in_query_string_is_accepted(client: TestClient) -> None:
    resp = await client.post("/groups", params={"api_token": DEFAULT_TOKEN})
    assert resp.status == 200
    assert [g["id"] for g in await resp.json()] == [1, 2]


async def test_form_encoded_body_with_php_arrays(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    resp = await client.post(
        "/create/client",
        data=[
            ("api_token", sandbox.token),
            ("name", "Form Client"),
            ("phone", "79990001122"),
            ("emails[]", "a@example.com"),
            ("emails[]", "b@example.com"),
        ],
    )
    body = await resp.json()
    assert body["status"] is True
    created = sandbox.state.clients[body["client_id"]]
    assert [e.email for e in created.emails] == ["a@example.com", "b@example.com"]
    assert [p.phone for p in created.phones] == ["79990001122"]


def test_decode_form_nests_brackets_and_keeps_last_plain_value() -> None:
    decoded = decode_form(
        [
            ("a", "1"),
            ("a", "2"),
            ("f[assignee_id]", "5"),
            ("f[group_id]", "1"),
            ("l[0][x]", "p"),
            ("l[1][x]", "q"),
        ]
    )
    assert decoded == {
        "a": "2",
        "f": {"assignee_id": "5", "group_id": "1"},
        "l": [{"x": "p"}, {"x": "q"}],
    }


async def test_get_with_query_params_is_allowed_only_on_read_methods(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    token = {"api_token": sandbox.token}
    channels = await client.get("/channels", params=token)
    assert channels.status == 200
    assert {c["channel_type"] for c in await channels.json()} == {"api", "email", "whatsapp"}
    card = await client.get("/client", params={**token, "client_id": "1001"})
    assert (await card.json())[0]["client"]["id"] == 1001
    users = await client.get("/users", params={**token, "user_type": "admin"})
    assert [u["id"] for u in await users.json()] == [1]
    tickets = await client.get("/tickets", params={**token, "client_id": "1001"})
    assert [t["id"] for t in await tickets.json()] == [5001]
    refused = await client.get("/create/ticket", params={**token, "subject": "s", "message": "m"})
    assert refused.status == 405
    assert len(sandbox.state.tickets) == 2


async def test_malformed_json_is_http_400(client: TestClient) -> None:
    resp = await client.post(
        "/clients", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "error" in await resp.json()


# -- clients --------------------------------------------------------------------------------


async def test_create_client_returns_id_and_true_status(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    status, body = await api(
        "/create/client",
        name="Пётр",
        phone="79161112233",
        phone_type="mobile",
        emails=["petr@example.com"],
        note="VIP",
    )
    assert status == 200
    assert body == {"client_id": 1004, "status": True}
    created = sandbox.state.clients[1004]
    assert (created.name, created.note) == ("Пётр", "VIP")
    assert [(p.phone, p.type) for p in created.phones] == [("79161112233", "mobile")]


@pytest.mark.parametrize(
    "phone", ["+79161112233", "8 916 111-22-33", "916111223", "7916111223344556", "7916abc2233"]
)
async def test_create_client_phone_must_be_10_to_15_digits(
    api: ApiCall, sandbox: UsedeskSandbox, phone: str
) -> None:
    status, body = await api("/create/client", name="X", phone=phone)
    assert status == 200  # the documented quirk: refusals come with HTTP 200
    assert "phone" in body["error"]
    assert len(sandbox.state.clients) == 3


async def test_create_client_accepts_numeric_json_phone(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    _, body = await api("/create/client", phone=79161112233)
    assert sandbox.state.clients[body["client_id"]].phones[0].phone == "79161112233"


async def test_update_client_appends_phones_and_emails_and_replaces_name(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    status, body = await api(
        "/update/client",
        client_id=1001,
        name="Иван П.",
        phone="79035550000",
        emails=["ivan2@example.com"],
        note="second",
    )
    assert (status, body) == (200, {"client_id": 1001, "status": True})
    card = sandbox.state.clients[1001]
    assert card.name == "Иван П."
    assert [p.phone for p in card.phones] == ["+7 916 123-45-67", "79035550000"]
    assert [e.email for e in card.emails] == ["ivan@example.com", "ivan2@example.com"]
    assert card.note == "second"
    await api("/update/client", client_id=1001, note="third")
    assert card.note == "second\nthird"
    await api("/update/client", client_id=1001, note="fresh", is_new_note=True)
    assert card.note == "fresh"


async def test_update_client_refusals_change_nothing(api: ApiCall, sandbox: UsedeskSandbox) -> None:
    assert "error" in (await api("/update/client", name="nobody"))[1]
    assert "error" in (await api("/update/client", client_id=999, name="ghost"))[1]
    status, body = await api("/update/client", client_id=1001, name="New", phone="+7916")
    assert status == 200 and "error" in body
    assert sandbox.state.clients[1001].name == "Иван Петров"


async def test_clients_is_a_bare_array_with_flat_phone_and_email_strings(api: ApiCall) -> None:
    status, body = await api("/clients", query="Сидорова")
    assert status == 200
    assert body == [
        {
            "id": 1002,
            "name": "Мария Сидорова",
            "emails": None,
            "phone": "8 (495) 123-45-67, +7(903)555-00-11",
            "tickets": [5002],
        }
    ]


async def test_clients_partial_match_is_like_on_the_stored_spelling(api: ApiCall) -> None:
    _, hits = await api("/clients", query="916 123")
    assert [c["id"] for c in hits] == [1001]
    # The stored "+7 916 123-45-67" does not contain these digits contiguously.
    _, misses = await api("/clients", query="9161234567")
    assert misses == []
    _, by_email = await api("/clients", query="IVAN@EXAMPLE")
    assert [c["id"] for c in by_email] == [1001]


async def test_the_seed_holds_phones_as_agents_type_them(sandbox: UsedeskSandbox) -> None:
    phones = {c.id: [p.phone for p in c.phones] for c in sandbox.state.clients.values()}
    assert phones[1001] == ["+7 916 123-45-67"]  # separators
    assert phones[1002] == ["8 (495) 123-45-67", "+7(903)555-00-11"]  # 8-prefix, +7 (brackets)


async def test_clients_grouped_tail_finds_every_client_whose_phone_contains_it(
    api: ApiCall,
) -> None:
    """The connector's queries against the seed: a substring of the stored text, nothing else."""
    _, grouped = await api("/clients", query="123-45-67")
    assert [c["id"] for c in grouped] == [1001, 1002]  # 916 and 495: the post-filter decides
    _, spaced = await api("/clients", query="123 45 67")
    assert spaced == []
    _, run = await api("/clients", query="5550011")
    assert run == []  # stored as "+7(903)555-00-11"
    _, mobile = await api("/clients", query="555-00-11")
    assert [c["id"] for c in mobile] == [1002]


async def test_clients_query_wildcards_work_as_in_sql_like(api: ApiCall) -> None:
    # LIKE '%query%' built from the text as given: its own % and _ are wildcards.
    _, hits = await api("/clients", query="123%45%67")
    assert 1001 in [c["id"] for c in hits]  # "+7 916 123-45-67"
    _, hits = await api("/clients", query="123_45_67")
    assert 1001 in [c["id"] for c in hits]
    _, everyone = await api("/clients", query="%")
    _, listed = await api("/clients")
    assert [c["id"] for c in everyone] == [c["id"] for c in listed] != []


async def test_clients_literal_search_option_takes_wildcards_as_text(
    aiohttp_client: Any,
) -> None:
    sandbox = UsedeskSandbox(like_wildcards=False)
    client = await aiohttp_client(create_app(sandbox))
    for query in ("123%45%67", "123_45_67", "%"):
        resp = await client.post("/clients", json={"api_token": sandbox.token, "query": query})
        assert await resp.json() == [], query


async def test_clients_full_match_needs_the_whole_value(api: ApiCall) -> None:
    _, partial = await api("/clients", query="123-45-67", search_type="full_match")
    assert partial == []
    _, whole = await api("/clients", query="8 (495) 123-45-67", search_type="full_match")
    assert [c["id"] for c in whole] == [1002]
    _, bad = await api("/clients", query="x", search_type="fuzzy")
    assert "error" in bad


async def test_clients_digits_phone_search_option(aiohttp_client: Any) -> None:
    sandbox = UsedeskSandbox(phone_search="digits")
    client = await aiohttp_client(create_app(sandbox))
    resp = await client.post("/clients", json={"api_token": sandbox.token, "query": "9161234567"})
    assert [c["id"] for c in await resp.json()] == [1001]


async def test_offset_is_a_page_index_of_100(aiohttp_client: Any) -> None:
    sandbox = UsedeskSandbox(seed=many_clients_seed(250))
    client = await aiohttp_client(create_app(sandbox))

    async def page(**extra: Any) -> Any:
        resp = await client.post("/clients", json={"api_token": sandbox.token, **extra})
        return await resp.json()

    first, second, third, past = (
        await page(),
        await page(offset=1),
        await page(offset=2),
        await page(offset=3),
    )
    assert [len(first), len(second), len(third), past] == [100, 100, 50, []]
    assert second[0]["id"] == 101 and second[-1]["id"] == 200
    assert "error" in await page(offset=None)
    assert "error" in await page(offset="abc")


async def test_client_card_is_a_one_element_array(api: ApiCall) -> None:
    status, body = await api("/client", client_id=1002)
    assert status == 200 and isinstance(body, list) and len(body) == 1
    card = body[0]["client"]
    assert [(p["phone"], p["client_id"]) for p in card["phones"]] == [
        ("8 (495) 123-45-67", 1002),
        ("+7(903)555-00-11", 1002),
    ]
    assert card["tickets"] == [5002] and card["emails"] == []
    assert body[0]["phones"] == card["phones"]
    assert "error" in (await api("/client", client_id=424242))[1]
    assert "error" in (await api("/client"))[1]


# -- tickets --------------------------------------------------------------------------------


async def test_create_ticket_defaults_and_tag_string(api: ApiCall, sandbox: UsedeskSandbox) -> None:
    status, body = await api(
        "/create/ticket",
        subject="Звонок",
        message="<p>call</p>",
        client_id=1001,
        tag="sipuni, missed",
        additional_id="call-1",
    )
    assert status == 200
    assert body == {"status": "success", "ticket_id": 5003, "message_status": "delivered"}
    ticket = sandbox.state.tickets[5003]
    assert (ticket.status_id, ticket.type, ticket.priority) == (8, "question", "medium")
    assert ticket.tags == ["sipuni", "missed"]
    assert ticket.additional_id == "call-1"
    assert ticket.channel_id == 101  # the API channel the token belongs to
    first = ticket.comments[0]
    assert (first.type, first.from_, first.client_id) == ("public", "client", 1001)


async def test_create_ticket_requires_subject_and_message(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    for params in ({"message": "m"}, {"subject": "s"}, {"subject": " ", "message": "m"}):
        status, body = await api("/create/ticket", client_id=1001, **params)
        assert status == 200 and "required" in body["error"]
    assert len(sandbox.state.tickets) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"type": "bug"},
        {"priority": "high"},
        {"status": 11},
        {"client_id": 99},
        {"group_id": 9},
        {"channel_id": 999},
        {"client_id": "abc"},
    ],
)
async def test_create_ticket_bad_parameters_are_http_200_errors(
    api: ApiCall, sandbox: UsedeskSandbox, params: dict[str, Any]
) -> None:
    status, body = await api(
        "/create/ticket", **{"subject": "s", "message": "m", "client_id": 1001, **params}
    )
    assert status == 200 and "error" in body
    assert len(sandbox.state.tickets) == 2 and len(sandbox.state.clients) == 3


async def test_create_ticket_checks_assignee_and_defaults_group(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    status, body = await api(
        "/create/ticket", subject="s", message="m", client_id=1001, assignee_id=77
    )
    assert status == 200 and "assignee_id" in body["error"]
    assert len(sandbox.state.tickets) == 2
    _, ok = await api("/create/ticket", subject="s", message="m", client_id=1001, assignee_id=3)
    ticket = sandbox.state.tickets[ok["ticket_id"]]
    assert (ticket.assignee_id, ticket.group_id) == (3, 2)


async def test_create_ticket_client_phone_only_for_new_clients(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    await api(
        "/create/ticket",
        subject="s",
        message="m",
        client_id=1001,
        client_phone="79990000000",
        client_name="Other",
    )
    assert [p.phone for p in sandbox.state.clients[1001].phones] == ["+7 916 123-45-67"]
    assert sandbox.state.clients[1001].name == "Иван Петров"
    _, body = await api(
        "/create/ticket",
        subject="s",
        message="m",
        client_id="new_client",
        client_phone="79990000000",
        client_name="Новый",
    )
    new_client = sandbox.state.clients[sandbox.state.tickets[body["ticket_id"]].client_id]
    assert new_client.id == 1004 and new_client.name == "Новый"
    assert [p.phone for p in new_client.phones] == ["79990000000"]


async def test_create_ticket_without_client_id_matches_email_not_phone(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    _, by_email = await api(
        "/create/ticket", subject="s", message="m", client_email="IVAN@example.com"
    )
    assert sandbox.state.tickets[by_email["ticket_id"]].client_id == 1001
    _, by_phone = await api("/create/ticket", subject="s", message="m", client_phone="84951234567")
    assert sandbox.state.tickets[by_phone["ticket_id"]].client_id not in (1001, 1002)


async def test_private_comment_flag_makes_the_first_message_private(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    _, body = await api(
        "/create/ticket",
        subject="s",
        message="note",
        client_id=1001,
        private_comment=True,
        user_id=2,
    )
    first = sandbox.state.tickets[body["ticket_id"]].comments[0]
    assert (first.type, first.from_, first.user_id) == ("private", "user", 2)


async def test_update_ticket_flips_new_to_open_unless_silent(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    ids = [
        (await api("/create/ticket", subject="s", message="m", client_id=1001))[1]["ticket_id"]
        for _ in range(5)
    ]
    assert (await api("/update/ticket", ticket_id=ids[0], priority="urgent"))[1] == {
        "status": "success"
    }
    await api("/update/ticket", ticket_id=ids[1], priority="urgent", silent=True)
    await api("/update/ticket", ticket_id=ids[2], tag="x", silent="1")
    await api("/update/ticket", ticket_id=ids[3], status=5)
    await api("/update/ticket", ticket_id=ids[4], tag="x", silent=False)
    tickets = sandbox.state.tickets
    assert [tickets[i].status_id for i in ids] == [1, 8, 8, 5, 1]
    assert tickets[ids[1]].priority == "urgent"
    assert [c.target for c in tickets[ids[0]].changes] == [
        "ticket_created",
        "priority",
        "status_id",
    ]


async def test_update_ticket_does_not_touch_status_of_non_new_tickets(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    await api("/update/ticket", ticket_id=5002, priority="low")
    assert sandbox.state.tickets[5002].status_id == 3


async def test_update_ticket_adds_tags_and_checks_assignee(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    await api("/update/ticket", ticket_id=5001, tag="sipuni, доставка, missed")
    assert sandbox.state.tickets[5001].tags == ["доставка", "sipuni", "missed"]
    status, body = await api("/update/ticket", ticket_id=5001, assignee_id=99, priority="low")
    assert status == 200 and "assignee_id" in body["error"]
    assert sandbox.state.tickets[5001].priority == "medium"
    await api("/update/ticket", ticket_id=5001, assignee_id=3)
    assert (sandbox.state.tickets[5001].assignee_id, sandbox.state.tickets[5001].group_id) == (3, 2)
    await api("/update/ticket", ticket_id=5001, assignee_id="null")
    assert sandbox.state.tickets[5001].assignee_id is None


async def test_update_ticket_needs_an_existing_ticket(api: ApiCall) -> None:
    assert "required" in (await api("/update/ticket", status=2))[1]["error"]
    assert "not found" in (await api("/update/ticket", ticket_id=1, status=2))[1]["error"]


async def test_tickets_filters_sorting_and_item_shape(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    made = [
        (
            await api(
                "/create/ticket",
                subject=f"t{i}",
                message="m",
                client_id=1001,
                tag="sipuni" if i % 2 else "other",
                priority="urgent" if i == 2 else "low",
                type="task" if i == 1 else "question",
                assignee_id=2 if i else None,
            )
        )[1]["ticket_id"]
        for i in range(3)
    ]
    status, listed = await api("/tickets", client_id=1001, fstatus="1,5,8")
    assert status == 200 and isinstance(listed, list)
    assert [t["id"] for t in listed] == [*reversed(made), 5001]  # id desc by default
    item = listed[0]
    assert {
        "id",
        "subject",
        "status_id",
        "status",
        "client_id",
        "client_name",
        "assignee_id",
        "type",
        "priority",
        "tags",
        "created_at",
        "last_updated_at",
        "channel_id",
    } <= set(item)
    assert item["status"] == {"id": 8, "name": "Новый"} and item["client_name"] == "Иван Петров"
    assert item["tags"] == [{"name": "other"}]

    async def ids(**filters: Any) -> list[int]:
        return [t["id"] for t in (await api("/tickets", **filters))[1]]

    assert await ids(fstatus="8", tag="sipuni") == [made[1]]
    assert await ids(fpriority="urgent") == [made[2]]
    assert await ids(ftype="task") == [made[1]]
    assert await ids(client_id=1001, sort="id", order="asc") == [5001, *made]
    assert await ids(fassigned={"assignee_id": 2}) == [made[2], made[1], 5001]
    assert await ids(fassigned={"assignee_id": "unassigned", "group_id": "unassigned"}) == [made[0]]
    assert await ids(query="t2") == [made[2]]
    assert "error" in (await api("/tickets", sort="nonsense"))[1]


async def test_tickets_paging_beyond_100(aiohttp_client: Any) -> None:
    seed = many_clients_seed(1)
    seed["tickets"] = [{"id": i, "subject": f"t{i}", "client_id": 1} for i in range(1, 231)]
    sandbox = UsedeskSandbox(seed=seed)
    client = await aiohttp_client(create_app(sandbox))
    pages = []
    for offset in range(3):
        resp = await client.post("/tickets", json={"api_token": sandbox.token, "offset": offset})
        pages.append([t["id"] for t in await resp.json()])
    assert [len(p) for p in pages] == [100, 100, 30]
    assert pages[1][0] == 130 and pages[2][-1] == 1


async def test_ticket_detail_shape(api: ApiCall) -> None:
    status, body = await api("/ticket", ticket_id=5001)
    assert status == 200
    assert set(body) == {"ticket", "comments", "tags", "changes", "custom_fields"}
    ticket = body["ticket"]
    assert (ticket["id"], ticket["status_id"], ticket["group"], ticket["assignee_id"]) == (
        5001,
        1,
        1,
        2,
    )
    assert [c["message"] for c in body["comments"]] == ["Где мой заказ?"]
    assert [t["name"] for t in body["tags"]] == ["доставка"]
    assert "error" in (await api("/ticket", ticket_id=1))[1]


async def test_ticket_detail_string_ids_option(aiohttp_client: Any) -> None:
    sandbox = UsedeskSandbox(string_ids=True)
    client = await aiohttp_client(create_app(sandbox))
    resp = await client.post("/ticket", json={"api_token": sandbox.token, "ticket_id": "5001"})
    ticket = (await resp.json())["ticket"]
    assert (ticket["id"], ticket["status_id"], ticket["client_id"]) == ("5001", "1", "1001")


# -- comments -------------------------------------------------------------------------------


async def test_comments_default_to_private_from_the_first_agent(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    status, body = await api("/create/comment", ticket_id=5001, message="Звонок 00:42")
    assert status == 200 and body["status"] == "success"
    comment = sandbox.state.tickets[5001].comments[-1]
    assert comment.id == body["comment_id"]
    assert (comment.type, comment.from_, comment.user_id) == ("private", "user", 1)
    await api("/create/comment", ticket_id=5001, message="hi", type="public", user_id=2)
    assert (
        sandbox.state.tickets[5001].comments[-1].type,
        sandbox.state.tickets[5001].comments[-1].user_id,
    ) == ("public", 2)


async def test_comment_refusals(api: ApiCall, sandbox: UsedeskSandbox) -> None:
    before = len(sandbox.state.tickets[5001].comments)
    for params in (
        {"message": "m", "user_id": 99},
        {"message": "m", "type": "internal"},
        {"message": ""},
        {"message": "m", "from": "trigger"},
    ):
        status, body = await api("/create/comment", ticket_id=5001, **params)
        assert status == 200 and "error" in body
    assert "error" in (await api("/create/comment", ticket_id=1, message="m"))[1]
    assert len(sandbox.state.tickets[5001].comments) == before


async def test_comment_does_not_flip_a_new_ticket(api: ApiCall, sandbox: UsedeskSandbox) -> None:
    _, created = await api("/create/ticket", subject="s", message="m", client_id=1001)
    await api("/create/comment", ticket_id=created["ticket_id"], message="log")
    assert sandbox.state.tickets[created["ticket_id"]].status_id == 8


# -- directory ------------------------------------------------------------------------------


async def test_users_default_to_employees_and_hide_admins(api: ApiCall) -> None:
    _, default = await api("/users")
    assert [u["id"] for u in default] == [2, 3]
    _, admins = await api("/users", user_type="admin")
    assert [(u["id"], u["role"]) for u in admins] == [(1, "admin")]
    _, support = await api("/users", user_type="support", group_id=1)
    assert [u["id"] for u in support] == [4]
    assert [g["id"] for g in default[0]["groups"]] == [1]
    _, one = await api("/users", user_id=1)
    assert [u["email"] for u in one] == ["anna@example.com"]


async def test_groups_and_channels(api: ApiCall) -> None:
    _, groups = await api("/groups")
    assert [(g["id"], [u["id"] for u in g["users"]]) for g in groups] == [
        (1, [1, 2, 4]),
        (2, [1, 3]),
    ]
    _, channels = await api("/channels", channel_type="api")
    assert channels == [{"channel_id": 101, "channel_name": "Sipuni API", "channel_type": "api"}]


# -- request log and state ------------------------------------------------------------------


async def test_request_log_redacts_the_token(client: TestClient, sandbox: UsedeskSandbox) -> None:
    await client.post("/create/client", json={"api_token": sandbox.token, "phone": "79160000000"})
    await client.post("/clients", params={"api_token": sandbox.token}, json={"query": "x"})
    resp = await client.get("/_sandbox/requests")
    body = await resp.json()
    raw = json.dumps(body)
    assert sandbox.token not in raw
    first, second = body["requests"]
    assert (first["path"], first["write"], first["status"]) == ("/create/client", True, 200)
    assert first["params"] == {"api_token": "REDACTED", "phone": "79160000000"}
    assert first["response"] == {"client_id": 1004, "status": True}
    assert second["params"]["api_token"] == "REDACTED" and second["write"] is False
    writes = await (await client.get("/_sandbox/requests", params={"writes": "1"})).json()
    assert [r["path"] for r in writes["requests"]] == ["/create/client"]
    assert body["rate"]["total"] == 2


async def test_state_endpoint_shows_tickets_with_comments(client: TestClient, api: ApiCall) -> None:
    await api("/create/comment", ticket_id=5001, message="call log")
    state = await (await client.get("/_sandbox/state")).json()
    ticket = next(t for t in state["tickets"] if t["id"] == 5001)
    assert ticket["assignee_id"] == 2 and ticket["tags"] == ["доставка"]
    assert [c["message"] for c in ticket["comments"]] == ["Где мой заказ?", "call log"]
    assert {a["id"] for a in state["agents"]} == {1, 2, 3, 4}
    assert state["clients"][0]["phones"][0]["phone"] == "+7 916 123-45-67"


# -- faults ---------------------------------------------------------------------------------


async def test_fault_429_with_retry_after_then_recovers(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    set_resp = await client.post(
        "/_sandbox/faults", json={"mode": "429", "retry_after": 2, "count": 3}
    )
    assert (await set_resp.json())["count"] == 3
    statuses = []
    for _ in range(4):
        resp = await client.post("/groups", json={"api_token": sandbox.token})
        statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert statuses == [(429, "2"), (429, "2"), (429, "2"), (200, None)]
    assert [e.fault for e in sandbox.requests()] == ["429", "429", "429", None]


async def test_fault_500_is_an_html_page(client: TestClient, sandbox: UsedeskSandbox) -> None:
    sandbox.set_faults(mode="500", count=1, status=503)
    resp = await client.post("/groups", json={"api_token": sandbox.token})
    assert resp.status == 503 and resp.content_type == "text/html"
    assert (await client.post("/groups", json={"api_token": sandbox.token})).status == 200


async def test_fault_error_mode_is_http_200_with_error(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    sandbox.set_faults(mode="error", message="Внутренняя ошибка")
    resp = await client.post("/groups", json={"api_token": sandbox.token})
    assert (resp.status, await resp.json()) == (200, {"error": "Внутренняя ошибка"})


async def test_fault_apply_changes_state_although_the_client_sees_a_failure(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    sandbox.set_faults(mode="500", count=1, apply=True, paths=["/create/ticket"])
    assert (await client.post("/groups", json={"api_token": sandbox.token})).status == 200
    resp = await client.post(
        "/create/ticket",
        json={"api_token": sandbox.token, "subject": "s", "message": "m", "client_id": 1001},
    )
    assert resp.status == 500
    assert 5003 in sandbox.state.tickets
    entry = sandbox.requests("/create/ticket")[0]
    assert entry.applied["ticket_id"] == 5003 and entry.status == 500


async def test_fault_drop_closes_without_response(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    sandbox.set_faults(mode="drop", count=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post("/groups", json={"api_token": sandbox.token})
    assert (await client.post("/groups", json={"api_token": sandbox.token})).status == 200
    assert [(e.fault, e.status) for e in sandbox.requests()] == [("drop", None), (None, 200)]


async def test_fault_latency_delays_every_request(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    await client.post("/_sandbox/faults", json={"latency_ms": 60})
    for _ in range(2):
        started = time.monotonic()
        resp = await client.post("/groups", json={"api_token": sandbox.token})
        assert resp.status == 200
        assert time.monotonic() - started >= 0.055
    cleared = await (await client.post("/_sandbox/faults", json={"mode": "none"})).json()
    assert cleared["latency_ms"] == 0 and cleared["mode"] == "none"


async def test_fault_hang_ends_when_the_client_gives_up(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    sandbox.set_faults(mode="hang", count=1)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            "/groups", json={"api_token": sandbox.token}, timeout=aiohttp.ClientTimeout(total=0.2)
        )
    for _ in range(100):
        if sandbox.faults.hanging == 0:
            break
        await asyncio.sleep(0.02)
    assert sandbox.faults.hanging == 0
    assert [(e.fault, e.status) for e in sandbox.requests()] == [("hang", None)]
    assert (await client.post("/groups", json={"api_token": sandbox.token})).status == 200


async def test_fault_hang_is_released_by_the_control_endpoint(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    sandbox.set_faults(mode="hang")
    pending = asyncio.ensure_future(client.post("/groups", json={"api_token": sandbox.token}))
    async with asyncio.timeout(5):
        await sandbox.faults.wait_hanging()
    assert (await client.post("/_sandbox/release")).status == 200
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await asyncio.wait_for(pending, timeout=5)


async def test_fault_hang_does_not_block_shutdown() -> None:
    sandbox = UsedeskSandbox()
    sandbox.set_faults(mode="hang")
    async with aiohttp.ClientSession() as session:
        async with sandbox.serve() as base_url:
            assert base_url.startswith("http://127.0.0.1:")
            pending = asyncio.ensure_future(
                session.post(f"{base_url}/groups", json={"api_token": sandbox.token})
            )
            async with asyncio.timeout(5):
                await sandbox.faults.wait_hanging()
            stop = time.monotonic()
        assert time.monotonic() - stop < 1.5  # well under the 300 s hang_max_s
        with pytest.raises(aiohttp.ClientConnectionError):
            await asyncio.wait_for(pending, timeout=5)


async def test_fault_paths_and_validation(client: TestClient, sandbox: UsedeskSandbox) -> None:
    sandbox.set_faults(mode="500", paths=["/create/comment"])
    assert (await client.post("/groups", json={"api_token": sandbox.token})).status == 200
    for bad in ({"mode": "teapot"}, {"count": 0}, {"retry_after": -1}, {"colour": "red"}):
        resp = await client.post("/_sandbox/faults", json=bad)
        assert resp.status == 400
    with pytest.raises(FaultConfigError):
        sandbox.set_faults(status=404)
    assert (await (await client.delete("/_sandbox/faults")).json())["mode"] == "none"


async def test_control_endpoints_are_never_faulted(
    client: TestClient, sandbox: UsedeskSandbox
) -> None:
    sandbox.set_faults(mode="drop")
    assert (await client.get("/_sandbox/state")).status == 200
    assert (await client.get("/_sandbox/faults")).status == 200


# -- rate observer --------------------------------------------------------------------------


def brute_force_max(times: list[float], window: float) -> int:
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=40),
    st.sampled_from([0.5, 1.0, 2.5]),
)
def test_rate_window_matches_brute_force(times: list[float], window: float) -> None:
    clock = iter(times)
    observer = RateObserver(monotonic=lambda: next(clock))
    for _ in times:
        observer.record("/x")
    assert observer.max_in_window(window) == brute_force_max(times, window)


async def test_rate_windows_over_http(aiohttp_client: Any) -> None:
    mono = FakeMonotonic()
    sandbox = UsedeskSandbox(monotonic=mono)
    client = await aiohttp_client(create_app(sandbox))
    for offset in (0.0, 0.2, 0.4, 1.5, 30.0, 70.0):
        mono.now = 1000.0 + offset
        await client.post("/groups", json={"api_token": sandbox.token})
    assert sandbox.max_requests_in_window(1.0) == 3
    assert sandbox.max_requests_in_window(60.0) == 5
    rate = await (await client.get("/_sandbox/rate", params={"window": "1"})).json()
    assert (rate["max"], rate["total"]) == (3, 6)
    summary = (await (await client.get("/_sandbox/requests")).json())["rate"]
    assert summary == {"total": 6, "max_per_1s": 3, "max_per_60s": 5}


# -- seed and reset -------------------------------------------------------------------------


def test_seed_files_json_and_toml(tmp_path: Path) -> None:
    seed = {
        "api_token": "t1",
        "agents": [{"id": 7, "name": "A", "email": "a@x"}],
        "clients": [{"id": 40, "name": "C", "phones": ["8 (916) 000-11-22"]}],
    }
    json_file = tmp_path / "seed.json"
    json_file.write_text(json.dumps(seed), encoding="utf-8")
    toml_file = tmp_path / "seed.toml"
    toml_file.write_text(
        'api_token = "t2"\n[[clients]]\nid = 5\nname = "T"\nphones = ["+7 916 000-11-22"]\n',
        encoding="utf-8",
    )
    from_json = UsedeskSandbox.from_file(json_file)
    assert from_json.token == "t1" and from_json.state.clients[40].phones[0].phone == (
        "8 (916) 000-11-22"
    )
    assert from_json.call("/create/client", {"phone": "79160000000"})[1]["client_id"] == 41
    from_toml = UsedeskSandbox(seed=toml_file, api_token="override")
    assert from_toml.token == "override" and 5 in from_toml.state.clients
    assert load_seed(None)["api_token"] == DEFAULT_TOKEN


@pytest.mark.parametrize(
    "seed",
    [
        {"tickets": [{"id": 1, "subject": "s", "client_id": 9}]},
        {"agents": [{"id": 1, "name": "a", "email": "e", "groups": [5]}]},
        {"clients": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]},
        {"client": []},
        {"clients": [{"name": "no id"}]},
    ],
)
def test_inconsistent_seeds_are_refused(seed: dict[str, Any]) -> None:
    with pytest.raises(SeedError):
        UsedeskSandbox(seed=seed)


async def test_reset_restores_or_replaces_the_seed(
    client: TestClient, api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    await api("/create/client", phone="79160000000")
    sandbox.set_faults(latency_ms=5)
    assert (await (await client.post("/_sandbox/reset")).json())["clients"] == 3
    assert sandbox.log == [] and sandbox.faults.plan.latency_ms == 0
    resp = await client.post("/_sandbox/reset", json=many_clients_seed(2))
    assert (await resp.json())["clients"] == 2
    assert sorted(sandbox.state.clients) == [1, 2] and sandbox.token == DEFAULT_TOKEN
    assert (await client.post("/_sandbox/reset", json={"tickets": [{"id": 1}]})).status == 400


def test_in_process_call_checks_the_token_and_logs(sandbox: UsedeskSandbox) -> None:
    assert sandbox.call("/groups", {"api_token": "bad"}, with_token=False)[0] == 401
    status, body = sandbox.call(
        "/create/ticket", {"subject": "s", "message": "m", "client_id": 1002}
    )
    assert (status, body["ticket_id"]) == (200, 5003)
    assert [e.method for e in sandbox.log] == ["CALL", "CALL"]
    assert sandbox.rate.summary()["total"] == 0


# -- standalone -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
async def test_standalone_module_serves_a_seed_file(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(
        json.dumps({"api_token": "cli-token", **many_clients_seed(3)}), encoding="utf-8"
    )
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "plugins.usedesk.sandbox",
        "--port",
        str(port),
        "--seed",
        str(seed_file),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    resp = await session.post(
                        f"http://127.0.0.1:{port}/clients", json={"api_token": "cli-token"}
                    )
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the standalone sandbox did not start")
            assert [c["id"] for c in await resp.json()] == [1, 2, 3]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) is not None


# -- clients deleted and merged ---------------------------------------------------------------


async def test_update_client_merge_id_moves_numbers_and_tickets_and_retires_the_id(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    # 1002 «Мария Сидорова» is merged into 1001 «Иван Петров» (who keeps ticket 5001).
    tickets_of_1002 = sandbox.state.client_ticket_ids(1002)
    assert await api("/update/client", client_id=1001, merge_id=1002) == (
        200,
        {"client_id": 1001, "status": True},
    )
    survivor = sandbox.state.clients[1001]
    assert [p.phone for p in survivor.phones] == [
        "+7 916 123-45-67",
        "8 (495) 123-45-67",
        "+7(903)555-00-11",
    ]
    assert set(tickets_of_1002) <= set(sandbox.state.client_ticket_ids(1001))
    assert await api("/client", client_id=1002) == (200, {"error": "Client not found"})
    refused = await api("/create/ticket", subject="s", message="m", client_id=1002)
    assert refused == (200, {"error": "The selected client_id is invalid."})


async def test_a_refused_merge_changes_nothing(api: ApiCall, sandbox: UsedeskSandbox) -> None:
    assert await api("/update/client", client_id=1001, merge_id=99, name="X") == (
        200,
        {"error": "The selected merge_id is invalid."},
    )
    assert sandbox.state.clients[1001].name == "Иван Петров"
    assert await api("/update/client", client_id=1001, merge_id=1001) == (
        200,
        {"error": "A client can not be merged with itself."},
    )


async def test_control_endpoints_delete_and_merge_clients(
    client: TestClient, api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    resp = await client.post("/_sandbox/clients/1001/delete")
    assert (resp.status, await resp.json()) == (200, {"status": "deleted", "client_id": 1001})
    assert 1001 not in sandbox.state.clients and sandbox.state.client_ticket_ids(1001) == []
    assert await api("/ticket", ticket_id=5001) == (200, {"error": "Ticket not found"})
    resp = await client.post("/_sandbox/clients/1003/merge", json={"into": 1002})
    assert await resp.json() == {"status": "merged", "client_id": 1003, "into": 1002}
    assert 1003 not in sandbox.state.clients
    for path, body, error in [
        ("/_sandbox/clients/1001/delete", None, "no client 1001"),
        ("/_sandbox/clients/1002/merge", {}, 'merge needs {"into": <the surviving client id>}'),
        ("/_sandbox/clients/1002/merge", {"into": 7}, "Client not found"),
    ]:
        resp = await client.post(path, json=body)
        assert (resp.status, await resp.json()) == (400, {"error": error})


async def test_create_client_with_merge_id_absorbs_the_other(
    api: ApiCall, sandbox: UsedeskSandbox
) -> None:
    assert await api("/create/client", name="Новый", merge_id=99) == (
        200,
        {"error": "The selected merge_id is invalid."},
    )
    assert len(sandbox.state.clients) == 3  # refused: nothing made
    status, body = await api("/create/client", name="Новый", merge_id=1001)
    assert (status, sorted(body)) == (200, ["client_id", "status"])
    assert 1001 not in sandbox.state.clients
    assert sandbox.state.client_ticket_ids(body["client_id"]) == [5001]
