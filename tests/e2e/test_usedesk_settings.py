"""Every Usedesk setting end to end: Sipuni calls over HTTP → the service → the sandbox's state.

One test (or one parametrised test) per setting or per pair of settings that interact; each
asserts what lands in the Usedesk sandbox, the same way an operator would look at Usedesk.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from plugins.usedesk.settings import UsedeskSettings
from tests.e2e.usedesk_world import World, call_comments, world
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle

pytestmark = pytest.mark.e2e
NEW = "79160000001"
KNOWN = "74951234567"  # the sandbox's client 1002 holds it as "8 (495) 123-45-67"
KNOWN_CLIENT = 1002
# Keep the client's pacing out of the way (the setting exists only in newer plugin versions).
FAST = "rate_limit_per_minute = 1000\n" + (
    "burst_per_second = 100\n" if "burst_per_second" in UsedeskSettings.model_fields else ""
)


@asynccontextmanager
async def own_world(tmp_path: Path, table: str) -> AsyncIterator[World]:
    """Like ``usedesk_world.world`` but with the whole integration table written here."""
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        config, host = make_config(
            tmp_path,
            f"""
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{sandbox.token}"
base_url = "{base_url}"
{FAST}
{table}
""",
        )
        app = app_for(config, host)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield World(app, client, sandbox)
        finally:
            await client.close()


def give_ticket(w: World, client_id: int, *, status: int, assignee: int | None = None) -> int:
    """A ticket someone made in Usedesk before the call."""
    params: dict[str, Any] = {
        "api_token": w.sandbox.token,
        "subject": "Заказ",
        "message": "…",
        "client_id": client_id,
        "status": status,
    }
    if assignee is not None:
        params["assignee_id"] = assignee
    code, body = w.sandbox.call("/create/ticket", params)
    assert code == 200 and "ticket_id" in body, body
    return int(body["ticket_id"])


def ticket(w: World, ticket_id: int) -> dict[str, Any]:
    return next(t for t in w.state()["tickets"] if t["id"] == ticket_id)


def paths(w: World) -> list[str]:
    return [r.path for r in w.sandbox.requests()]


async def effect(w: World, key: str) -> dict[str, Any] | None:
    return await w.app[STORE].effects(f"{ACCOUNT}/usedesk").get(key)


def answered(client: str = NEW, n: int = 1, **kwargs: Any) -> scenarios.Scenario:
    """An answered inbound call; ``n`` gives each call of a test its own id and start."""
    start = scenarios.START + 1000 * n
    return scenarios.inbound_answered(client=client, call_id=f"{start}.{n}", start=start, **kwargs)


# --- «Создавать новый тикет, если уже есть созданные тикеты» -----------------------------------


async def test_always_new_ticket_makes_a_ticket_per_call_and_never_searches(tmp_path: Path):
    # search_statuses would find the first call's New ticket; always_new_ticket overrides it.
    async with world(tmp_path, "always_new_ticket = true\nsearch_statuses = [8, 1]") as w:
        await w.call(answered(n=1))
        await w.call(answered(n=2))
        [client] = w.clients_with(NEW)
        tickets = w.tickets_of(client["id"])
        assert len(tickets) == 2
        assert [t["status_id"] for t in tickets] == [8, 8]
        assert all(len(call_comments(t)) == 1 for t in tickets)
        assert "/tickets" not in paths(w)  # the status search was never asked


async def test_always_new_ticket_for_a_known_client_with_an_open_ticket(tmp_path: Path):
    async with world(tmp_path, "always_new_ticket = true") as w:
        open_ticket = give_ticket(w, KNOWN_CLIENT, status=1, assignee=3)
        await w.call(answered(client="+" + KNOWN))
        assert call_comments(ticket(w, open_ticket)) == []
        new = [t for t in w.tickets_of(KNOWN_CLIENT) if t["additional_id"]]
        assert len(new) == 1 and len(call_comments(new[0])) == 1


async def test_without_always_new_ticket_the_second_call_reuses_the_ticket(tmp_path: Path):
    async with world(tmp_path, "always_new_ticket = false") as w:
        await w.call(answered(n=1))
        await w.call(answered(n=2))
        [client] = w.clients_with(NEW)
        [only] = w.tickets_of(client["id"])
        assert len(call_comments(only)) == 2


# --- «Поиск тикетов по статусу» ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "found"), [("[5]", True), ("[8, 1, 5, 6]", True), ("[8, 1, 6]", False)]
)
async def test_search_statuses_decides_whether_an_on_hold_ticket_gets_the_call(
    tmp_path: Path, statuses: str, found: bool
):
    async with world(tmp_path, f"search_statuses = {statuses}") as w:
        on_hold = give_ticket(w, KNOWN_CLIENT, status=5, assignee=3)
        await w.call(answered(client="8" + KNOWN[1:]))
        tickets = w.tickets_of(KNOWN_CLIENT)
        made = [t for t in tickets if t["additional_id"]]
        if found:
            assert made == []
            [comment] = call_comments(ticket(w, on_hold))
            assert "Отвечен" in comment["message"]
            assert ticket(w, on_hold)["status_id"] == 5  # left in its status
            assert ticket(w, on_hold)["assignee_id"] == 3  # and with its owner
        else:
            assert call_comments(ticket(w, on_hold)) == []
            [new] = made
            assert new["status_id"] == 8 and len(call_comments(new)) == 1


async def test_of_several_matching_tickets_the_newest_gets_the_call(tmp_path: Path):
    async with world(tmp_path) as w:
        older = give_ticket(w, KNOWN_CLIENT, status=1, assignee=3)
        newer = give_ticket(w, KNOWN_CLIENT, status=6, assignee=3)
        await w.call(answered(client=KNOWN))
        assert len(call_comments(ticket(w, newer))) == 1
        assert call_comments(ticket(w, older)) == []


# --- «Создавать Тикет» / «Создавать Клиента» --------------------------------------------------


async def test_create_ticket_off_uses_an_existing_ticket(tmp_path: Path):
    async with world(tmp_path, "create_ticket = false") as w:
        open_ticket = give_ticket(w, KNOWN_CLIENT, status=1)  # unassigned
        await w.call(answered(client=KNOWN, answered_by="102"))
        assert [t["id"] for t in w.tickets_of(KNOWN_CLIENT) if t["status_id"] != 3] == [open_ticket]
        assert ticket(w, open_ticket)["assignee_id"] == 3  # the agent of 102, who answered
        assert len(call_comments(ticket(w, open_ticket))) == 1


async def test_create_ticket_off_without_a_ticket_writes_nothing_and_records_why(tmp_path: Path):
    async with world(tmp_path, "create_ticket = false") as w:
        call = answered(client=KNOWN)
        await w.call(call)
        assert [t["id"] for t in w.tickets_of(KNOWN_CLIENT)] == [5002]  # the closed seed ticket
        assert call_comments(ticket(w, 5002)) == []
        assert not {"/create/ticket", "/create/comment", "/update/ticket"} & set(w.writes())
        record = await effect(w, f"call:{call.call_id}")
        assert record is not None
        assert record["ticket_id"] is None and "creating tickets is off" in record["skipped"]


async def test_create_ticket_off_still_creates_the_client(tmp_path: Path):
    async with world(tmp_path, "create_ticket = false\ncreate_client = true") as w:
        await w.call(answered())
        [client] = w.clients_with(NEW)
        assert w.tickets_of(client["id"]) == []
        assert w.writes() == ["/create/client"]


async def test_create_client_off_create_ticket_on_serves_a_known_client(tmp_path: Path):
    async with world(tmp_path, "create_client = false\ncreate_ticket = true") as w:
        await w.call(answered(client=KNOWN, answered_by="101"))
        assert w.clients_with(KNOWN) == []  # nobody new; 1002 holds the number as 8…
        assert "/create/client" not in w.writes()
        [new] = [t for t in w.tickets_of(KNOWN_CLIENT) if t["status_id"] == 8]
        assert new["assignee_id"] == 2 and len(call_comments(new)) == 1


async def test_create_client_off_skips_an_unknown_number_and_records_why(tmp_path: Path):
    async with world(tmp_path, "create_client = false\ncreate_ticket = true") as w:
        call = answered()
        await w.call(call)
        assert w.writes() == []
        record = await effect(w, f"call:{call.call_id}")
        assert record is not None and "creating clients is off" in record["skipped"]


# --- «Тип создаваемого тикета» ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["incident", "task"])
async def test_ticket_type(tmp_path: Path, kind: str):
    async with world(tmp_path, f'ticket_type = "{kind}"') as w:
        await w.call(answered())
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["type"] == kind


# --- «Формат номеров» -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "stored", "shown"),
    [
        ("+7XXXXXXXXXX", NEW, "+" + NEW),  # Usedesk refuses "+": the card gets 7…, text +7…
        ("7XXXXXXXXXX", NEW, NEW),
        ("8XXXXXXXXXX", "8" + NEW[1:], "8" + NEW[1:]),
    ],
)
async def test_phone_format_in_the_card_the_subject_and_the_comment(
    tmp_path: Path, fmt: str, stored: str, shown: str
):
    async with world(tmp_path, f'phone_format = "{fmt}"') as w:
        await w.call(answered(client="8" + NEW[1:]))  # Sipuni's spelling does not matter
        [client] = [c for c in w.state()["clients"] if c["id"] not in (1001, 1002, 1003)]
        assert [p["phone"] for p in client["phones"]] == [stored]
        assert client["name"] == f"Клиент {shown}"
        [made] = w.tickets_of(client["id"])
        assert made["subject"] == f"Входящий звонок {shown}"
        [comment] = call_comments(made)
        assert f"Клиент: {shown}" in comment["message"]
        assert f"Линия: {'+7' if fmt.startswith('+') else fmt[0]}4951234567" in comment["message"]


@pytest.mark.parametrize("fmt", ["+7XXXXXXXXXX", "8XXXXXXXXXX"])
async def test_a_client_stored_in_another_format_is_found(tmp_path: Path, fmt: str):
    async with world(tmp_path, f'phone_format = "{fmt}"') as w:
        code, body = w.sandbox.call(
            "/create/client", {"api_token": w.sandbox.token, "name": "Олег", "phone": NEW}
        )
        assert code == 200
        before = len(w.writes())
        await w.call(answered(client="8" + NEW[1:]))
        assert "/create/client" not in w.writes()[before:]
        assert len(w.clients_with(NEW)) == 1
        [made] = w.tickets_of(int(body["client_id"]))
        assert len(call_comments(made)) == 1


# --- «Шаблоны» and language -------------------------------------------------------------------

TEMPLATES = """
language = "en"
phone_format = "+7XXXXXXXXXX"
[accounts.012345.integrations.usedesk.templates]
client_name = "Caller {phone}"
ticket_subject = "{direction} call from {phone} to {line} <{scheme}>"
ticket_tag = "phone, {direction_code}, line {line}"
comment = "<p>{direction}: {result} by {employee} ({talk_duration}) {scheme}</p>{record_link} {call_id}"
"""  # noqa: E501


async def test_overridden_templates_and_english(tmp_path: Path):
    async with world(tmp_path, TEMPLATES) as w:
        call = answered(answered_by="102", scheme=("000-9", "VIP & Co"))
        await w.call(call)
        [client] = w.clients_with(NEW)
        assert client["name"] == f"Caller +{NEW}"
        [made] = w.tickets_of(client["id"])
        # Subjects are plain text: nothing is escaped there.
        assert made["subject"] == f"Inbound call from +{NEW} to +74951234567 <VIP & Co>"
        assert made["tags"] == ["phone", "inbound", "line +74951234567"]
        # Made at the call's end (ticket_created_on = "answer", and the hook ran after the
        # hang-up), the ticket's first message is the call's comment.
        [comment] = call_comments(made)
        assert comment["is_first"]
        link = html.escape(call.expected["record_url"], quote=True)
        assert comment["message"] == (
            "<p>Inbound: Answered by 102 (3:06) VIP &amp; Co</p>"
            f'<a href="{link}">Call recording</a> {call.call_id}'
        )


async def test_english_default_templates(tmp_path: Path):
    async with world(tmp_path, 'language = "en"') as w:
        await w.call(scenarios.inbound_missed(client=NEW, ring=["101"]))
        [client] = w.clients_with(NEW)
        assert client["name"] == f"Client {NEW}"
        [made] = w.tickets_of(client["id"])
        assert made["subject"] == f"Inbound call {NEW}"
        [comment] = call_comments(made)
        assert "Inbound call</b>: Missed" in comment["message"]
        assert ">Call recording</a>" in comment["message"]


async def test_employee_variable_follows_answered_owner(tmp_path: Path):
    async with world(
        tmp_path,
        'templates = { comment = "owner {employee} {call_id}" }',
        extra='answered_owner = "first"',
    ) as w:
        call = scenarios.inbound_transferred(first="101", to="102", client=NEW)
        await w.call(call)
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] == 2  # 101's agent: the first to answer
        [comment] = call_comments(made)
        assert comment["message"] == f"owner 101 {call.call_id}"


# --- «Пользователи» and «Дежурный» ------------------------------------------------------------


async def test_an_extension_with_no_agent_leaves_the_ticket_unassigned(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(answered(ring=["105"], answered_by="105"))
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] is None
        assert made["status_id"] == 8
        [comment] = call_comments(made)
        assert "Сотрудник: 105" in comment["message"]
        assert "/update/ticket" not in w.writes()


async def test_on_duty_agent_given_by_email(tmp_path: Path):
    table = 'users = [{ extension = "101", agent = 2 }]\non_duty_user = "Vera@Example.com"'
    async with own_world(tmp_path, table) as w:
        await w.call(scenarios.inbound_missed(client=NEW, ring=["101", "102"]))
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] == 3  # vera@example.com, matched without regard to case
        [comment] = call_comments(made)
        assert comment["user_id"] == 3


async def test_an_on_duty_email_nobody_has_leaves_missed_tickets_unassigned(tmp_path: Path):
    async with own_world(tmp_path, 'on_duty_user = "nobody@example.com"') as w:
        await w.call(scenarios.inbound_missed(client=NEW, ring=["101"]))
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] is None
        assert len(call_comments(made)) == 1


async def test_an_agent_id_usedesk_does_not_have_is_not_assigned(tmp_path: Path):
    async with own_world(tmp_path, 'users = [{ extension = "101", agent = 99 }]') as w:
        await w.call(answered(ring=["101"], answered_by="101"))
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] is None
        assert len(call_comments(made)) == 1
        assert "/update/ticket" not in w.writes()


async def test_missed_call_on_an_existing_ticket_keeps_its_owner(tmp_path: Path):
    async with world(tmp_path, "first_on_line_responsible = true") as w:
        open_ticket = give_ticket(w, KNOWN_CLIENT, status=1, assignee=2)
        await w.call(scenarios.inbound_missed(client=KNOWN, ring=["102", "101"], ring_gap=1))
        assert ticket(w, open_ticket)["assignee_id"] == 2
        [comment] = call_comments(ticket(w, open_ticket))
        assert "Пропущен" in comment["message"]


@pytest.mark.parametrize(("first_on_line", "owner"), [(True, 4), (False, 4)])
async def test_first_on_line_unmapped_falls_back_to_on_duty(
    tmp_path: Path, first_on_line: bool, owner: int
):
    async with world(tmp_path, f"first_on_line_responsible = {str(first_on_line).lower()}") as w:
        await w.call(scenarios.inbound_missed(client=NEW, ring=["105", "101"], ring_gap=1))
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] == owner


# --- concurrency ------------------------------------------------------------------------------


async def test_five_concurrent_calls_from_one_new_number(tmp_path: Path):
    calls = [
        scenarios.inbound_answered(
            client=NEW,
            call_id=f"{scenarios.START + i}.{700 + i}",
            start=scenarios.START + i,
            answered_by="101" if i % 2 else "102",
        )
        for i in range(5)
    ]

    async def send(w: World, s: scenarios.Scenario) -> None:
        for params in s.events:
            response = await w.client.get(f"/sipuni/{TOKEN}", params=params)
            assert await response.json() == {"success": True}
            await asyncio.sleep(0)  # let the other calls' requests in between

    async with world(tmp_path) as w:
        await asyncio.gather(*(send(w, s) for s in calls))
        await settle(w.app)
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        comments = call_comments(made)
        assert len(comments) == 5
        ids = {s.call_id for s in calls}
        assert {i for i in ids if any(i in c["message"] for c in comments)} == ids
        assert made["assignee_id"] in (2, 3)
        # One ticket, the client made with it; the other four calls comment on it.
        assert sorted(w.writes()) == ["/create/comment"] * 4 + ["/create/ticket"]


# --- channel ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "channel"), [("channel_id = 102", 102), ("", 101)])
async def test_channel_id_of_new_tickets(tmp_path: Path, setting: str, channel: int):
    async with world(tmp_path, setting) as w:
        await w.call(answered())
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["channel_id"] == channel  # 101 is the sandbox's API channel


# --- requests per call (what docs/usedesk.md promises) ----------------------------------------


async def test_requests_per_call(tmp_path: Path):
    async with world(tmp_path) as w:
        await w.call(answered(n=1))
        first = paths(w)
        # The hooks ran after the hang-up, so the ticket is made at the end: client, owner
        # and comment in one request. "%" asks once whether the search takes wildcards.
        assert sorted(first) == sorted(
            ["/clients", "/clients", "/users", "/users", "/users", "/create/ticket"]
        )
        await w.call(
            scenarios.inbound_missed(
                client=KNOWN, call_id="1717190000.3", start=scenarios.START + 9000
            )
        )
        known = paths(w)[len(first) :]
        # An unremembered known client with no open ticket: search, look at its tickets, create.
        assert sorted(known) == sorted(["/clients", "/tickets", "/create/ticket"])


def phases(call: scenarios.Scenario) -> list[scenarios.Scenario]:
    """The call's events as three deliveries: the ringing, the answer, the hang-up."""
    kinds = [("1",), ("3",), ("2", "4")]
    return [
        scenarios.Scenario(
            **{**vars(call), "events": [e for e in call.events if e["event"] in kind]}
        )
        for kind in kinds
    ]


@pytest.mark.parametrize(
    ("when", "after_ring", "after_answer", "at_end"),
    [
        # ring: the ticket exists while the phone rings; owner and comment come later.
        ("ring", ["/create/ticket"], [], ["/update/ticket", "/create/comment"]),
        # answer: made with its owner once answered; the comment at the end.
        ("answer", [], ["/create/ticket"], ["/create/comment"]),
        # end: one request with the owner and the comment as its first message.
        ("end", [], [], ["/create/ticket"]),
    ],
)
async def test_ticket_created_on_ring_answer_or_end(
    tmp_path: Path, when: str, after_ring: list[str], after_answer: list[str], at_end: list[str]
):
    call = answered(answered_by="102")
    async with world(tmp_path, f'ticket_created_on = "{when}"') as w:
        writes = []
        for phase in phases(call):
            before = len(w.writes())
            await w.call(phase)
            writes.append(w.writes()[before:])
        assert writes == [after_ring, after_answer, at_end]
        [client] = w.clients_with(NEW)
        [made] = w.tickets_of(client["id"])
        assert made["assignee_id"] == 3  # extension 102's agent, whenever it was made
        [comment] = call_comments(made)
        assert call.call_id in comment["message"] and comment["user_id"] == 3
        # The search ran once, when the phone rang, whatever the setting.
        assert [r.params.get("query") for r in w.sandbox.requests("/clients")] == ["%", "000%00%01"]


# --- the owner is decided when the call ends --------------------------------------------------


async def test_an_existing_unassigned_ticket_gets_the_agent_who_answered(tmp_path: Path):
    async with world(tmp_path) as w:
        open_ticket = give_ticket(w, KNOWN_CLIENT, status=1)
        await w.call(answered(client=KNOWN, answered_by="102"))
        assert ticket(w, open_ticket)["assignee_id"] == 3
        assert ticket(w, open_ticket)["status_id"] == 1


async def test_an_owner_set_in_usedesk_during_the_call_is_kept(tmp_path: Path):
    async with world(tmp_path) as w:
        open_ticket = give_ticket(w, KNOWN_CLIENT, status=1)  # unassigned when the phone rings
        call = answered(client=KNOWN, answered_by="101")
        await w.call(replace(call, events=call.events[:2]))  # ringing: the ticket is looked up
        code, _ = w.sandbox.call(
            "/update/ticket",
            {"api_token": w.sandbox.token, "ticket_id": open_ticket, "assignee_id": 3},
        )
        assert code == 200
        await w.call(replace(call, events=call.events[2:]))  # answered by 101, hung up
        assert len(call_comments(ticket(w, open_ticket))) == 1
        assert ticket(w, open_ticket)["assignee_id"] == 3
