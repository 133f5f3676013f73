"""The Usedesk part of the agent card: the client, its open ticket, links into Usedesk."""

from __future__ import annotations

import asyncio
from typing import Any

from connector_core.callstate import CallState
from connector_core.integrations import CardPart, Integration

from .flow import ensure_ticket, lookup, runtime


async def card(integration: Integration, call: CallState) -> CardPart | None:
    """The agent card's Usedesk part: new or known client, the open ticket, links.

    Uses what the start of the call already found; when the card is asked for before that
    (the usual case: the phone rings first), it waits for the same lookup (with
    ``ticket_created_on = "ring"``, the same find-or-create) under the phone lock rather than
    searching twice.
    """
    rt = runtime(integration)
    step = ensure_ticket if rt.settings.ticket_created_on == "ring" else lookup
    # A card that gives up waiting must not cancel the lookup half-way: the call's own hook
    # would then search again from the start, spending the rate budget twice.
    task = asyncio.ensure_future(step(integration, call))
    task.add_done_callback(_error_seen)
    record = await asyncio.shield(task)
    if "client_id" not in record:
        return CardPart(title="Usedesk", lines=[record.get("skipped", "")])
    web = rt.settings.web_url.rstrip("/")
    words = CARD_WORDS[rt.settings.language]
    name = record.get("client_name") or ""
    known = record.get("client_id") is not None and not record.get("client_new")
    kind = words["known"] if known else words["new"]
    lines = [f"{name} ({kind})" if name else kind.capitalize()]
    links = []
    if record.get("client_id") is not None:
        links.append((words["client"], f"{web}/clients/{record['client_id']}"))
    if record.get("ticket_id"):
        new = f" ({words['new_ticket']})" if record.get("ticket_new") else ""
        status = STATUS_NAMES.get(record.get("ticket_status") or 0, "")
        owner = record.get("ticket_assignee")
        details = " · ".join(
            x
            for x in (
                record.get("ticket_subject"),
                status,
                f"{words['owner']} {owner}" if owner else "",
            )
            if x
        )
        lines.append(f"{words['ticket']} #{record['ticket_id']}{new}: {details}")
        links.append((words["ticket"], f"{web}/tickets/{record['ticket_id']}"))
    elif rt.settings.create_ticket and not record.get("skipped"):
        # No open ticket yet: say when the call's ticket will be made.
        lines.append(words[f"ticket_on_{rt.settings.ticket_created_on}"])
    return CardPart(title="Usedesk", lines=lines, links=links)


def _error_seen(task: asyncio.Future[dict[str, Any]]) -> None:
    """Mark a lookup's error as seen: after its card gave up, the call's hook reports it."""
    if not task.cancelled():
        task.exception()


CARD_WORDS = {
    "ru": {
        "new": "новый клиент",
        "known": "известный клиент",
        "client": "Клиент",
        "ticket": "Тикет",
        "new_ticket": "новый",
        "owner": "агент",
        "ticket_on_ring": "Тикет создаётся",
        "ticket_on_answer": "Тикет будет создан при ответе",
        "ticket_on_end": "Тикет будет создан после звонка",
    },
    "en": {
        "new": "new client",
        "known": "known client",
        "client": "Client",
        "ticket": "Ticket",
        "owner": "agent",
        "new_ticket": "new",
        "ticket_on_ring": "The ticket is being made",
        "ticket_on_answer": "A ticket is made when the call is answered",
        "ticket_on_end": "A ticket is made when the call ends",
    },
}
STATUS_NAMES = {
    1: "Открыт",
    2: "Выполнен",
    3: "Закрыт",
    5: "На удержании",
    6: "В ожидании",
    8: "Новый",
}
