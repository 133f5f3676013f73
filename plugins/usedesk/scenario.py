"""What the Usedesk integration does with a call: pure decisions, no I/O.

The flow (``flow.py``) asks these functions what to do and carries it out against the API;
keeping the decisions here lets every setting and call type be tested without a server.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from connector_core.callstate import CallState, Direction, Outcome

from .client import ClientSummary, TicketSummary
from .settings import UsedeskSettings


@dataclass(frozen=True)
class Skip:
    """The integration leaves this call alone, for ``reason``."""

    reason: str


@dataclass(frozen=True)
class Lookup:
    """Find (or create) the client and the ticket for the call's number."""

    phone: str  # E.164
    search_tickets: bool  # False with always_new_ticket: every call gets its own ticket
    create_client: bool
    create_ticket: bool


@dataclass(frozen=True)
class HiddenLookup:
    """A missed call without a usable number: it goes to the client named ``client_name``
    (setting ``hidden_number_client``), found or created once by that name."""

    client_name: str
    search_tickets: bool
    create_ticket: bool


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet: whether the call gets anything depends on how it ends."""

    reason: str


def lookup_plan(call: CallState, settings: UsedeskSettings) -> Lookup | HiddenLookup | Skip | Wait:
    """What to look up (or create) for ``call`` in its current state.

    A call without a usable number (hidden, ``anonymous``, too short) has no client of its own.
    Only a missed inbound one is written, under the ``hidden_number_client`` client, when
    ``hidden_number = "ticket"``: a missed call is the one nobody would otherwise hear of,
    while an agent who answered knows of the call, and a shared card would gather unrelated
    conversations. Until such a call ends it is not known whether it will be missed: ``Wait``.
    """
    if call.direction is Direction.INTERNAL:
        return Skip("internal call")
    if call.direction is Direction.UNKNOWN:
        return Skip("the call's direction is unknown")
    if not call.client_number:
        return _without_number(call, settings)
    return Lookup(
        phone=call.client_number,
        search_tickets=not settings.always_new_ticket,
        create_client=settings.create_client,
        create_ticket=settings.create_ticket,
    )


def _without_number(call: CallState, settings: UsedeskSettings) -> HiddenLookup | Skip | Wait:
    came = f"no usable client number ({call.client_number_raw or 'none'})"
    if settings.hidden_number == "skip":
        return Skip(f'{came}; hidden_number = "skip"')
    if call.direction is not Direction.INBOUND:
        return Skip(f"{came} on an outbound call")
    if not call.finished:
        return Wait(f"{came}: decided when the call ends, as only a missed one is written")
    if call.outcome is not Outcome.MISSED:
        return Skip(f"{came}; the call was answered, so the agent knows of it")
    return HiddenLookup(
        client_name=settings.hidden_number_client,
        search_tickets=not settings.always_new_ticket,
        create_ticket=settings.create_ticket,
    )


def pick_ticket(
    tickets: Sequence[TicketSummary], statuses: Collection[int]
) -> TicketSummary | None:
    """«Из нескольких … выбирается первая в списке»: the first in Usedesk's list order.

    The list is asked for newest first (``sort=id, order=desc``, as Usedesk's own ticket list
    shows them), so of several matching tickets the most recent one gets the call.
    """
    return next((t for t in tickets if t.status_id in statuses), None)


@dataclass(frozen=True)
class ClientChoice:
    """The client a call goes to when several have its number, and why (for the log)."""

    client: ClientSummary
    reason: str


def pick_client(
    candidates: Sequence[ClientSummary], open_tickets: Mapping[int, TicketSummary | None]
) -> ClientChoice:
    """Of several clients with the caller's number, the one the call belongs to.

    The client with an open ticket (one in the searched statuses, ``open_tickets`` by client
    id) gets the call, as that is the conversation in progress; of several, the one whose
    open ticket is the newest (highest ticket id). When none has one, the lowest client id,
    the card that existed first. Same data, same answer: retries and replays agree.
    """
    if not candidates:
        raise ValueError("pick_client needs at least one candidate")
    with_open = [(t, c) for c in candidates if (t := open_tickets.get(c.id)) is not None]
    if with_open:
        ticket, client = max(with_open, key=lambda pair: pair[0].id)
        return ClientChoice(client, f"it has the newest open ticket, {ticket.id}")
    client = min(candidates, key=lambda c: c.id)
    return ClientChoice(client, "none has an open ticket: the lowest id")


@dataclass(frozen=True)
class Assignment:
    """Who should own the ticket when the call ends; ``agent=None`` leaves it as it is."""

    agent: int | None
    reason: str


def assignment(
    call: CallState,
    settings: UsedeskSettings,
    *,
    ticket_is_new: bool,
    ticket_assignee: int | None,
    agents: Mapping[str, int],
    on_duty: int | None,
    known_agents: Collection[int] | None,
    answered_owner: str = "last",
) -> Assignment:
    """Decide the ticket's owner at the end of ``call``.

    ``agents`` maps extensions to resolved Usedesk agent ids; ``known_agents`` is every agent
    id Usedesk has (``None`` if unknown), so a mapping to a deleted agent is caught here
    rather than as an API error.
    """
    if call.outcome is Outcome.MISSED:
        if not ticket_is_new:
            return Assignment(None, "missed call on an existing ticket: owner unchanged")
        if settings.first_on_line_responsible and call.first_extension:
            agent = agents.get(call.first_extension)
            if agent is not None:
                return _checked(agent, f"first on the line ({call.first_extension})", known_agents)
            if on_duty is None:
                return Assignment(
                    None,
                    f"extension {call.first_extension} has no agent mapped "
                    "and there is no on-duty agent",
                )
            return _checked(
                on_duty, f"on duty (extension {call.first_extension} has no agent)", known_agents
            )
        if on_duty is None:
            return Assignment(None, "missed call and no on-duty agent configured")
        return _checked(on_duty, "on duty (missed call)", known_agents)

    if not ticket_is_new and ticket_assignee is not None:
        return Assignment(None, f"the ticket already has an owner ({ticket_assignee})")
    extension = call.owner(answered_owner)
    if extension is None:
        return Assignment(None, "nobody on our side took part in the call")
    agent = agents.get(extension)
    if agent is None:
        return Assignment(None, f"extension {extension} has no agent mapped")
    role = "answered" if call.direction is Direction.INBOUND else "called"
    return _checked(agent, f"{role} (extension {extension})", known_agents)


def _checked(agent: int, reason: str, known_agents: Collection[int] | None) -> Assignment:
    if known_agents is not None and agent not in known_agents:
        return Assignment(None, f"agent {agent} ({reason}) does not exist in Usedesk")
    return Assignment(agent, reason)
