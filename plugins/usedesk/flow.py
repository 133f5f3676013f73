"""Carrying out the Usedesk scenario for one call against the API.

Every step is recorded in the integration's effect store before the next one, under keys
``phone:<E.164>:client@<account>`` (``hidden_client:<name>@<account>`` for the client that calls
without a usable number go to), ``call:<call_id>``, ``assigned:<call_id>``,
``ticket_owner:<ticket_id>``, ``comment:<call_id>``; a hook
that runs again (a retry, a redelivery, a restart) finds the step done and goes on from
there. Find-or-create for one phone number holds that number's lock, so two calls from one
new number make one client.

The number's client link is keyed by the Usedesk account it came from (``UsedeskClient.account``,
a hash of base_url and token), so an integration pointed at another account never sends the old
ids. A cached id Usedesk refuses as unknown (:class:`UnknownIdError`: the client deleted or
merged, the ticket deleted, the agent removed) is dropped and looked up again in the same hook
call; a second refusal fails the call as any invalid request does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from connector_core import templates
from connector_core.callstate import CallState, Outcome
from connector_core.integrations import CardPart, Integration
from connector_core.phones import digits_only
from connector_core.plugin import Budget

from . import scenario
from .client import ClientSummary, TicketSummary, UnknownIdError, UsedeskClient
from .settings import STATUS_NEW, UsedeskSettings

log = logging.getLogger(__name__)
AGENTS_TTL = 600.0  # agents rarely change; re-read them every ten minutes at most
RECHECK = 3  # newest tickets looked at when an interrupted create is checked
# Clients with one number whose tickets are read to choose among them: bounds the requests
# when an account holds many cards for one number (the rest can still win on the lowest id).
MAX_CANDIDATES_ASKED = 5


@dataclass
class Agents:
    by_extension: dict[str, int]
    on_duty: int | None
    known: set[int] | None
    read_at: float
    # Extension → the agent's name in Usedesk, for the comment's ``{agent}`` variables.
    names: dict[str, str] = field(default_factory=dict)


class UsedeskRuntime:
    """Per-integration state: the API client and the resolved agent mapping."""

    def __init__(self, integration: Integration, client: UsedeskClient | None = None) -> None:
        self.integration = integration
        self.settings: UsedeskSettings = integration.settings  # type: ignore[assignment]
        self.client = client or UsedeskClient(
            api_token=self.settings.api_token.get_secret_value(),
            base_url=self.settings.base_url,
            rate_limit_per_minute=self.settings.rate_limit_per_minute,
            burst_per_second=self.settings.burst_per_second,
            timeout=self.settings.request_timeout_seconds,
            on_request=integration.on_crm_request,
            window_margin=0.25,  # delivery jitter: Usedesk counts arrivals, we count sends
        )
        self._agents: Agents | None = None
        self._agents_refused = False

    async def aclose(self) -> None:
        await self.client.close()

    def crm_budget(self, within: float) -> Budget:
        """The rate limiter's room, so the dispatcher paces calls by it (core ``pacing``)."""
        return self.client.limiter.budget(within)

    def values(self, call: CallState, agent_names: dict[str, str] | None = None) -> dict[str, str]:
        return templates.variables(
            call,
            phone_format=self.settings.phone_format,
            language=self.settings.language,
            timezone=self.settings.timezone,
            answered_owner=self.integration.answered_owner,
            agent_names=agent_names,
        )

    def render(
        self,
        name: str,
        call: CallState,
        *,
        html: bool = False,
        agent_names: dict[str, str] | None = None,
    ) -> str:
        return templates.render(
            self.settings.template(name),
            self.values(call, agent_names),
            escape_html=html,
            language=self.settings.language,
        )

    def forget_agents(self) -> None:
        """Read ``/users`` again at the next need: Usedesk refused an agent id as unknown."""
        self._agents = None
        self._agents_refused = True

    async def usable_author(self, agent: int | None) -> int | None:
        """``agent``, unless Usedesk refused an agent id lately and ``/users`` no longer
        lists it (the comment then goes unsigned rather than failing again)."""
        if agent is None or not self._agents_refused:
            return agent
        known = (await self.agents()).known
        return agent if known is None or agent in known else None

    async def agents(self) -> Agents:
        """Extensions → agent ids, with e-mails resolved and ids checked against ``/users``."""
        if (cached := self._fresh_agents()) is not None:
            return cached
        # One read for every call that finishes at once (a burst), not three requests each.
        async with self.integration.locks("agents"):
            return self._fresh_agents() or await self._read_agents()

    def _fresh_agents(self) -> Agents | None:
        if self._agents is not None and time.monotonic() - self._agents.read_at < AGENTS_TTL:
            return self._agents
        return None

    async def _read_agents(self) -> Agents:
        now = time.monotonic()
        wanted = [u.agent for u in self.settings.users]
        if self.settings.on_duty_user is not None:
            wanted.append(self.settings.on_duty_user)
        known: set[int] | None = None
        by_email: dict[str, int] = {}
        name_of: dict[int, str] = {}
        if wanted:
            everyone = await self.client.users_all()
            known = {a.id for a in everyone}
            by_email = {a.email.lower(): a.id for a in everyone if a.email}
            name_of = {a.id: a.name for a in everyone if a.name}

        def resolve(agent: int | str | None) -> int | None:
            if agent is None or isinstance(agent, int):
                return agent
            found = by_email.get(agent.lower())
            if found is None:
                log.warning("%s: no Usedesk agent with e-mail %s", self.integration.key, agent)
            return found

        mapping = {
            u.extension: a for u in self.settings.users if (a := resolve(u.agent)) is not None
        }
        names = {ext: name_of[a] for ext, a in mapping.items() if a in name_of}
        self._agents = Agents(mapping, resolve(self.settings.on_duty_user), known, now, names)
        return self._agents


def runtime(integration: Integration) -> UsedeskRuntime:
    return integration.runtime  # type: ignore[no-any-return]


async def ensure_ticket(integration: Integration, call: CallState) -> dict[str, Any]:
    """The call's client and ticket, found or created once; the record says which."""
    effects, key = integration.effects, f"call:{call.call_id}"
    record = await effects.get(key)
    if record is not None:
        return record
    plan = scenario.lookup_plan(call, runtime(integration).settings)
    if isinstance(plan, scenario.Wait):
        # Not recorded: the call's end decides, and the hook then asks again.
        log.debug("%s: call %s: %s", integration.key, call.call_id, plan.reason)
        return {"skipped": plan.reason}
    if isinstance(plan, scenario.Skip):
        record = {"skipped": plan.reason}
        await effects.put(key, record)
        log.info("%s: call skipped: %s", integration.key, plan.reason)
        return record
    async with integration.locks(_lock_name(plan)):
        record = await effects.get(key)  # done meanwhile by a concurrent run of this call
        if record is None:
            record = await _find_or_create_healing(integration, call, plan)
            await effects.put(key, record)
            log.info("%s: %s", integration.key, _describe(record))
    return record


def client_key(integration: Integration, phone: str) -> str:
    """The effect key of the number's client link, in the account the runtime talks to.

    It starts ``phone:<E.164>:`` so ``connector forget --phone`` finds it (core convention)."""
    return f"phone:{phone}:client@{runtime(integration).client.account}"


Plan = scenario.Lookup | scenario.HiddenLookup


def _lock_name(plan: Plan) -> str:
    """One find-or-create at a time per number, or per hidden-number client (one card)."""
    if isinstance(plan, scenario.HiddenLookup):
        return f"hidden:{plan.client_name}"
    return f"phone:{plan.phone}"


def _link_key(integration: Integration, plan: Plan) -> str:
    """The effect key of the plan's client link, in the account the runtime talks to."""
    if isinstance(plan, scenario.HiddenLookup):
        return f"hidden_client:{plan.client_name}@{runtime(integration).client.account}"
    return client_key(integration, plan.phone)


async def _find_or_create_healing(
    integration: Integration, call: CallState, plan: Plan
) -> dict[str, Any]:
    """``_find_or_create``; when Usedesk no longer knows the linked client, once more without
    the link."""
    key = _link_key(integration, plan)
    link = await integration.effects.get(key)
    try:
        return await _find_or_create(integration, call, plan)
    except UnknownIdError as exc:
        if link is None or exc.field != "client_id":
            raise  # not a remembered client (one found a moment ago): nothing stale to drop
        await integration.effects.drop(key)
        # The refused create made nothing, so there is nothing for its intent to look for.
        await integration.effects.drop(f"intent:ticket:{call.call_id}")
        if isinstance(plan, scenario.HiddenLookup):
            linked, what = f"«{plan.client_name}»", "client"
        else:
            linked, what = f"…{plan.phone[-4:]}", "number"
        log.warning(
            "%s: Usedesk no longer knows client %s linked to %s (deleted or merged): %s;"
            " looking the %s up again",
            integration.key,
            link.get("id"),
            linked,
            exc.message,
            what,
        )
        return await _find_or_create(integration, call, plan)


async def _find_or_create(integration: Integration, call: CallState, plan: Plan) -> dict[str, Any]:
    rt = runtime(integration)
    settings = rt.settings
    client_id, client_name, client_new, tickets = await _client(integration, call, plan)
    if client_id is None:
        return {"skipped": "unknown number, and creating clients is off (create_client)"}
    record: dict[str, Any] = {
        "client_id": client_id,
        "client_name": client_name,
        "client_new": client_new,
    }
    if plan.search_tickets and not client_new:  # a client made a moment ago has no tickets
        if tickets is None:  # not already read while choosing among several clients
            tickets = await rt.client.list_tickets(
                client_id=client_id, statuses=settings.search_statuses
            )
        found = scenario.pick_ticket(tickets, settings.search_statuses)
        if found is not None:
            return {
                **record,
                "ticket_id": found.id,
                "ticket_new": False,
                "ticket_assignee": found.assignee_id,
                "ticket_subject": found.subject,
                "ticket_status": found.status_id,
            }
    if not plan.create_ticket:
        return {
            **record,
            "ticket_id": None,
            "skipped": "no ticket in the searched statuses, and creating tickets is off",
        }
    intent = f"intent:ticket:{call.call_id}"
    if not await integration.effects.put(intent, {"client_id": client_id}):
        # An earlier attempt got as far as creating the ticket; did Usedesk make it?
        made = await _ticket_made_for(rt, client_id, call.call_id)
        if made is not None:
            return {**record, "ticket_id": made, "ticket_new": True, "ticket_assignee": None}
    subject = rt.render("ticket_subject", call)[:255]
    ticket_id = await rt.client.create_ticket(
        subject=subject,
        message=rt.render("ticket_message", call),
        client_id=client_id,
        type=settings.ticket_type,
        tag=rt.render("ticket_tag", call) or None,
        private_comment=True,
        additional_id=call.call_id,
        channel_id=settings.channel_id,
    )
    return {
        **record,
        "ticket_id": ticket_id,
        "ticket_new": True,
        "ticket_assignee": None,
        "ticket_subject": subject,
        "ticket_status": STATUS_NEW,
    }


async def _ticket_made_for(rt: UsedeskRuntime, client_id: int, call_id: str) -> int | None:
    """After a crash mid-create: the client's newest ticket carrying this call's id, if any."""
    for ticket in (await rt.client.list_tickets(client_id=client_id))[:RECHECK]:
        if (await rt.client.get_ticket(ticket.id)).additional_id == call_id:
            return ticket.id
    return None


async def _comment_made_for(rt: UsedeskRuntime, ticket_id: int, call_id: str) -> int | None:
    """After a crash mid-create: this call's comment on the ticket, found by the call id."""
    for comment in (await rt.client.get_ticket(ticket_id)).comments:
        if call_id in comment.message:
            return comment.id
    return None


async def _client(
    integration: Integration, call: CallState, plan: Plan
) -> tuple[int | None, str, bool, list[TicketSummary] | None]:
    """The client with this phone (id, name, just created?, its searched tickets if read):
    remembered, found, or created."""
    effects, key = integration.effects, _link_key(integration, plan)
    remembered = await effects.get(key)
    if remembered is not None:
        return int(remembered["id"]), remembered.get("name", ""), False, None
    if isinstance(plan, scenario.HiddenLookup):
        return await _hidden_client(integration, plan, key)
    rt = runtime(integration)
    hits = await rt.client.find_clients_by_phone(plan.phone, region=integration.region)
    if hits:
        chosen, tickets = await _one_of(integration, plan.phone, hits)
        await effects.put(key, {"id": chosen.id, "name": chosen.name})
        return chosen.id, chosen.name, False, tickets
    if not plan.create_client:
        return None, "", False, None
    name = rt.render("client_name", call)[:255]
    client_id = await rt.client.create_client(
        name=name, phone_digits=digits_only(plan.phone, rt.settings.phone_format)
    )
    await effects.put(key, {"id": client_id, "name": name})
    return client_id, name, True, None


async def _hidden_client(
    integration: Integration, plan: scenario.HiddenLookup, key: str
) -> tuple[int, str, bool, None]:
    """The client that calls without a number go to, not remembered under ``key`` yet: found
    by its exact name (of several, the lowest id, with a warning), or created without a
    phone."""
    rt, name = runtime(integration), plan.client_name
    hits = await rt.client.search_clients(name, search_type="full_match")
    named = sorted(
        (h for h in hits if h.name.strip().casefold() == name.strip().casefold()),
        key=lambda h: h.id,
    )
    if len(named) > 1:
        log.warning(
            "%s: %d Usedesk clients are named «%s»: %s; calls without a number go to %d, "
            "the lowest id",
            integration.key,
            len(named),
            name,
            ", ".join(str(h.id) for h in named),
            named[0].id,
        )
    if named:
        client_id, new = named[0].id, False
    else:
        client_id, new = await rt.client.create_client(name=name, phone_digits=None), True
    await integration.effects.put(key, {"id": client_id, "name": name})
    return client_id, name, new, None


async def _one_of(
    integration: Integration, phone: str, hits: list[ClientSummary]
) -> tuple[ClientSummary, list[TicketSummary] | None]:
    """One client of those with the number (``scenario.pick_client``), and its tickets in the
    searched statuses when they were read to choose."""
    if len(hits) == 1:
        return hits[0], None
    rt = runtime(integration)
    statuses = rt.settings.search_statuses
    listed: dict[int, list[TicketSummary]] = {}
    # A client without any ticket cannot have an open one: no request for it.
    for hit in [h for h in hits if h.ticket_ids][:MAX_CANDIDATES_ASKED]:
        listed[hit.id] = await rt.client.list_tickets(client_id=hit.id, statuses=statuses)
    choice = scenario.pick_client(
        hits, {cid: scenario.pick_ticket(found, statuses) for cid, found in listed.items()}
    )
    log.warning(
        "%s: %d Usedesk clients have the number …%s: %s; the call goes to %d because %s",
        integration.key,
        len(hits),
        phone[-4:],
        ", ".join(f"{h.id} «{h.name}»" for h in hits),
        choice.client.id,
        choice.reason,
    )
    return choice.client, listed.get(choice.client.id)


async def finish(integration: Integration, call: CallState) -> None:
    """Set the ticket's owner and write the call's one comment; a ticket or agent Usedesk
    refuses as unknown is looked up again once (the ticket through the call's client)."""
    try:
        await _finish(integration, call)
    except UnknownIdError as exc:
        if not await _forget_refused(integration, call, exc):
            raise
        await _finish(integration, call)


async def _forget_refused(integration: Integration, call: CallState, exc: UnknownIdError) -> bool:
    """Drop what the refused id came from; ``False`` if it is not an id this flow caches."""
    if exc.field == "ticket_id":
        record = await integration.effects.get(f"call:{call.call_id}")
        # The owner was set and the comment intended on the ticket that is gone.
        for step in ("call", "assigned", "intent:comment"):
            await integration.effects.drop(f"{step}:{call.call_id}")
        what = f"ticket {record.get('ticket_id')}" if record else "the call's ticket"
    elif exc.field in ("assignee_id", "user_id"):
        runtime(integration).forget_agents()
        what = "an agent id"
    else:
        return False
    log.warning(
        "%s: Usedesk no longer knows %s (%s); looking it up again",
        integration.key,
        what,
        exc.message,
    )
    return True


async def _finish(integration: Integration, call: CallState) -> None:
    record = await ensure_ticket(integration, call)
    ticket_id = record.get("ticket_id")
    if not ticket_id:
        return
    rt, effects = runtime(integration), integration.effects
    assigned = await effects.get(f"assigned:{call.call_id}")
    if assigned is None:
        agents = await rt.agents()
        # Another call on the same ticket (the same client calling twice at once) may have
        # set its owner since this call looked the ticket up: that owner stays.
        owner = await effects.get(f"ticket_owner:{ticket_id}")
        current = owner["agent"] if owner else record.get("ticket_assignee")
        if current is None and not record.get("ticket_new") and call.outcome is not Outcome.MISSED:
            # Unowned when the phone rang: a person may have taken it since. Ask again.
            current = (await rt.client.get_ticket(ticket_id)).assignee_id
        decision = scenario.assignment(
            call,
            rt.settings,
            ticket_is_new=bool(record.get("ticket_new")) and owner is None,
            ticket_assignee=current,
            agents=agents.by_extension,
            on_duty=agents.on_duty,
            known_agents=agents.known,
            answered_owner=integration.answered_owner,
        )
        if decision.agent is not None:
            await rt.client.update_ticket(ticket_id, assignee_id=decision.agent, silent=True)
            await effects.put(f"ticket_owner:{ticket_id}", {"agent": decision.agent})
        assigned = {"agent": decision.agent, "reason": decision.reason}
        await effects.put(f"assigned:{call.call_id}", assigned)
        log.info("%s: ticket %s owner: %s", integration.key, ticket_id, decision.reason)
    if await effects.get(f"comment:{call.call_id}") is None:
        agents = await rt.agents()  # read once per ten minutes: no request here as a rule
        author = await rt.usable_author(_author(call, integration, agents, assigned))
        made = None
        if not await effects.put(f"intent:comment:{call.call_id}", {"ticket_id": ticket_id}):
            made = await _comment_made_for(rt, ticket_id, call.call_id)
        comment_id = made or await rt.client.create_comment(
            ticket_id,
            message=rt.render("comment", call, html=True, agent_names=agents.names),
            type="private",
            from_="user",
            user_id=author,
        )
        await effects.put(f"comment:{call.call_id}", {"id": comment_id, "ticket_id": ticket_id})


def _author(
    call: CallState, integration: Integration, agents: Agents, assigned: dict[str, Any]
) -> int | None:
    """Who signs the call's comment: the agent who took (or dialled) the call when mapped, so
    an existing ticket's comment is not the company's first user's; else the ticket's new
    owner (the on-duty agent of a missed call), else nobody (Usedesk's default)."""
    extension = call.owner(integration.answered_owner)
    spoke = agents.by_extension.get(extension) if extension else None
    if spoke is not None and (agents.known is None or spoke in agents.known):
        return spoke
    agent = assigned.get("agent")
    return int(agent) if agent is not None else None


def _describe(record: dict[str, Any]) -> str:
    if "skipped" in record and not record.get("ticket_id"):
        return f"call skipped: {record['skipped']}"
    client = ("new client " if record.get("client_new") else "client ") + str(record["client_id"])
    ticket = ("new ticket " if record.get("ticket_new") else "ticket ") + str(record["ticket_id"])
    return f"{client}, {ticket}"


async def card(integration: Integration, call: CallState) -> CardPart | None:
    """The agent card's Usedesk part: new or known client, the open ticket, links.

    Uses what the start of the call already found; when the card is asked for before that
    (the usual case: the phone rings first), it waits for the same find-or-create under the
    phone lock rather than searching twice.
    """
    rt = runtime(integration)
    # A card that gives up waiting must not cancel the lookup half-way: the call's own hook
    # would then search again from the start, spending the rate budget twice.
    lookup = asyncio.ensure_future(ensure_ticket(integration, call))
    lookup.add_done_callback(_error_seen)
    record = await asyncio.shield(lookup)
    if "client_id" not in record:
        return CardPart(title="Usedesk", lines=[record.get("skipped", "")])
    web = rt.settings.web_url.rstrip("/")
    words = CARD_WORDS[rt.settings.language]
    name = record.get("client_name") or ""
    lines = [f"{name} ({words['new'] if record.get('client_new') else words['known']})"]
    links = [(words["client"], f"{web}/clients/{record['client_id']}")]
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
    },
    "en": {
        "new": "new client",
        "known": "known client",
        "client": "Client",
        "ticket": "Ticket",
        "owner": "agent",
        "new_ticket": "new",
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
