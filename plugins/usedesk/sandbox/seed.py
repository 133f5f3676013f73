"""Seed data: the default company, loading JSON/TOML seed files, and building state from them.

Seeded phones are stored exactly as written ("+7 916 123-45-67", "8 (495) 123-45-67",
"+7(903)555-00-11"), because a real account holds numbers typed by agents and imported by other
channels, which the API's own digits-only rule for create/client never saw. The default seed
holds them the way agents type them, so the demo shows a call found under any spelling.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .model import (
    COMMENT_AUTHORS,
    COMMENT_TYPES,
    PHONE_TYPES,
    PRIORITIES,
    STATUS_NAMES,
    TICKET_TYPES,
    USER_TYPES,
    Agent,
    Channel,
    Client,
    Comment,
    Email,
    Group,
    Phone,
    SandboxState,
    Ticket,
    parse_time,
    utc_now,
)

DEFAULT_TOKEN = "sandbox-token"
DEFAULT_COMPANY_ID = 153561
_TOP_KEYS = {
    "api_token",
    "company_id",
    "api_channel_id",
    "groups",
    "agents",
    "channels",
    "clients",
    "tickets",
}

DEFAULT_SEED: dict[str, Any] = {
    "api_token": DEFAULT_TOKEN,
    "company_id": DEFAULT_COMPANY_ID,
    "groups": [
        {"id": 1, "name": "Поддержка"},
        {"id": 2, "name": "Продажи"},
    ],
    "agents": [
        {
            "id": 1,
            "name": "Анна Админова",
            "email": "anna@example.com",
            "user_type": "admin",
            "groups": [1, 2],
            "phone": "201",
        },
        {
            "id": 2,
            "name": "Борис Операторов",
            "email": "boris@example.com",
            "user_type": "employee",
            "groups": [1],
            "phone": "202",
        },
        {
            "id": 3,
            "name": "Вера Продажина",
            "email": "vera@example.com",
            "user_type": "employee",
            "groups": [2],
            "phone": "203",
        },
        {
            "id": 4,
            "name": "Глеб Саппортов",
            "email": "gleb@example.com",
            "user_type": "support",
            "groups": [1],
            "phone": "204",
        },
    ],
    "channels": [
        {"id": 101, "name": "Sipuni API", "type": "api"},
        {"id": 102, "name": "support@example.com", "type": "email"},
        {"id": 103, "name": "WhatsApp", "type": "whatsapp"},
    ],
    "clients": [
        {
            "id": 1001,
            "name": "Иван Петров",
            "phones": ["+7 916 123-45-67"],
            "emails": ["ivan@example.com"],
            "created_at": "2024-01-10 09:00:00",
        },
        {
            "id": 1002,
            "name": "Мария Сидорова",
            "phones": ["8 (495) 123-45-67", {"phone": "+7(903)555-00-11", "type": "mobile"}],
            "created_at": "2024-02-01 12:00:00",
        },
        {
            "id": 1003,
            "name": "ООО Ромашка",
            "emails": ["office@romashka.example"],
            "created_at": "2024-03-05 15:30:00",
        },
    ],
    "tickets": [
        {
            "id": 5001,
            "subject": "Не работает доставка",
            "client_id": 1001,
            "status_id": 1,
            "assignee_id": 2,
            "group_id": 1,
            "channel_id": 102,
            "tags": ["доставка"],
            "published_at": "2024-04-01 10:00:00",
            "comments": [{"message": "Где мой заказ?", "type": "public", "from": "client"}],
        },
        {
            "id": 5002,
            "subject": "Счёт на оплату",
            "client_id": 1002,
            "status_id": 3,
            "assignee_id": 3,
            "group_id": 2,
            "channel_id": 102,
            "published_at": "2024-04-02 11:00:00",
            "comments": [{"message": "Пришлите счёт", "type": "public", "from": "client"}],
        },
    ],
}


class SeedError(ValueError):
    """The seed is inconsistent; the message names the offending record."""


def load_seed(source: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """Return a seed dict from a mapping, a .json/.toml file path, or None (the default seed)."""
    if source is None:
        return copy.deepcopy(DEFAULT_SEED)
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        return tomllib.loads(text)
    data = json.loads(text)
    if not isinstance(data, dict):
        raise SeedError(f"{path}: the seed must be a JSON object")
    return data


def build_state(
    seed: Mapping[str, Any], *, clock: Callable[[], datetime] = utc_now
) -> SandboxState:
    unknown = set(seed) - _TOP_KEYS
    if unknown:
        raise SeedError(f"unknown seed keys: {sorted(unknown)}")
    state = SandboxState(
        api_token=str(seed.get("api_token", DEFAULT_TOKEN)),
        company_id=int(seed.get("company_id", DEFAULT_COMPANY_ID)),
        clock=clock,
    )
    try:
        for raw in seed.get("groups", []):
            _add_group(state, raw)
        for raw in seed.get("agents", []):
            _add_agent(state, raw)
        for raw in seed.get("channels", []):
            _add_channel(state, raw)
        for raw in seed.get("clients", []):
            _add_client(state, raw)
        for raw in seed.get("tickets", []):
            _add_ticket(state, raw)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SeedError):
            raise
        raise SeedError(f"malformed seed record: {exc!r}") from exc
    api_channel = seed.get("api_channel_id")
    if api_channel is not None and int(api_channel) not in state.channels:
        raise SeedError(f"api_channel_id {api_channel} is not a seeded channel")
    # Tickets created through an API channel's token land in that channel, so default to it.
    state.api_channel_id = (
        int(api_channel)
        if api_channel is not None
        else next((c.id for c in state.channels.values() if c.type == "api"), None)
    )
    return state


def _unique(kind: str, ident: int, existing: Mapping[int, Any]) -> int:
    if ident in existing:
        raise SeedError(f"duplicate {kind} id {ident}")
    return ident


def _add_group(state: SandboxState, raw: Mapping[str, Any]) -> None:
    gid = _unique("group", int(raw["id"]), state.groups)
    state.groups[gid] = Group(id=gid, name=str(raw["name"]))


def _add_agent(state: SandboxState, raw: Mapping[str, Any]) -> None:
    aid = _unique("agent", int(raw["id"]), state.agents)
    user_type = raw.get("user_type", "employee")
    if user_type not in USER_TYPES:
        raise SeedError(f"agent {aid}: user_type must be one of {USER_TYPES}")
    group_ids = [int(g) for g in raw.get("groups", raw.get("group_ids", []))]
    for gid in group_ids:
        if gid not in state.groups:
            raise SeedError(f"agent {aid}: unknown group {gid}")
    state.agents[aid] = Agent(
        id=aid,
        name=str(raw["name"]),
        email=str(raw["email"]),
        user_type=user_type,
        group_ids=group_ids,
        phone=raw.get("phone"),
        position=raw.get("position"),
    )


def _add_channel(state: SandboxState, raw: Mapping[str, Any]) -> None:
    cid = _unique("channel", int(raw["id"]), state.channels)
    state.channels[cid] = Channel(id=cid, name=str(raw["name"]), type=str(raw.get("type", "api")))


def _time(raw: Mapping[str, Any], key: str, default: datetime) -> datetime:
    value = raw.get(key)
    return parse_time(str(value)) if value else default


def _add_client(state: SandboxState, raw: Mapping[str, Any]) -> None:
    cid = _unique("client", int(raw["id"]), state.clients)
    state.reserve_id("client", cid)
    created = _time(raw, "created_at", state.now())
    client = Client(id=cid, name=raw.get("name"), created_at=created, note=raw.get("note"))
    for item in raw.get("phones", []):
        number, kind = (
            (item, "other") if isinstance(item, str) else (item["phone"], item.get("type", "other"))
        )
        if kind not in PHONE_TYPES:
            raise SeedError(f"client {cid}: phone type must be one of {PHONE_TYPES}")
        client.phones.append(Phone(state.next_id("phone"), str(number), kind, created))
    for address in raw.get("emails", []):
        client.emails.append(Email(state.next_id("email"), str(address), created))
    state.clients[cid] = client


def _add_ticket(state: SandboxState, raw: Mapping[str, Any]) -> None:
    tid = _unique("ticket", int(raw["id"]), state.tickets)
    state.reserve_id("ticket", tid)
    client_id = int(raw["client_id"])
    if client_id not in state.clients:
        raise SeedError(f"ticket {tid}: unknown client {client_id}")
    status = int(raw.get("status_id", raw.get("status", 8)))
    ticket_type = raw.get("type", "question")
    priority = raw.get("priority", "medium")
    if status not in STATUS_NAMES or ticket_type not in TICKET_TYPES or priority not in PRIORITIES:
        raise SeedError(f"ticket {tid}: bad status, type or priority")
    for key, known in (
        ("assignee_id", state.agents),
        ("group_id", state.groups),
        ("channel_id", state.channels),
    ):
        if raw.get(key) is not None and int(raw[key]) not in known:
            raise SeedError(f"ticket {tid}: unknown {key} {raw[key]}")
    published = _time(raw, "published_at", state.now())
    tags = raw.get("tags", [])
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    ticket = Ticket(
        id=tid,
        subject=str(raw["subject"]),
        client_id=client_id,
        status_id=status,
        type=ticket_type,
        priority=priority,
        published_at=published,
        last_updated_at=_time(raw, "last_updated_at", published),
        assignee_id=_opt_int(raw.get("assignee_id")),
        group_id=_opt_int(raw.get("group_id")),
        channel_id=_opt_int(raw.get("channel_id")),
        additional_id=raw.get("additional_id"),
        tags=[str(t) for t in tags],
    )
    for tag in ticket.tags:
        state.tag_id(tag)
    for index, item in enumerate(raw.get("comments", [])):
        kind, author = item.get("type", "public"), item.get("from", "client")
        if kind not in COMMENT_TYPES or author not in COMMENT_AUTHORS:
            raise SeedError(f"ticket {tid}: bad comment type or from")
        ticket.comments.append(
            Comment(
                id=state.next_id("comment"),
                ticket_id=tid,
                message=str(item["message"]),
                type=kind,
                from_=author,
                published_at=_time(item, "published_at", published),
                user_id=_opt_int(item.get("user_id")),
                client_id=client_id if author == "client" else None,
                is_first=index == 0,
            )
        )
    state.tickets[tid] = ticket


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
