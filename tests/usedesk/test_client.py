"""UsedeskClient: request shapes, response parsing, error classification, limiter wiring.

HTTP is mocked with aioresponses; one loopback test at the end proves the real timeout and wire
format. Time is a FakeClock, so rate-limit waits are recorded, never slept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from connector_core.clock import FakeClock
from connector_core.errors import AuthError, CrmError, InvalidRequestError, TransientError
from plugins.usedesk.client import (
    Agent,
    ClientCard,
    ClientSummary,
    TicketComment,
    TicketDetail,
    TicketSummary,
    UnknownIdError,
    UsedeskClient,
    parse_retry_after,
)
from tests.http_mock import CompatResponse, Mocked

TOKEN = "sekret-TOKEN-9f3a1c77"
BASE = "https://api.usedesk.ru"


def url(method: str) -> str:
    return f"{BASE}/{method}"


class FakeTime:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with Mocked() as m:
        yield m


@pytest.fixture
async def client(ft: FakeTime) -> AsyncIterator[UsedeskClient]:
    async with UsedeskClient(api_token=TOKEN, clock=ft.clock, sleep=ft.sleep) as c:
        yield c


def sent(m: aioresponses, method: str, index: int = -1) -> dict[str, Any]:
    """The JSON body of a recorded POST to ``method``."""
    calls = m.requests[("POST", URL(url(method)))]
    return calls[index].kwargs["json"]


def n_calls(m: aioresponses, method: str) -> int:
    return len(m.requests.get(("POST", URL(url(method))), []))


# --------------------------------------------------------------------------------------------
# Construction, repr, session ownership
# --------------------------------------------------------------------------------------------


def test_repr_never_shows_the_token() -> None:
    c = UsedeskClient(api_token=TOKEN, base_url="https://desk.example.com/uapi/")
    assert TOKEN not in repr(c)
    assert TOKEN not in str(c)
    assert "https://desk.example.com/uapi" in repr(c)
    assert c.base_url == "https://desk.example.com/uapi"  # trailing slash dropped


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"api_token": ""}, "api_token"),
        ({"api_token": "   "}, "api_token"),
        ({"api_token": TOKEN, "base_url": "api.usedesk.ru"}, "base_url"),
        ({"api_token": TOKEN, "base_url": "ftp://api.usedesk.ru"}, "base_url"),
        ({"api_token": TOKEN, "timeout": 0}, "timeout"),
    ],
)
def test_bad_construction_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UsedeskClient(**kwargs)


async def test_shared_session_is_used_and_left_open(mocked: aioresponses) -> None:
    mocked.post(url("users"), payload=[])
    async with aiohttp.ClientSession() as session:
        async with UsedeskClient(api_token=TOKEN, session=session) as c:
            await c.check_auth()
        assert not session.closed


async def test_own_session_is_closed_and_recreated_on_reuse(mocked: aioresponses) -> None:
    mocked.post(url("users"), payload=[], repeat=True)
    c = UsedeskClient(api_token=TOKEN)
    await c.check_auth()
    session = c._session
    assert session is not None and not session.closed
    await c.close()
    assert session.closed
    await c.check_auth()  # a closed client opens a fresh session rather than crashing
    await c.close()
    assert n_calls(mocked, "users") == 2


# --------------------------------------------------------------------------------------------
# Request shapes and parsing, method by method
# --------------------------------------------------------------------------------------------


async def test_every_request_is_a_json_post_with_token_timeout_and_no_redirects(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("users"), payload=[])
    await client.check_auth()
    call = mocked.requests[("POST", URL(url("users")))][0]
    assert call.kwargs["json"] == {"api_token": TOKEN}
    assert isinstance(call.kwargs["timeout"], aiohttp.ClientTimeout)
    assert call.kwargs["timeout"].total == 10.0
    assert call.kwargs["allow_redirects"] is False


async def test_check_auth_raises_auth_error_for_a_refused_token(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("users"), status=401, payload={"error": "Unauthorized"})
    with pytest.raises(AuthError, match="HTTP 401"):
        await client.check_auth()


async def test_search_clients_shape_and_flat_strings_split(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(
        url("clients"),
        payload=[
            {
                "id": "12",
                "name": "Иван",
                "emails": "a@x.ru, b@x.ru",
                "phone": "79161234567, 8 (495) 111-22-33",
                "tickets": ["5", 7],
            },
            {"id": 13, "name": None, "emails": None, "phone": None, "tickets": []},
        ],
    )
    result = await client.search_clients("9161234567", search_type="full_match", offset=2)

    assert sent(mocked, "clients") == {
        "api_token": TOKEN,
        "query": "9161234567",
        "search_type": "full_match",
        "offset": 2,
    }
    assert result == [
        ClientSummary(
            id=12,
            name="Иван",
            phones=["79161234567", "8 (495) 111-22-33"],
            emails=["a@x.ru", "b@x.ru"],
            ticket_ids=[5, 7],
        ),
        ClientSummary(id=13, name="", phones=[], emails=[], ticket_ids=[]),
    ]


async def test_search_clients_accepts_a_clients_wrapper(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("clients"), payload={"clients": [{"id": 1, "name": "A", "phone": "7999"}]})
    result = await client.search_clients("7999")
    assert [c.id for c in result] == [1]
    assert sent(mocked, "clients")["search_type"] == "partial_match"
    assert sent(mocked, "clients")["offset"] == 0


async def test_search_clients_object_instead_of_array_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("clients"), payload={"id": 1, "name": "not a list"})
    with pytest.raises(InvalidRequestError, match="where an array was expected"):
        await client.search_clients("x")


def answered(**kwargs: Any) -> CallbackResult:
    """A callback's reply, built with the same aiohttp 3.14 shim as registered replies."""
    return CallbackResult(response_class=CompatResponse, **kwargs)


def serve_clients(
    m: aioresponses, pages: dict[tuple[str, int], list[dict[str, Any]]]
) -> list[tuple[str, int]]:
    """``/clients`` answering each (query, offset) with its page (empty if not given), whatever
    order they come in; returns the (query, offset) asked, in order."""
    asked: list[tuple[str, int]] = []

    def answer(_: Any, **kwargs: Any) -> CallbackResult:
        body = kwargs["json"]
        asked.append((body["query"], body["offset"]))
        assert body["search_type"] == "partial_match"
        return answered(payload=pages.get((body["query"], body["offset"]), []))

    m.post(url("clients"), callback=answer, repeat=True)
    return asked


async def test_find_clients_by_phone_sends_the_digit_tail_and_both_groupings(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    asked = serve_clients(mocked, {})
    assert await client.find_clients_by_phone("+79161234567") == []
    # One query per way the last seven digits are stored: as a run, "123-45-67", "123 45 67".
    assert asked == [("1234567", 0), ("123-45-67", 0), ("123 45 67", 0)]


async def test_find_clients_by_phone_with_wildcards_sends_one_pattern(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    ivan = [{"id": 7, "name": "Иван", "phone": "+7 916 123-45-67"}]
    asked = serve_clients(mocked, {("123%45%67", 0): ivan})
    found = await client.find_clients_by_phone("+79161234567", wildcards=True)
    assert [c.id for c in found] == [7] and asked == [("123%45%67", 0)]


@pytest.mark.parametrize(
    ("pages", "answer"),
    [
        # "%" matched clients without a "%" in them: the wildcard works.
        ({("%", 0): [{"id": 1, "name": "Анна", "phone": "79160000001"}]}, True),
        # Only a client with a literal "%" in its name: the query was taken literally.
        ({("%", 0): [{"id": 2, "name": "Скидка 10%", "phone": None}]}, False),
    ],
)
async def test_search_takes_wildcards_reads_the_hits_of_a_bare_percent(
    client: UsedeskClient, mocked: aioresponses, pages: Any, answer: bool
) -> None:
    serve_clients(mocked, pages)
    assert await client.search_takes_wildcards() is answer


@pytest.mark.parametrize(("listed", "answer"), [([{"id": 1, "name": "Анна"}], False), ([], None)])
async def test_no_hit_for_percent_is_literal_search_or_an_empty_account(
    client: UsedeskClient, mocked: aioresponses, listed: list[dict[str, Any]], answer: bool | None
) -> None:
    def reply(_: Any, **kwargs: Any) -> CallbackResult:
        # The question ("%": nothing), then the list without a query.
        return answered(payload=[] if "query" in kwargs["json"] else listed)

    mocked.post(url("clients"), callback=reply, repeat=True)
    assert await client.search_takes_wildcards() is answer


async def test_find_clients_by_phone_groups_the_digits_as_the_country_writes_them(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    asked = serve_clients(mocked, {})
    await client.find_clients_by_phone("+16502530000", region="US")
    assert asked == [("2530000", 0), ("253-0000", 0), ("253 0000", 0)]


async def test_find_clients_by_phone_needs_one_query_when_the_grouping_has_no_separator(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    berlin = [{"id": 4, "name": "Berlin", "phone": "+49 30 12345678"}]
    asked = serve_clients(mocked, {("2345678", 0): berlin})
    assert [c.id for c in await client.find_clients_by_phone("+493012345678")] == [4]
    assert asked == [("2345678", 0)]


async def test_find_clients_by_phone_keeps_every_spelling_of_the_number_and_sorts_by_id(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    run = [
        {"id": 10, "name": "eight", "phone": "89161234567"},
        {"id": 20, "name": "second phone", "phone": "74950000000, 79161234567"},
        {"id": 5, "name": "national", "phone": "9161234567"},
        {"id": 31, "name": "brackets", "phone": "+7(916)1234567"},
        # `%like%` also returns numbers merely containing the digits: these must be dropped.
        {"id": 1, "name": "longer", "phone": "79161234567890"},
        {"id": 2, "name": "other area", "phone": "74951234567"},
        {"id": 3, "name": "other country", "phone": "379161234567"},
        {"id": 6, "name": "India", "phone": "919161234567"},
        {"id": 7, "name": "no area code", "phone": "1234567"},
        {"id": 8, "name": "no phone", "phone": None},
    ]
    dashes = [
        {"id": 30, "name": "plus", "phone": "+7 916 123-45-67"},
        {"id": 40, "name": "trunk", "phone": "8 (916) 123-45-67"},
        {"id": 9, "name": "other area", "phone": "+7 495 123-45-67"},
        {"id": 10, "name": "eight", "phone": "89161234567"},  # found twice, kept once
    ]
    spaces = [{"id": 50, "name": "spaces", "phone": "8 916 123 45 67"}]
    serve_clients(mocked, {("1234567", 0): run, ("123-45-67", 0): dashes, ("123 45 67", 0): spaces})
    result = await client.find_clients_by_phone("89161234567")
    assert [c.id for c in result] == [5, 10, 20, 30, 31, 40, 50]


async def test_find_clients_by_phone_reads_further_pages_only_when_a_page_is_full(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    full_page = [{"id": i, "name": "x", "phone": f"7000{i:07d}"} for i in range(100, 200)]
    hit = [{"id": 7, "name": "hit", "phone": "79161234567"}]
    asked = serve_clients(mocked, {("1234567", 0): full_page, ("1234567", 1): hit})
    result = await client.find_clients_by_phone("79161234567")
    assert [c.id for c in result] == [7]
    assert asked == [("1234567", 0), ("1234567", 1), ("123-45-67", 0), ("123 45 67", 0)]


async def test_find_clients_by_phone_stops_paging_a_query_after_two_full_pages(
    client: UsedeskClient, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    full_page = [{"id": i, "name": "x", "phone": f"7000{i:07d}"} for i in range(100, 200)]
    pages = {(q, offset): full_page for q in ("1234567", "123-45-67") for offset in range(5)}
    asked = serve_clients(mocked, pages)
    with caplog.at_level(logging.WARNING, logger="plugins.usedesk.client"):
        assert await client.find_clients_by_phone("79161234567") == []
    assert len(asked) == 5  # two pages for each full query, one for the third: the bound
    assert "'1234567' filled 2 pages" in caplog.text
    assert "'123-45-67' filled 2 pages" in caplog.text


async def test_find_clients_by_phone_reads_national_spellings_in_the_given_region(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    serve_clients(
        mocked,
        {
            ("123 4567", 0): [{"id": 1, "name": "KZ", "phone": "8 (701) 123 4567"}],
            ("123 45 67", 0): [{"id": 2, "name": "UZ", "phone": "90 123 45 67"}],
        },
    )
    assert [c.id for c in await client.find_clients_by_phone("77011234567", region="KZ")] == [1]
    assert [c.id for c in await client.find_clients_by_phone("998901234567", region="UZ")] == [2]
    # The same stored "8 (701) 123 4567" read in Uzbekistan is no Kazakh number.
    assert await client.find_clients_by_phone("+77011234567", region="UZ") == []


async def test_find_clients_by_phone_sends_its_queries_one_after_another(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    in_flight, most = 0, 0

    async def answer(_: Any, **kwargs: Any) -> CallbackResult:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0)  # let any other query of the lookup start meanwhile
        in_flight -= 1
        return answered(payload=[])

    mocked.post(url("clients"), callback=answer, repeat=True)
    await client.find_clients_by_phone("79161234567")
    assert n_calls(mocked, "clients") == 3 and most == 1


async def test_find_clients_by_phone_stops_at_a_failed_query_with_its_error(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    asked: list[str] = []

    def answer(_: Any, **kwargs: Any) -> CallbackResult:
        asked.append(kwargs["json"]["query"])
        if kwargs["json"]["query"] == "123-45-67":
            return answered(status=502, body="Bad Gateway")
        return answered(payload=[])

    mocked.post(url("clients"), callback=answer, repeat=True)
    with pytest.raises(TransientError, match="HTTP 502"):
        await client.find_clients_by_phone("79161234567")
    assert asked == ["1234567", "123-45-67"]


@pytest.mark.parametrize("number", ["", "anonymous", "101", "+7 12", "1234"])
async def test_find_clients_by_phone_refuses_what_is_not_a_number_without_a_request(
    client: UsedeskClient, mocked: aioresponses, number: str
) -> None:
    with pytest.raises(InvalidRequestError, match="at least 5 digits"):
        await client.find_clients_by_phone(number)
    assert n_calls(mocked, "clients") == 0


async def test_get_client_unwraps_the_one_element_array(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(
        url("client"),
        payload=[
            {
                "client": {
                    "id": 2,
                    "name": "Пётр",
                    "note": "vip caller",
                    "vip": 1,
                    "spammer": 0,
                    "tickets": [2, "3000640"],
                    "emails": [{"id": 2, "email": "p@x.ru", "client_id": 2}],
                    "phones": [{"id": 9, "phone": "79161234567", "type": "mobile"}],
                },
                "emails": [None],
                "phones": [{"phone": "74950000000"}, {"phone": "79161234567"}],
            }
        ],
    )
    card = await client.get_client(2)
    assert sent(mocked, "client") == {"api_token": TOKEN, "client_id": 2}
    assert card == ClientCard(
        id=2,
        name="Пётр",
        phones=["79161234567", "74950000000"],
        emails=["p@x.ru"],
        ticket_ids=[2, 3000640],
        note="vip caller",
        vip=True,
        spammer=False,
    )


async def test_get_client_wrong_shape_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("client"), payload=["just a string"])
    with pytest.raises(InvalidRequestError, match="one-element array"):
        await client.get_client(2)


async def test_create_client_shape_and_id(client: UsedeskClient, mocked: aioresponses) -> None:
    mocked.post(url("create/client"), payload={"client_id": "1234", "status": True})
    new_id = await client.create_client(name="Клиент 79161234567", phone_digits="79161234567")
    assert new_id == 1234
    assert sent(mocked, "create/client") == {
        "api_token": TOKEN,
        "name": "Клиент 79161234567",
        "phone": "79161234567",
        "phone_type": "mobile",
    }


async def test_create_client_falls_back_to_client_id_inside_client(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/client"), payload={"client": {"id": 77}, "status": True})
    assert await client.create_client(name="X", phone_digits="4915112345678") == 77


async def test_create_client_without_any_id_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/client"), payload={"status": True})
    with pytest.raises(InvalidRequestError, match="client_id"):
        await client.create_client(name="X", phone_digits="79161234567")


async def test_create_client_status_false_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/client"), payload={"client_id": 5, "status": False})
    with pytest.raises(InvalidRequestError, match="did not confirm"):
        await client.create_client(name="X", phone_digits="79161234567")


@pytest.mark.parametrize(
    "phone",
    ["+79161234567", "7 916 123 45 67", "916123456", "7916123456789012", "７９１６１２３４５６７"],
)
async def test_create_client_validates_phone_before_sending(
    client: UsedeskClient, mocked: aioresponses, phone: str
) -> None:
    with pytest.raises(InvalidRequestError, match="10-15 digits"):
        await client.create_client(name="X", phone_digits=phone)
    assert n_calls(mocked, "create/client") == 0


async def test_create_client_rejects_unknown_phone_type(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    with pytest.raises(InvalidRequestError, match="phone_type"):
        await client.create_client(name="X", phone_digits="79161234567", phone_type="cell")
    assert n_calls(mocked, "create/client") == 0


async def test_add_client_phone_posts_update_client(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("update/client"), payload={"client_id": 5, "status": True})
    await client.add_client_phone(5, "74950000000")
    assert sent(mocked, "update/client") == {
        "api_token": TOKEN,
        "client_id": 5,
        "phone": "74950000000",
        "phone_type": "mobile",
    }


async def test_list_tickets_shape_and_status_variants(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(
        url("tickets"),
        payload=[
            {"id": "9", "subject": "a", "status": 8, "client_id": "5", "assignee_id": "0"},
            {"id": 8, "subject": "b", "status": {"id": "1", "name": "Open"}, "group": "3"},
            {"id": 7, "subject": "c", "status_id": "6", "assignee_id": 42, "type": "task"},
            {"id": 6, "subject": "d"},
        ],
    )
    tickets = await client.list_tickets(client_id=5, statuses=[1, 5, 6, 8])
    assert sent(mocked, "tickets") == {
        "api_token": TOKEN,
        "client_id": 5,
        "fstatus": "1,5,6,8",
        "sort": "id",
        "order": "desc",
        "offset": 0,
    }
    assert tickets[0] == TicketSummary(id=9, subject="a", status_id=8, client_id=5)
    assert (tickets[1].status_id, tickets[1].group_id) == (1, 3)
    assert (tickets[2].status_id, tickets[2].assignee_id, tickets[2].type) == (6, 42, "task")
    assert tickets[3].status_id is None
    assert all(isinstance(t.id, int) for t in tickets)


async def test_list_tickets_without_statuses_sends_no_filter(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("tickets"), payload=[])
    assert await client.list_tickets(client_id=5, order="asc", offset=1) == []
    body = sent(mocked, "tickets")
    assert "fstatus" not in body
    assert (body["order"], body["offset"]) == ("asc", 1)


async def test_list_tickets_with_an_empty_status_list_asks_nothing(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    assert await client.list_tickets(client_id=5, statuses=[]) == []
    assert n_calls(mocked, "tickets") == 0


@pytest.mark.parametrize("statuses", [[0], [11], [True]])
async def test_list_tickets_rejects_unknown_status_ids(
    client: UsedeskClient, mocked: aioresponses, statuses: list[int]
) -> None:
    with pytest.raises(InvalidRequestError, match="status"):
        await client.list_tickets(client_id=5, statuses=statuses)
    assert n_calls(mocked, "tickets") == 0


async def test_list_tickets_object_instead_of_array_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("tickets"), payload={"ticket": {"id": 1}})
    with pytest.raises(InvalidRequestError, match=r"object with keys \['ticket'\]"):
        await client.list_tickets(client_id=5)


async def test_get_ticket_parses_ticket_tags_and_comments(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(
        url("ticket"),
        payload={
            "ticket": {
                "id": "2265179",
                "status_id": "1",
                "subject": "Звонок",
                "client_id": "261702",
                "assignee_id": "2",
                "group": "0",
                "channel_id": 66235,
                "type": "question",
                "priority": "medium",
                "additional_id": "call-1",
                "last_updated_at": "2017-03-01 14:30:49",
            },
            "comments": [
                {
                    "id": "2658287",
                    "message": "hi",
                    "from": "client",
                    "type": "public",
                    "user_id": None,
                    "published_at": "2017-03-01 14:30:49",
                },
            ],
            "tags": [{"id": 1, "name": "sipuni"}, "missed"],
        },
    )
    ticket = await client.get_ticket(2265179)
    assert sent(mocked, "ticket") == {"api_token": TOKEN, "ticket_id": 2265179}
    assert ticket == TicketDetail(
        id=2265179,
        subject="Звонок",
        status_id=1,
        client_id=261702,
        assignee_id=2,
        group_id=None,
        channel_id=66235,
        type="question",
        priority="medium",
        additional_id="call-1",
        last_updated_at="2017-03-01 14:30:49",
        tags=["sipuni", "missed"],
        comments=[
            TicketComment(
                id=2658287,
                message="hi",
                type="public",
                from_="client",
                user_id=None,
                published_at="2017-03-01 14:30:49",
            )
        ],
    )


async def test_get_ticket_without_ticket_object_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("ticket"), payload=[{"id": 1}])
    with pytest.raises(InvalidRequestError, match="where an object was expected"):
        await client.get_ticket(1)


async def test_create_ticket_full_shape(client: UsedeskClient, mocked: aioresponses) -> None:
    mocked.post(
        url("create/ticket"),
        payload={"status": "success", "ticket_id": "2261907", "message_status": "delivered"},
    )
    ticket_id = await client.create_ticket(
        subject="Входящий звонок 79161234567",
        message="<p>Длительность: 42 с</p>",
        client_id=5,
        type="incident",
        status=1,
        tag=["sipuni", "missed"],
        assignee_id=42,
        additional_id="sipuni-call-1",
        channel_id=66235,
    )
    assert ticket_id == 2261907
    assert sent(mocked, "create/ticket") == {
        "api_token": TOKEN,
        "subject": "Входящий звонок 79161234567",
        "message": "<p>Длительность: 42 с</p>",
        "client_id": 5,
        "type": "incident",
        "status": 1,
        "private_comment": True,
        "tag": "sipuni, missed",
        "assignee_id": 42,
        "additional_id": "sipuni-call-1",
        "channel_id": 66235,
    }


async def test_create_ticket_defaults_omit_optional_fields(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/ticket"), payload={"status": "success", "ticket_id": 1})
    await client.create_ticket(subject="s", message="m", client_id=5, tag="sipuni,  missed")
    assert sent(mocked, "create/ticket") == {
        "api_token": TOKEN,
        "subject": "s",
        "message": "m",
        "client_id": 5,
        "type": "question",
        "status": 8,  # New
        "private_comment": True,
        "tag": "sipuni, missed",  # one comma+space string, never a `tags` array
    }


async def test_create_ticket_public_first_message_omits_private_comment(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/ticket"), payload={"status": "success", "ticket_id": 1})
    await client.create_ticket(subject="s", message="m", client_id=5, private_comment=False)
    body = sent(mocked, "create/ticket")
    assert "private_comment" not in body
    assert "tag" not in body


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"type": "call"}, "ticket type"),
        ({"status": 42}, "status"),
        ({"subject": "  "}, "subject must not be empty"),
        ({"subject": "x" * 256}, "at most 255"),
    ],
)
async def test_create_ticket_validates_before_sending(
    client: UsedeskClient, mocked: aioresponses, kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"subject": "s", "message": "m", "client_id": 5, **kwargs}
    with pytest.raises(InvalidRequestError, match=match):
        await client.create_ticket(**args)
    assert n_calls(mocked, "create/ticket") == 0


async def test_update_ticket_is_silent_by_default(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("update/ticket"), payload={"status": "success"})
    await client.update_ticket(7, assignee_id=42, tag="sipuni", type="task", status=6)
    assert sent(mocked, "update/ticket") == {
        "api_token": TOKEN,
        "ticket_id": 7,
        "assignee_id": 42,
        "status": 6,
        "tag": "sipuni",
        "type": "task",
        "silent": True,
    }


async def test_update_ticket_not_silent_when_asked(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("update/ticket"), payload={"status": "success"})
    await client.update_ticket(7, assignee_id=42, silent=False)
    assert sent(mocked, "update/ticket") == {"api_token": TOKEN, "ticket_id": 7, "assignee_id": 42}


async def test_update_ticket_with_nothing_to_change_sends_nothing(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    await client.update_ticket(7)
    await client.update_ticket(7, tag=[])
    assert n_calls(mocked, "update/ticket") == 0


async def test_update_ticket_sends_a_priority_and_refuses_one_usedesk_lacks(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("update/ticket"), payload={"status": "success"})
    await client.update_ticket(7, priority="urgent", tag=["sipuni", "не перезвонили"])
    assert sent(mocked, "update/ticket") == {
        "api_token": TOKEN,
        "ticket_id": 7,
        "priority": "urgent",
        "tag": "sipuni, не перезвонили",
        "silent": True,
    }
    with pytest.raises(InvalidRequestError, match="ticket priority"):
        await client.update_ticket(7, priority="high")


async def test_update_ticket_failure_status_is_invalid(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("update/ticket"), payload={"status": "fail"})
    with pytest.raises(InvalidRequestError, match="status='fail'"):
        await client.update_ticket(7, assignee_id=1)


async def test_create_comment_shape(client: UsedeskClient, mocked: aioresponses) -> None:
    mocked.post(url("create/comment"), payload={"status": "success", "comment_id": "123"})
    comment_id = await client.create_comment(7, message="<a href='x'>Запись</a>", user_id=42)
    assert comment_id == 123
    assert sent(mocked, "create/comment") == {
        "api_token": TOKEN,
        "ticket_id": 7,
        "message": "<a href='x'>Запись</a>",
        "type": "private",
        "from": "user",
        "user_id": 42,
    }


async def test_create_comment_without_user_and_bad_author(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/comment"), payload={"status": "success", "comment_id": 1})
    await client.create_comment(7, message="m", type="public", from_="client")
    body = sent(mocked, "create/comment")
    assert (body["type"], body["from"]) == ("public", "client")
    assert "user_id" not in body
    with pytest.raises(InvalidRequestError, match="from"):
        await client.create_comment(7, message="m", from_="trigger")


async def test_list_users_sends_user_type_only_when_given(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("users"), payload=[{"id": "558", "name": "Ann", "email": "a@x.ru"}])
    mocked.post(url("users"), payload=[{"id": 1, "name": "Boss", "role": "admin"}])
    assert await client.list_users() == [Agent(id=558, name="Ann", email="a@x.ru")]
    assert sent(mocked, "users", 0) == {"api_token": TOKEN}
    assert await client.list_users("admin") == [Agent(id=1, name="Boss", role="admin")]
    assert sent(mocked, "users", 1) == {"api_token": TOKEN, "user_type": "admin"}
    with pytest.raises(InvalidRequestError, match="user_type"):
        await client.list_users("owner")


async def test_users_all_asks_every_type_and_merges(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("users"), payload=[{"id": 5, "name": "Emp"}, {"id": 2, "name": "Both"}])
    mocked.post(url("users"), payload=[{"id": 1, "name": "Adm"}, {"id": 2, "name": "Both"}])
    mocked.post(url("users"), payload=[{"id": 9, "name": "Sup"}])
    agents = await client.users_all()
    assert [sent(mocked, "users", i)["user_type"] for i in range(3)] == [
        "employee",
        "admin",
        "support",
    ]
    assert [(a.id, a.role) for a in agents] == [
        (1, "admin"),
        (2, "employee"),
        (5, "employee"),
        (9, "support"),
    ]


# --------------------------------------------------------------------------------------------
# Error classification
# --------------------------------------------------------------------------------------------


async def test_http_200_with_error_key_is_invalid_and_quotes_usedesk(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("update/ticket"), payload={"error": "Assignee not found", "code": 112})
    with pytest.raises(InvalidRequestError) as info:
        await client.update_ticket(7, assignee_id=999)
    assert "Assignee not found" in info.value.message
    assert "code 112" in info.value.message
    assert "/update/ticket" in info.value.message
    assert info.value.integration == "usedesk"


@pytest.mark.parametrize(
    ("method", "error", "field"),
    [
        ("create/ticket", "The selected client_id is invalid.", "client_id"),
        ("update/ticket", "The selected assignee_id is invalid.", "assignee_id"),
        ("create/comment", "The selected user_id is invalid.", "user_id"),
        ("create/comment", "Ticket not found", "ticket_id"),
        ("client", "Client not found", "client_id"),
    ],
)
async def test_an_id_usedesk_does_not_know_is_its_own_error_naming_the_field(
    client: UsedeskClient, mocked: aioresponses, method: str, error: str, field: str
) -> None:
    mocked.post(url(method), payload={"error": error})
    with pytest.raises(UnknownIdError) as info:
        await client._call(method, {})
    assert info.value.field == field
    assert isinstance(info.value, InvalidRequestError)  # unhandled, it dead-letters as before
    assert info.value.message == f"Usedesk rejected POST /{method}: {error}"


async def test_an_unknown_id_with_http_404_is_classified_the_same(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/ticket"), status=404, payload={"error": "Client not found"})
    with pytest.raises(UnknownIdError, match="HTTP 404: Client not found") as info:
        await client._call("create/ticket", {})
    assert info.value.field == "client_id"


@pytest.mark.parametrize(
    "error",
    [
        "The selected status is invalid.",  # a value, not an id
        "The selected type is invalid.",
        "The client_id field is required.",
        "Assignee not found for client_id 5",
        "Something about the selected client_id is invalid.",
    ],
)
async def test_other_refusals_are_not_unknown_ids(
    client: UsedeskClient, mocked: aioresponses, error: str
) -> None:
    mocked.post(url("create/ticket"), payload={"error": error})
    with pytest.raises(InvalidRequestError) as info:
        await client._call("create/ticket", {})
    assert not isinstance(info.value, UnknownIdError)


def test_the_account_differs_by_base_url_and_token_and_never_shows_the_token() -> None:
    one = UsedeskClient(api_token=TOKEN, base_url=BASE)
    assert one.account == UsedeskClient(api_token=TOKEN, base_url=BASE + "/").account
    assert one.account != UsedeskClient(api_token=TOKEN + "x", base_url=BASE).account
    assert one.account != UsedeskClient(api_token=TOKEN, base_url="https://b.example").account
    assert TOKEN not in one.account and len(one.account) == 16


@pytest.mark.parametrize(
    "error", ["Invalid api_token", "Неверный токен", "Ошибка авторизации", "Unauthorized"]
)
async def test_http_200_with_token_error_is_auth_error(
    client: UsedeskClient, mocked: aioresponses, error: str
) -> None:
    mocked.post(url("users"), payload={"error": error})
    with pytest.raises(AuthError, match="check the API channel's secret key"):
        await client.check_auth()


@pytest.mark.parametrize("status", [401, 403])
async def test_http_401_403_are_auth_errors(
    client: UsedeskClient, mocked: aioresponses, status: int
) -> None:
    mocked.post(url("tickets"), status=status, body="Forbidden", content_type="text/plain")
    with pytest.raises(AuthError, match=f"HTTP {status}"):
        await client.list_tickets(client_id=1)


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_other_4xx_are_invalid(
    client: UsedeskClient, mocked: aioresponses, status: int
) -> None:
    mocked.post(url("tickets"), status=status, payload={"error": "bad field"})
    with pytest.raises(InvalidRequestError, match=f"HTTP {status}: bad field"):
        await client.list_tickets(client_id=1)


async def test_429_with_seconds_sets_retry_after_and_pauses_the_limiter(
    client: UsedeskClient, mocked: aioresponses, ft: FakeTime
) -> None:
    mocked.post(url("tickets"), status=429, headers={"Retry-After": "30"}, payload={})
    mocked.post(url("tickets"), payload=[])
    with pytest.raises(TransientError) as info:
        await client.list_tickets(client_id=1)
    assert info.value.retry_after == 30.0
    assert "HTTP 429" in info.value.message
    assert client.limiter.delay() == pytest.approx(30.0)

    before = ft.clock.now()
    await client.list_tickets(client_id=1)
    assert ft.sleeps == pytest.approx([30.0])
    assert ft.clock.now() - before == pytest.approx(30.0)


async def test_429_with_http_date(
    client: UsedeskClient, mocked: aioresponses, ft: FakeTime
) -> None:
    when = formatdate(ft.clock.now() + 45, usegmt=True)
    mocked.post(url("tickets"), status=429, headers={"Retry-After": when}, payload={})
    with pytest.raises(TransientError) as info:
        await client.list_tickets(client_id=1)
    assert info.value.retry_after == pytest.approx(45.0)
    assert client.limiter.delay() == pytest.approx(45.0)


async def test_429_without_retry_after_still_pauses(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("tickets"), status=429, body="Too Many Requests", content_type="text/plain")
    with pytest.raises(TransientError, match="no Retry-After") as info:
        await client.list_tickets(client_id=1)
    assert info.value.retry_after is None
    assert client.limiter.delay() == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("status", "kwargs", "fragment"),
    [
        (500, {"payload": {"error": "Internal"}}, "HTTP 500: Internal"),
        (
            502,
            {"body": "<html><h1>502 Bad Gateway</h1></html>", "content_type": "text/html"},
            "text/html, starts with '<html><h1>502 Bad Gateway",
        ),
        (503, {"body": ""}, "empty body"),
        (408, {"body": "timeout", "content_type": "text/plain"}, "HTTP 408"),
    ],
)
async def test_5xx_and_408_are_transient_whatever_the_body(
    client: UsedeskClient, mocked: aioresponses, status: int, kwargs: dict[str, Any], fragment: str
) -> None:
    mocked.post(url("tickets"), status=status, **kwargs)
    with pytest.raises(TransientError) as info:
        await client.list_tickets(client_id=1)
    assert fragment in info.value.message
    assert info.value.retry_after is None
    assert not info.value.unanswered  # answered with an error: whatever it did is over


async def test_timeout_is_transient_and_says_how_long(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("create/ticket"), exception=TimeoutError())
    with pytest.raises(
        TransientError, match=r"did not answer within 10 s \(POST /create/ticket\)"
    ) as info:
        await client.create_ticket(subject="s", message="m", client_id=1)
    assert info.value.unanswered  # no answer: the ticket may still be made


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("Connection reset by peer"),
        aiohttp.ClientPayloadError("Response payload is not completed"),
    ],
)
async def test_connection_failures_are_transient(
    client: UsedeskClient, mocked: aioresponses, exc: Exception
) -> None:
    mocked.post(url("users"), exception=exc)
    with pytest.raises(TransientError, match="could not reach Usedesk") as info:
        await client.check_auth()
    assert type(exc).__name__ in info.value.message
    assert info.value.unanswered


async def test_server_timeout_error_counts_as_timeout_not_connection(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    # aiohttp's ServerTimeoutError is both a TimeoutError and a ClientConnectionError.
    mocked.post(url("users"), exception=aiohttp.ServerTimeoutError("read timed out"))
    with pytest.raises(TransientError, match="did not answer within"):
        await client.check_auth()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<!DOCTYPE html><title>Usedesk</title>", "text/html"),
        ('{"status": "succ', "application/json"),
        ("", "application/json"),
    ],
)
async def test_http_200_that_is_not_json_is_invalid_and_points_at_base_url(
    client: UsedeskClient, mocked: aioresponses, body: str, content_type: str
) -> None:
    mocked.post(url("tickets"), body=body, content_type=content_type)
    with pytest.raises(
        InvalidRequestError, match=r"not JSON.*check base_url https://api\.usedesk\.ru"
    ):
        await client.list_tickets(client_id=1)


async def test_redirect_is_not_followed(client: UsedeskClient, mocked: aioresponses) -> None:
    mocked.post(
        url("users"), status=301, headers={"Location": "https://secure.usedesk.ru/uapi/users"}
    )
    with pytest.raises(InvalidRequestError, match=r"redirected.*secure\.usedesk\.ru/uapi/users"):
        await client.check_auth()


@pytest.mark.parametrize(
    ("status", "kwargs", "expected"),
    [
        (200, {"payload": {"error": f"token {TOKEN} is not valid"}}, AuthError),
        (200, {"payload": {"error": f"bad value {TOKEN}"}}, InvalidRequestError),
        (
            500,
            {"body": f"<pre>api_token={TOKEN}</pre>", "content_type": "text/html"},
            TransientError,
        ),
        (200, {"body": f"api_token={TOKEN}", "content_type": "text/plain"}, InvalidRequestError),
        (401, {"payload": {"error": f"no such token {TOKEN}"}}, AuthError),
        (429, {"payload": {"error": TOKEN}}, TransientError),
    ],
)
async def test_token_never_appears_in_errors_even_when_echoed(
    client: UsedeskClient,
    mocked: aioresponses,
    status: int,
    kwargs: dict[str, Any],
    expected: type[CrmError],
) -> None:
    mocked.post(url("users"), status=status, **kwargs)
    with pytest.raises(expected) as info:
        await client.check_auth()
    for text in (str(info.value), repr(info.value), info.value.message):
        assert TOKEN not in text
    assert "***" in info.value.message  # redacted, not silently dropped


async def test_connection_error_text_is_redacted_too(
    client: UsedeskClient, mocked: aioresponses
) -> None:
    mocked.post(url("users"), exception=aiohttp.ClientConnectionError(f"oops {TOKEN}"))
    with pytest.raises(TransientError) as info:
        await client.check_auth()
    assert TOKEN not in info.value.message


# --------------------------------------------------------------------------------------------
# Limiter wiring, logging, metrics hook
# --------------------------------------------------------------------------------------------


async def test_client_limiter_waits_instead_of_failing(mocked: aioresponses, ft: FakeTime) -> None:
    mocked.post(url("users"), payload=[], repeat=True)
    async with UsedeskClient(
        api_token=TOKEN, rate_limit_per_minute=2, clock=ft.clock, sleep=ft.sleep
    ) as c:
        for _ in range(3):
            await c.check_auth()
    assert n_calls(mocked, "users") == 3
    assert ft.sleeps == pytest.approx([60.0])


async def test_before_send_is_awaited_once_the_turn_has_come_before_the_request(
    mocked: aioresponses, ft: FakeTime
) -> None:
    """A create's write-ahead record (its intent) is written when the request leaves: after
    the rate limiter's wait, before the POST."""
    mocked.post(url("create/comment"), payload={"status": "success", "comment_id": 1}, repeat=True)
    seen: list[tuple[int, int]] = []

    async def before() -> None:
        seen.append((len(ft.sleeps), n_calls(mocked, "create/comment")))

    async with UsedeskClient(
        api_token=TOKEN, rate_limit_per_minute=1, clock=ft.clock, sleep=ft.sleep
    ) as c:
        await c.create_comment(7, message="first")
        await c.create_comment(7, message="second", before_send=before)
    assert ft.sleeps, "the second create waited its turn"
    assert seen == [(len(ft.sleeps), 1)]  # after every wait, before its own request
    assert n_calls(mocked, "create/comment") == 2


async def test_the_next_request_waits_for_a_before_send_in_its_turn(
    mocked: aioresponses, ft: FakeTime
) -> None:
    """The limiter's order (the hang-up's work first) is the order requests leave in: the next
    waiter's turn comes once the create's before_send (its intent's write) is done."""
    mocked.post(url("create/comment"), payload={"status": "success", "comment_id": 1}, repeat=True)
    written = asyncio.Event()

    async def writing() -> None:
        await written.wait()

    async with UsedeskClient(api_token=TOKEN, clock=ft.clock, sleep=ft.sleep) as c:
        first = asyncio.create_task(c.create_comment(7, message="a", before_send=writing))
        second = asyncio.create_task(c.create_comment(7, message="b"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert n_calls(mocked, "create/comment") == 0  # the second waits for the first's turn
        written.set()
        await asyncio.gather(first, second)
    sent = [
        r.kwargs["json"]["message"] for r in mocked.requests[("POST", URL(url("create/comment")))]
    ]
    assert sent == ["a", "b"]


@pytest.mark.parametrize("method", ["create_ticket", "create_client", "create_comment"])
async def test_a_before_send_that_fails_sends_nothing(
    client: UsedeskClient, mocked: aioresponses, method: str
) -> None:
    for path in ("create/ticket", "create/client", "create/comment"):
        mocked.post(url(path), payload={"status": "success"}, repeat=True)

    async def unrecorded() -> None:
        raise OSError("No space left on device")

    args: dict[str, dict[str, Any]] = {
        "create_ticket": {"subject": "s", "message": "m", "client_id": 1},
        "create_client": {"name": "n", "phone_digits": "79161234567"},
        "create_comment": {"ticket_id": 7, "message": "m"},
    }
    with pytest.raises(OSError, match="No space left"):
        await getattr(client, method)(**args[method], before_send=unrecorded)
    assert not mocked.requests  # nothing sent


async def test_requests_are_logged_at_debug_without_token_or_body(
    client: UsedeskClient, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.post(url("create/comment"), payload={"status": "success", "comment_id": 1})
    caplog.set_level(logging.DEBUG, logger="plugins.usedesk.client")
    await client.create_comment(7, message="very private call notes")
    records = [r for r in caplog.records if r.name == "plugins.usedesk.client"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert records[0].levelno == logging.DEBUG
    assert "POST /create/comment -> 200 (ok)" in line
    assert line.endswith(" s")
    assert TOKEN not in caplog.text
    assert "very private call notes" not in caplog.text


async def test_on_request_hook_sees_method_latency_and_outcome(
    mocked: aioresponses, ft: FakeTime
) -> None:
    seen: list[tuple[str, float, str]] = []
    mocked.post(url("users"), payload=[])
    mocked.post(url("users"), status=429, payload={})
    mocked.post(url("users"), status=401, payload={})
    mocked.post(url("users"), exception=TimeoutError())
    mocked.post(url("users"), exception=aiohttp.ServerDisconnectedError())
    mocked.post(url("users"), status=502, body="")
    mocked.post(url("users"), payload={"error": "nope"})
    async with UsedeskClient(
        api_token=TOKEN,
        clock=ft.clock,
        sleep=ft.sleep,
        on_request=lambda m, s, o, **kw: seen.append((m, s, o, kw)),
    ) as c:
        for _ in range(7):
            try:
                await c.check_auth()
            except CrmError:
                pass
    assert [o for _, _, o, _ in seen] == [
        "ok",
        "rate_limited",
        "auth",
        "timeout",
        "connection",
        "server_error",
        "invalid",
    ]
    assert all(m == "users" and s >= 0 for m, s, _, _ in seen)
    # The HTTP status when one came (none for a timeout or a dropped connection), and the path.
    assert [kw["status"] for *_, kw in seen] == [200, 429, 401, None, None, 502, 200]
    assert {kw["path"] for *_, kw in seen} == {"POST /users"}


async def test_failing_hook_never_fails_the_call(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(method: str, seconds: float, outcome: str, **_: object) -> None:
        raise RuntimeError("metrics backend down")

    mocked.post(url("users"), payload=[])
    async with UsedeskClient(api_token=TOKEN, on_request=broken) as c:
        await c.check_auth()
    assert "on_request hook failed" in caplog.text


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-5", 0.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
        ("999999", 3600.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    result = parse_retry_after(header, now=NOW)
    assert result == (pytest.approx(expected) if expected is not None else None)


# --------------------------------------------------------------------------------------------
# Real loopback server: proves the wire format and that the timeout is really enforced.
# --------------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_real_server_wire_format_and_timeout(aiohttp_server: Any) -> None:
    received: list[tuple[str, str, dict[str, Any]]] = []
    release = asyncio.Event()

    async def users(request: web.Request) -> web.Response:
        received.append((request.method, request.content_type, await request.json()))
        return web.json_response([{"id": 1, "name": "A"}])

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(release.wait(), timeout=5)
        except TimeoutError:
            pass
        return web.json_response([])

    app = web.Application()
    app.router.add_post("/users", users)
    app.router.add_post("/tickets", slow)
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")

    try:
        async with UsedeskClient(api_token=TOKEN, base_url=base, timeout=0.2) as c:
            assert [a.id for a in await c.list_users()] == [1]
            with pytest.raises(TransientError, match=r"within 0\.2 s"):
                await c.list_tickets(client_id=1)
    finally:
        release.set()
    assert received == [("POST", "application/json", {"api_token": TOKEN})]
