"""/create/ticket, /update/ticket, /create/comment, /ticket."""

from __future__ import annotations

from typing import Any

from .api_clients import new_client
from .model import (
    COMMENT_AUTHORS,
    COMMENT_TYPES,
    PHONE_TYPES,
    PRIORITIES,
    STATUS_NAMES,
    STATUS_NEW,
    STATUS_OPEN,
    TICKET_TYPES,
    Change,
    Client,
    Comment,
    SandboxState,
    Ticket,
    fmt_time,
)
from .params import ApiError, Params, as_int, is_blank


def parse_tags(value: Any) -> list[str]:
    """``tag`` is one "a, b" string (usedesk-api.md §5 #8); a JSON list is tolerated."""
    if is_blank(value):
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    tags: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in tags:
            tags.append(name)
    return tags


def find_ticket(state: SandboxState, p: Params) -> Ticket:
    ticket = state.tickets.get(p.req_int("ticket_id"))
    if ticket is None:
        raise ApiError("Ticket not found")
    return ticket


def _ref(p: Params, key: str, known: dict[int, Any], *, nullable: bool) -> tuple[bool, int | None]:
    """(given, id) for a reference field; "null" (or JSON null) clears it where allowed."""
    if key not in p or (isinstance(p.raw(key), str) and p.raw(key).strip() == ""):
        return False, None
    value = p.raw(key)
    if value is None or value == "null":
        if not nullable:
            raise ApiError(f"The {key} field can not be null.")
        return True, None
    ident = as_int(key, value)
    if ident not in known:
        raise ApiError(f"The selected {key} is invalid.")
    return True, ident


def _status(p: Params) -> int | None:
    if not p.given("status"):
        return None
    status = as_int("status", p.raw("status"))
    if status not in STATUS_NAMES:
        raise ApiError("The selected status is invalid.")
    return status


def _change(
    state: SandboxState, ticket: Ticket, target: str, old: Any, new: Any, user_id: int | None
) -> None:
    ticket.changes.append(
        Change(state.next_id("change"), ticket.id, target, old, new, state.now(), user_id)
    )


def _default_group(state: SandboxState, assignee_id: int | None, current: int | None) -> int | None:
    # Usedesk assigns an agent "within the default group": keep a group the agent belongs
    # to, otherwise move the ticket to the agent's first group.
    if assignee_id is None:
        return current
    groups = state.agents[assignee_id].group_ids
    return current if current in groups or not groups else groups[0]


def _resolve_client(state: SandboxState, p: Params) -> Client:
    raw = p.raw("client_id")
    if p.given("client_id") and raw != "new_client":
        client = state.clients.get(as_int("client_id", raw))
        if client is None:
            raise ApiError("The selected client_id is invalid.")
        return client  # client_phone/client_name are ignored for an existing client
    email = p.opt_str("client_email")
    if email and raw != "new_client":
        for client in state.clients.values():
            if any(e.email.lower() == email.lower() for e in client.emails):
                return client
    # client_phone is stored as sent: the digits-only rule is documented for create/client only.
    return new_client(
        state,
        name=p.opt_str("client_name") or email or p.opt_str("client_phone"),
        phone=p.opt_str("client_phone"),
        phone_type=p.choice("phone_type", PHONE_TYPES, "other"),
        emails=[email] if email else [],
    )


def create_ticket(state: SandboxState, p: Params) -> dict[str, Any]:
    subject, message = p.req_str("subject"), p.req_str("message")
    ticket_type = p.choice("type", TICKET_TYPES, "question")
    priority = p.choice("priority", PRIORITIES, "medium")
    status = _status(p) or STATUS_NEW
    _, assignee_id = _ref(p, "assignee_id", state.agents, nullable=True)
    _, group_id = _ref(p, "group_id", state.groups, nullable=True)
    channel_given, channel_id = _ref(p, "channel_id", state.channels, nullable=True)
    _, user_id = _ref(p, "user_id", state.agents, nullable=True)
    private = p.opt_bool("private_comment")
    # A private first message is an agent's note, so it defaults to being authored by one.
    author = p.choice("from", COMMENT_AUTHORS, "user" if private else "client")
    trigger_id = p.opt_int("trigger_id")
    if author == "trigger" and trigger_id is None:
        raise ApiError("The trigger_id field is required when from is trigger.")
    if author == "user" and user_id is None:
        user_id = state.first_agent_id()
    client = _resolve_client(state, p)
    now = state.now()
    ticket = Ticket(
        id=state.next_id("ticket"),
        subject=subject,
        client_id=client.id,
        status_id=status,
        type=ticket_type,
        priority=priority,
        published_at=now,
        last_updated_at=now,
        assignee_id=assignee_id,
        group_id=_default_group(state, assignee_id, group_id),
        channel_id=channel_id if channel_given else state.api_channel_id,
        additional_id=p.opt_str("additional_id"),
        tags=parse_tags(p.raw("tag")),
    )
    for tag in ticket.tags:
        state.tag_id(tag)
    ticket.comments.append(
        Comment(
            id=state.next_id("comment"),
            ticket_id=ticket.id,
            message=message,
            type="private" if private else "public",
            from_=author,
            published_at=now,
            user_id=user_id if author == "user" else None,
            client_id=client.id if author == "client" else None,
            trigger_id=trigger_id if author == "trigger" else None,
            is_first=True,
        )
    )
    state.tickets[ticket.id] = ticket
    _change(state, ticket, "ticket_created", None, ticket.id, user_id)
    return {"status": "success", "ticket_id": ticket.id, "message_status": "delivered"}


def update_ticket(state: SandboxState, p: Params) -> dict[str, Any]:
    ticket = find_ticket(state, p)
    # Validate every field first so a refused update leaves the ticket untouched.
    subject = p.opt_str("subject")
    client_given, client_id = _ref(p, "client_id", state.clients, nullable=False)
    group_given, group_id = _ref(p, "group_id", state.groups, nullable=True)
    assignee_given, assignee_id = _ref(p, "assignee_id", state.agents, nullable=True)
    _, user_id = _ref(p, "user_id", state.agents, nullable=True)
    status = _status(p)
    ticket_type = p.choice("type", TICKET_TYPES, ticket.type)
    priority = p.choice("priority", PRIORITIES, ticket.priority)
    new_tags = [t for t in parse_tags(p.raw("tag")) if t not in ticket.tags]
    silent = p.opt_bool("silent")

    was_new = ticket.status_id == STATUS_NEW
    wanted: dict[str, Any] = {"type": ticket_type, "priority": priority}
    if subject is not None:
        wanted["subject"] = subject
    if client_given:
        wanted["client_id"] = client_id
    if assignee_given:
        wanted["assignee_id"] = assignee_id
        if not group_given:
            group_given, group_id = True, _default_group(state, assignee_id, ticket.group_id)
    if group_given:
        wanted["group_id"] = group_id
    if status is not None:
        wanted["status_id"] = status
    elif was_new and not silent:
        # Documented quirk: any API action on a New ticket opens it unless silent is set.
        wanted["status_id"] = STATUS_OPEN
    for attr, value in wanted.items():
        old = getattr(ticket, attr)
        if old != value:
            setattr(ticket, attr, value)
            _change(state, ticket, "group" if attr == "group_id" else attr, old, value, user_id)
    if new_tags:
        ticket.tags.extend(new_tags)
        for tag in new_tags:
            state.tag_id(tag)
        _change(state, ticket, "new_tags", None, new_tags, user_id)
    ticket.last_updated_at = state.now()
    return {"status": "success"}


def create_comment(state: SandboxState, p: Params) -> dict[str, Any]:
    ticket = find_ticket(state, p)
    message = p.req_str("message")
    kind = p.choice("type", COMMENT_TYPES, "private")
    author = p.choice("from", COMMENT_AUTHORS, "user")
    _, user_id = _ref(p, "user_id", state.agents, nullable=True)
    trigger_id = p.opt_int("trigger_id")
    if author == "trigger" and trigger_id is None:
        raise ApiError("The trigger_id field is required when from is trigger.")
    if author == "user" and user_id is None:
        user_id = state.first_agent_id()
    comment = Comment(
        id=state.next_id("comment"),
        ticket_id=ticket.id,
        message=message,
        type=kind,
        from_=author,
        published_at=state.now(),
        user_id=user_id if author == "user" else None,
        client_id=ticket.client_id if author == "client" else None,
        trigger_id=trigger_id if author == "trigger" else None,
    )
    ticket.comments.append(comment)
    # Deliberately no New→Open flip here: the docs state it only for update/ticket.
    target = {"user": "comment_from_agent", "client": "message_from_client"}.get(
        author, "message_from_bot"
    )
    _change(state, ticket, target, None, comment.id, comment.user_id)
    ticket.last_updated_at = comment.published_at
    return {"status": "success", "comment_id": comment.id}


def comment_view(comment: Comment) -> dict[str, Any]:
    return {
        "id": comment.id,
        "message": comment.message,
        "from": comment.from_,
        "type": comment.type,
        "user_id": comment.user_id,
        "client_id": comment.client_id,
        "trigger_id": comment.trigger_id,
        "ticket_id": comment.ticket_id,
        "is_first": comment.is_first,
        "published_at": fmt_time(comment.published_at),
        "files": [],
    }


def _stringify(record: dict[str, Any]) -> dict[str, Any]:
    # The D-ticket example quotes every number; opt-in so clients can be tested against it.
    return {
        k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in record.items()
    }


def get_ticket(state: SandboxState, p: Params) -> dict[str, Any]:
    ticket = find_ticket(state, p)
    body: dict[str, Any] = {
        "id": ticket.id,
        "status_id": ticket.status_id,
        "subject": ticket.subject,
        "client_id": ticket.client_id,
        "assignee_id": ticket.assignee_id,
        "group": ticket.group_id,
        "type": ticket.type,
        "priority": ticket.priority,
        "additional_id": ticket.additional_id,
        "channel_id": ticket.channel_id,
        "company_id": state.company_id,
        "published_at": fmt_time(ticket.published_at),
        "last_updated_at": fmt_time(ticket.last_updated_at),
    }
    comments = [comment_view(c) for c in ticket.comments]
    if state.string_ids:
        body, comments = _stringify(body), [_stringify(c) for c in comments]
    result: dict[str, Any] = {
        "ticket": body,
        "comments": comments,
        "tags": [{"id": state.tag_id(t), "name": t} for t in ticket.tags],
        "changes": [
            {
                "id": c.id,
                "ticket_id": c.ticket_id,
                "user_id": c.user_id,
                "trigger_id": None,
                "target": c.target,
                "old_value": c.old_value,
                "value": c.value,
                "changed_at": fmt_time(c.changed_at),
            }
            for c in ticket.changes
        ],
        "custom_fields": [],
    }
    _, viewer = _ref(p, "accessible_for_agent_id", state.agents, nullable=False)
    if viewer is not None:
        agent = state.agents[viewer]
        writable = agent.user_type == "admin" or ticket.assignee_id in (None, viewer)
        result["rights"] = "write" if writable else "read"
    return result
