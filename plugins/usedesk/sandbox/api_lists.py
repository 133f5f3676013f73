"""/tickets, /users, /groups, /channels: the list methods, each a bare JSON array."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from .api_clients import time_window
from .model import PAGE_SIZE, STATUS_NAMES, USER_TYPES, Agent, SandboxState, Ticket, fmt_time
from .params import Params, as_int, is_blank

TicketTest = Callable[[Ticket], bool]

_SORT_KEYS: dict[str, Callable[[Ticket], Any]] = {
    "id": lambda t: t.id,
    "status_id": lambda t: t.status_id,
    "client_id": lambda t: t.client_id,
    # Unassigned sorts before everyone, as NULL does in MySQL's ascending order.
    "assignee_id": lambda t: -1 if t.assignee_id is None else t.assignee_id,
    "group": lambda t: -1 if t.group_id is None else t.group_id,
    "last_updated_at": lambda t: t.last_updated_at,
    "published_at": lambda t: t.published_at,
    "created_at": lambda t: t.published_at,
}


def _page(items: list[Any], p: Params) -> list[Any]:
    page = p.page()
    return items[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]


def _ints(name: str, values: list[str] | None) -> set[int] | None:
    return None if values is None else {as_int(name, v) for v in values}


def _assignment_test(assignee: Any, group: Any) -> TicketTest:
    no_agent, no_group = assignee == "unassigned", group == "unassigned"
    agent_id = None if is_blank(assignee) or no_agent else as_int("fassigned", assignee)
    group_id = None if is_blank(group) or no_group else as_int("fassigned", group)

    def test(t: Ticket) -> bool:
        if no_agent and no_group:
            return t.assignee_id is None and t.group_id is None
        if no_agent:
            # "unassigned" agent means assigned only to a group (to this one, if given).
            in_group = t.group_id is not None if group_id is None else t.group_id == group_id
            return t.assignee_id is None and in_group
        if agent_id is not None and t.assignee_id != agent_id:
            return False
        if no_group and t.group_id is not None:
            return False
        return group_id is None or t.group_id == group_id

    return test


def _fassigned(value: Any) -> TicketTest | None:
    if is_blank(value):
        return None
    tests: list[TicketTest] = []
    for spec in value if isinstance(value, list) else [value]:
        if isinstance(spec, dict):
            tests.append(_assignment_test(spec.get("assignee_id"), spec.get("group_id")))
        elif isinstance(spec, str) and "_" in spec:
            group, _, agent = spec.partition("_")  # deprecated "{group}_{agent}" form
            tests.append(_assignment_test(agent, group))
        else:
            tests.append(_assignment_test(spec, None))
    return lambda t: any(test(t) for test in tests)


def _time_tests(p: Params) -> list[TicketTest]:
    tests: list[TicketTest] = []
    c_after, c_before = time_window(p, "created_after", "created_before")
    u_after, u_before = time_window(p, "updated_after", "updated_before")
    if c_after:
        tests.append(lambda t: t.published_at >= c_after)
    if c_before:
        tests.append(lambda t: t.published_at <= c_before)
    if u_after:
        tests.append(lambda t: t.last_updated_at >= u_after)
    if u_before:
        tests.append(lambda t: t.last_updated_at <= u_before)
    return tests


def _field_in(attr: str, wanted: Collection[object]) -> TicketTest:
    """Matches tickets whose ``attr`` is one of ``wanted``."""
    return lambda t: getattr(t, attr) in wanted


def _ticket_tests(state: SandboxState, p: Params) -> list[TicketTest]:
    tests: list[TicketTest] = _time_tests(p)
    client_id = p.opt_int("client_id")
    if client_id is not None:
        tests.append(lambda t: t.client_id == client_id)
    for key, attr in (("fstatus", "status_id"), ("fchannel", "channel_id"), ("fgroup", "group_id")):
        wanted = _ints(key, p.csv(key))
        if wanted is not None:
            tests.append(_field_in(attr, wanted))
    for key, attr in (("ftype", "type"), ("fpriority", "priority")):
        names = p.csv(key)
        if names is not None:
            tests.append(_field_in(attr, set(names)))
    tags = p.csv("tag")
    if tags:
        # Several tags match tickets carrying any one of them.
        tests.append(lambda t: any(tag in t.tags for tag in tags))
    assigned = _fassigned(p.raw("fassigned"))
    if assigned is not None:
        tests.append(assigned)
    query = p.opt_str("query")
    if query:
        needle = query.lower()

        def text_hit(t: Ticket) -> bool:
            client = state.clients.get(t.client_id)
            texts = [t.subject, client.name if client and client.name else ""]
            texts += [c.message for c in t.comments]
            return any(needle in text.lower() for text in texts)

        tests.append(text_hit)
    return tests


def ticket_summary(state: SandboxState, t: Ticket) -> dict[str, Any]:
    client = state.clients.get(t.client_id)
    channel = state.channels.get(t.channel_id) if t.channel_id is not None else None
    return {
        "id": t.id,
        "subject": t.subject,
        "status_id": t.status_id,
        # /tickets gives status as an object while /ticket gives status_id (§5 #11).
        "status": {"id": t.status_id, "name": STATUS_NAMES[t.status_id]},
        "client_id": t.client_id,
        "client_name": client.name if client else None,
        "assignee_id": t.assignee_id,
        "group": t.group_id,
        "type": t.type,
        "priority": t.priority,
        "tags": [{"name": tag} for tag in t.tags],
        "channel_id": t.channel_id,
        "channel_email": channel.name if channel and channel.type == "email" else None,
        "additional_id": t.additional_id,
        "created_at": fmt_time(t.published_at),
        "last_updated_at": fmt_time(t.last_updated_at),
    }


def list_tickets(state: SandboxState, p: Params) -> list[dict[str, Any]]:
    sort = p.choice("sort", tuple(_SORT_KEYS), "id")
    descending = p.choice("order", ("asc", "desc"), "desc") == "desc"
    tests = _ticket_tests(state, p)
    key = _SORT_KEYS[sort]
    found = sorted(
        (t for t in state.tickets.values() if all(test(t) for test in tests)),
        key=lambda t: (key(t), t.id),
        reverse=descending,
    )
    return [ticket_summary(state, t) for t in _page(found, p)]


def _group_ref(state: SandboxState, agent: Agent, gid: int) -> dict[str, Any]:
    return {
        "id": gid,
        "name": state.groups[gid].name,
        "company_id": state.company_id,
        "deleted": 0,
        "deleted_at": None,
        "pivot": {"user_id": agent.id, "user_group_id": gid},
    }


def agent_view(state: SandboxState, agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "email": agent.email,
        "position": agent.position,
        "role": agent.user_type,
        "phone": agent.phone,
        "chat_online_status": "offline",
        "online_status": "offline",
        "groups": [_group_ref(state, agent, gid) for gid in agent.group_ids],
    }


def list_users(state: SandboxState, p: Params) -> list[dict[str, Any]]:
    agents = sorted(state.agents.values(), key=lambda a: a.id)
    user_id = p.opt_int("user_id")
    if user_id is not None:
        return [agent_view(state, a) for a in agents if a.id == user_id]
    # Pitfall §5 #3: without user_type only employees come back, never admins.
    user_type = p.choice("user_type", USER_TYPES, "employee")
    group_id = p.opt_int("group_id")
    query = (p.opt_str("query") or "").lower()
    found = [
        a
        for a in agents
        if a.user_type == user_type
        and (group_id is None or group_id in a.group_ids)
        and (query in a.name.lower() or query in a.email.lower())
    ]
    return [agent_view(state, a) for a in _page(found, p)]


def list_groups(state: SandboxState, p: Params) -> list[dict[str, Any]]:
    groups = sorted(state.groups.values(), key=lambda g: g.id)
    return [
        {
            "id": g.id,
            "name": g.name,
            "company_id": state.company_id,
            "deleted": 0,
            "deleted_at": None,
            "custom_working_time": 0,
            "timezone": None,
            "users": [
                {
                    "id": a.id,
                    "name": a.name,
                    "email": a.email,
                    "role": a.user_type,
                    "phone": a.phone,
                    "pivot": {"user_id": a.id, "user_group_id": g.id},
                }
                for a in sorted(state.agents.values(), key=lambda a: a.id)
                if g.id in a.group_ids
            ],
        }
        for g in _page(groups, p)
    ]


def list_channels(state: SandboxState, p: Params) -> list[dict[str, Any]]:
    kind = p.opt_str("channel_type")
    return [
        {"channel_id": c.id, "channel_name": c.name, "channel_type": c.type}
        for c in sorted(state.channels.values(), key=lambda c: c.id)
        if kind is None or c.type == kind
    ]
