"""/clients, /client, /create/client, /update/client."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .model import PAGE_SIZE, PHONE_TYPES, Client, Email, Phone, SandboxState, fmt_time, parse_time
from .params import ApiError, Params, as_int

_PHONE_RULE = re.compile(r"\d{10,15}")
_NON_DIGITS = re.compile(r"\D")


def checked_phone(value: Any) -> str:
    """create/client and update/client take digits only, 10–15 long (usedesk-api.md §5 #6)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _PHONE_RULE.fullmatch(text):
        raise ApiError("The phone must be 10 to 15 digits, without +, spaces or brackets.")
    return text


def _checked_emails(p: Params) -> list[str]:
    emails = p.str_list("emails")
    for index, address in enumerate(emails):
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", address.strip()):
            raise ApiError(f"The emails.{index} must be a valid email address.")
    return [address.strip() for address in emails]


def _client(state: SandboxState, p: Params) -> Client:
    client_id = p.req_int("client_id")
    client = state.clients.get(client_id)
    if client is None:
        raise ApiError("Client not found")
    return client


def time_window(
    p: Params, after_key: str, before_key: str
) -> tuple[datetime | None, datetime | None]:
    try:
        after = parse_time(p.req_str(after_key)) if p.given(after_key) else None
        before = parse_time(p.req_str(before_key)) if p.given(before_key) else None
    except ValueError as exc:
        raise ApiError("Dates must look like YYYY-MM-DD HH:MM (UTC).") from exc
    return after, before


def like(query: str, text: str, *, full: bool, wildcards: bool) -> bool:
    """SQL ``LIKE`` as the search runs it: ``LIKE '%query%'`` (``query`` for a full match),
    case-insensitive. With ``wildcards`` the query's own ``%`` (any run) and ``_`` (one
    character) are live, as they are when an application puts the text into the pattern
    unescaped; without, the query is taken literally (an API that escapes them)."""
    if not wildcards:
        query, text = query.lower(), text.lower()
        return text == query if full else query in text
    pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in query)
    rule = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    return bool(rule.fullmatch(text) if full else rule.search(text))


def _phone_matches(state: SandboxState, query: str, stored: str, full: bool) -> bool:
    # The real search is SQL LIKE on the stored string; "digits" mode is an opt-in for
    # connectors that want to test against an account whose phones were normalised.
    if state.phone_search == "digits":
        wanted, stored = _NON_DIGITS.sub("", query), _NON_DIGITS.sub("", stored)
        if not wanted:
            return False
        query = wanted
    return like(query, stored, full=full, wildcards=state.like_wildcards)


def _matches(state: SandboxState, client: Client, query: str, full: bool) -> bool:
    texts = [client.name or "", *(e.email for e in client.emails)]
    text_hit = any(like(query, text, full=full, wildcards=state.like_wildcards) for text in texts)
    return text_hit or any(_phone_matches(state, query, ph.phone, full) for ph in client.phones)


def _joined(values: list[str]) -> str | None:
    return ", ".join(values) if values else None


def list_clients(state: SandboxState, p: Params) -> list[dict[str, Any]]:
    query = p.opt_str("query")
    full = p.choice("search_type", ("partial_match", "full_match"), "partial_match") == "full_match"
    after, before = time_window(p, "created_after", "created_before")
    page = p.page()
    found = [
        c
        for c in sorted(state.clients.values(), key=lambda c: c.id)
        if (query is None or _matches(state, c, query, full))
        and (after is None or c.created_at >= after)
        and (before is None or c.created_at <= before)
    ]
    return [
        {
            "id": c.id,
            "name": c.name,
            "emails": _joined([e.email for e in c.emails]),
            "phone": _joined([ph.phone for ph in c.phones]),
            "tickets": state.client_ticket_ids(c.id),
        }
        for c in found[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    ]


def client_card(state: SandboxState, client: Client) -> dict[str, Any]:
    phones = [
        {
            "id": ph.id,
            "phone": ph.phone,
            "type": ph.type,
            "client_id": client.id,
            "created_at": fmt_time(ph.created_at),
            "updated_at": fmt_time(ph.created_at),
        }
        for ph in client.phones
    ]
    emails = [{"id": e.id, "email": e.email, "client_id": client.id} for e in client.emails]
    return {
        "id": client.id,
        "name": client.name,
        "avatar": None,
        "position": client.position,
        "note": client.note,
        "company_id": state.company_id,
        "spammer": 0,
        "vip": 0,
        "client_company_id": None,
        "created_at": fmt_time(client.created_at),
        "tickets": state.client_ticket_ids(client.id),
        "emails": emails,
        "phones": phones,
        "social_networks": [],
        "messengers": [],
        "addresses": [],
        "sites": [],
        "client_company": None,
    }


def get_client(state: SandboxState, p: Params) -> list[dict[str, Any]]:
    card = client_card(state, _client(state, p))
    # The documented response repeats the collections next to "client" inside a 1-item array.
    outer = {
        key: card[key]
        for key in (
            "emails",
            "phones",
            "social_networks",
            "messengers",
            "addresses",
            "sites",
            "client_company",
        )
    }
    return [{"client": card, **outer}]


def new_client(
    state: SandboxState,
    *,
    name: str | None,
    phone: str | None = None,
    phone_type: str = "other",
    emails: list[str] | None = None,
    note: str | None = None,
) -> Client:
    now = state.now()
    client = Client(id=state.next_id("client"), name=name, created_at=now, note=note)
    if phone:
        client.phones.append(Phone(state.next_id("phone"), phone, phone_type, now))
    for address in emails or []:
        client.emails.append(Email(state.next_id("email"), address, now))
    state.clients[client.id] = client
    return client


def create_client(state: SandboxState, p: Params) -> dict[str, Any]:
    phone = checked_phone(p.raw("phone")) if p.given("phone") else None
    merged = as_int("merge_id", p.raw("merge_id")) if p.given("merge_id") else None
    if merged is not None and merged not in state.clients:
        raise ApiError("The selected merge_id is invalid.")
    client = new_client(
        state,
        name=p.opt_str("name"),
        phone=phone,
        phone_type=p.choice("phone_type", PHONE_TYPES, "other"),
        emails=_checked_emails(p),
        note=p.opt_str("note"),
    )
    client.position = p.opt_str("position")
    if merged is not None:
        merge_clients(state, into=client.id, merged=merged)
    return {"client_id": client.id, "status": True}


def delete_client(state: SandboxState, client_id: int) -> None:
    """The client and its tickets disappear, as when an agent deletes a client in Usedesk:
    every later use of those ids is refused as unknown."""
    if state.clients.pop(client_id, None) is None:
        raise KeyError(client_id)
    for ticket_id in state.client_ticket_ids(client_id):
        del state.tickets[ticket_id]


def merge_clients(state: SandboxState, *, into: int, merged: int) -> None:
    """Client ``merged`` joins ``into``: its numbers, e-mails and tickets move over and its id
    stops existing (refused as unknown from then on)."""
    if into == merged:
        raise ApiError("A client can not be merged with itself.")
    survivor, gone = state.clients.get(into), state.clients.get(merged)
    if survivor is None:
        raise ApiError("Client not found")
    if gone is None:
        raise ApiError("The selected merge_id is invalid.")
    have = {ph.phone for ph in survivor.phones}
    survivor.phones += [ph for ph in gone.phones if ph.phone not in have]
    mails = {e.email.lower() for e in survivor.emails}
    survivor.emails += [e for e in gone.emails if e.email.lower() not in mails]
    for ticket in state.tickets.values():
        if ticket.client_id == merged:
            ticket.client_id = into
    del state.clients[merged]


def update_client(state: SandboxState, p: Params) -> dict[str, Any]:
    client = _client(state, p)
    # Validate everything before touching the record so a refused call changes nothing.
    merged = as_int("merge_id", p.raw("merge_id")) if p.given("merge_id") else None
    phone = checked_phone(p.raw("phone")) if p.given("phone") else None
    phone_type = p.choice("phone_type", PHONE_TYPES, "other")
    emails = _checked_emails(p)
    name, note, position = p.opt_str("name"), p.opt_str("note"), p.opt_str("position")
    if merged is not None:  # checks merge_id before it changes anything
        merge_clients(state, into=client.id, merged=merged)
    now = state.now()
    if name is not None:
        client.name = name
    if position is not None:
        client.position = position
    # Appending a number the client already has would only duplicate it in the card.
    if phone is not None and phone not in {ph.phone for ph in client.phones}:
        client.phones.append(Phone(state.next_id("phone"), phone, phone_type, now))
    known = {e.email.lower() for e in client.emails}
    for address in emails:
        if address.lower() not in known:
            client.emails.append(Email(state.next_id("email"), address, now))
            known.add(address.lower())
    if note is not None:
        replace = p.opt_bool("is_new_note") or not client.note
        client.note = note if replace else f"{client.note}\n{note}"
    return {"client_id": client.id, "status": True}
