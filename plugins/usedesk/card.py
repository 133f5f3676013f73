"""The Usedesk part of the agent card: the client, its open ticket, links into Usedesk."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from connector_core.callstate import CallState
from connector_core.integrations import CardPart, Integration
from connector_core.plugin import CrmError

from .client import UsedeskClient
from .flow import AGENTS_TTL, UsedeskRuntime, ensure_ticket, lookup, runtime

log = logging.getLogger(__name__)
# After a failed read of /users, cards show ids for this long rather than ask again each card.
NAMES_RETRY_SECONDS = 60.0


class AgentNames:
    """Usedesk agents' names by id, read with ``/users`` once per ``AGENTS_TTL``: a card names
    the ticket's owner, whoever it is (not only the agents mapped to extensions)."""

    def __init__(self, client: UsedeskClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.clock = client, clock
        self._names: dict[int, str] = {}
        self._next_read = float("-inf")
        self._reading = asyncio.Lock()

    async def name(self, agent: int) -> str | None:
        """``agent``'s name, or ``None`` when Usedesk does not list it or cannot be read."""
        if self.clock() >= self._next_read:
            async with self._reading:  # one read for a burst of cards
                if self.clock() >= self._next_read:
                    await self._read()
        return self._names.get(agent)

    async def _read(self) -> None:
        try:
            everyone = await self.client.users_all()
        except CrmError as exc:
            log.warning("Usedesk agents' names unavailable, cards show ids: %s", exc.message)
            self._next_read = self.clock() + NAMES_RETRY_SECONDS
            return
        self._names = {a.id: a.name for a in everyone if a.name}
        self._next_read = self.clock() + AGENTS_TTL


# One cache per integration's runtime, gone with it (a reload makes new runtimes).
_NAMES: weakref.WeakKeyDictionary[UsedeskRuntime, AgentNames] = weakref.WeakKeyDictionary()


def agent_names(rt: UsedeskRuntime) -> AgentNames:
    """The runtime's cache of agents' names."""
    names = _NAMES.get(rt)
    if names is None:
        names = _NAMES[rt] = AgentNames(rt.client)
    return names


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
    main_link = None
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
                f"{words['owner']} {await _agent(rt, int(owner))}" if owner else "",
            )
            if x
        )
        lines.append(f"{words['ticket']} #{record['ticket_id']}{new}: {details}")
        main_link = (
            f"{words['open_ticket']} #{record['ticket_id']}",
            rt.ticket_url(record["ticket_id"]),
        )
        links.append((words["ticket"], main_link[1]))
    elif rt.settings.create_ticket and not record.get("skipped"):
        # No open ticket yet: say when the call's ticket will be made.
        lines.append(words[f"ticket_on_{rt.settings.ticket_created_on}"])
    # A client made for this call has a name from the template, not one a person gave it.
    caller = name if known else ""
    return CardPart(
        title="Usedesk", lines=lines, links=links, caller_name=caller, main_link=main_link
    )


async def _agent(rt: UsedeskRuntime, agent: int) -> str:
    """The agent's name, or its id when Usedesk does not say (the card must still go)."""
    return await agent_names(rt).name(agent) or str(agent)


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
        "open_ticket": "Открыть тикет",
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
        "open_ticket": "Open ticket",
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
