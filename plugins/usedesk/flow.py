"""Carrying out the Usedesk scenario for one call against the API.

Every step is recorded in the integration's effect store before the next one, under keys
``phone:<E.164>:client@<account>`` (``hidden_client:<name>@<account>`` for the client that calls
without a usable number go to), ``call:<call_id>``, ``assigned:<call_id>``,
``ticket_owner:<ticket_id>``, ``comment:<call_id>``, and ``phone:<E.164>:missed@<account>`` for
the number's open missed-call ticket (``missed.py``); a hook
that runs again (a retry, a redelivery, a restart) finds the step done and goes on from
there. Find-or-create for one phone number holds that number's lock, so two calls from one
new number make one client; and while a call's create of the number's ticket may still land
(``creating:phone:<E.164>@<account>``; ``creating:hidden_client:<name>@<account>``), the
number's other calls wait for it, and look again if they looked before it.

The number's client link is keyed by the Usedesk account it came from (``UsedeskClient.account``,
a hash of base_url and token), so an integration pointed at another account never sends the old
ids. A cached id Usedesk refuses as unknown (:class:`UnknownIdError`: the client deleted or
merged, the ticket deleted, the agent removed) is dropped and looked up again in the same hook
call; a second refusal fails the call as any invalid request does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector_core import templates
from connector_core.callstate import CallState, Direction, Outcome
from connector_core.integrations import Integration
from connector_core.phones import digits_only
from connector_core.plugin import Budget, CrmError, Decision, RetryLater, TransientError

from . import scenario
from .client import (
    BeforeSend,
    ClientSummary,
    NewClient,
    TicketSummary,
    UnknownIdError,
    UsedeskClient,
)
from .settings import STATUS_NEW, UsedeskSettings

log = logging.getLogger(__name__)
AGENTS_TTL = 600.0  # agents rarely change; re-read them every ten minutes at most
WILDCARDS_TTL = 600.0  # an unknown answer about the search's wildcards is asked again after this
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
            shared_rate=integration.shared_rate,
        )
        self._agents: Agents | None = None
        self._agents_refused = False
        # Intents whose create got an answer in this process: looked for at once if the
        # answer could not be recorded (flow._answered_or_pending).
        self.answered_creates: set[str] = set()
        # Whether /clients takes LIKE wildcards, and when that was last asked (None: unknown).
        self._wildcards: bool | None = None
        self._wildcards_asked_at = -WILDCARDS_TTL

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

    async def search_takes_wildcards(self) -> bool:
        """Whether a number is searched with one ``LIKE`` pattern (``phone_search``): asked
        of Usedesk once (:meth:`UsedeskClient.search_takes_wildcards`) under ``auto``, and
        again within ten minutes while the answer is unknown (an account without clients)."""
        mode = self.settings.phone_search
        if mode != "auto":
            return mode == "pattern"
        if self._wildcards is None and time.monotonic() - self._wildcards_asked_at >= WILDCARDS_TTL:
            async with self.integration.locks("wildcards"):
                if time.monotonic() - self._wildcards_asked_at >= WILDCARDS_TTL:
                    self._wildcards = await self.client.search_takes_wildcards()
                    self._wildcards_asked_at = time.monotonic()
                    log.info(
                        "%s: Usedesk's client search %s",
                        self.integration.key,
                        {
                            True: "takes LIKE wildcards: one query per number",
                            False: "takes %% literally: three spellings per number",
                            None: "has no clients yet: three spellings per number for now",
                        }[self._wildcards],
                    )
        return bool(self._wildcards)

    def ticket_url(self, ticket_id: int) -> str:
        """The ticket in Usedesk's web interface (``web_url``)."""
        return f"{self.settings.web_url.rstrip('/')}/tickets/{ticket_id}"

    def call_link(self, record: Mapping[str, Any]) -> str | None:
        """The console's link for a call: its ticket (``record`` is ``call:<call_id>``)."""
        ticket_id = record.get("ticket_id")
        return self.ticket_url(int(ticket_id)) if ticket_id else None

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


async def on_ring(integration: Integration, call: CallState) -> None:
    """The phone rings (or the call reached a transfer scheme): look the number up, and
    create the ticket now when ``ticket_created_on = "ring"``."""
    if runtime(integration).settings.ticket_created_on == "ring":
        await ensure_ticket(integration, call)
    else:
        await lookup(integration, call)


async def lookup(integration: Integration, call: CallState) -> dict[str, Any]:
    """What Usedesk holds for the call's number: its client (``client_id`` ``None`` when there
    is none yet) and the client's open ticket. Writes nothing to Usedesk.

    Found once per call and recorded (``lookup:<call_id>``): the card, a retry and the call's
    end read the record and never search again. A call that already has its ticket returns
    that record (``call:<call_id>``)."""
    effects = integration.effects
    done = await effects.get(f"call:{call.call_id}")
    if done is not None:
        return done
    key = f"lookup:{call.call_id}"
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
        await effects.put(f"call:{call.call_id}", record)
        log.info("%s: call skipped: %s", integration.key, plan.reason)
        integration.report(Decision("call skipped", plan.reason))
        return record
    async with integration.locks(_lock_name(plan)):
        record = await effects.get(key)  # looked up meanwhile by a concurrent run of this call
        if record is None:
            record = await _open_missed_ticket(integration, call, plan) or await _healing(
                integration, call, plan, lambda: _look_up(integration, plan)
            )
            # When: a create of the number's ticket sent after it may have made what it lacks.
            record = {**record, "looked_at": time.time()}
            await effects.put(key, record)
            _report_lookup(integration, record)
    return record


async def ensure_ticket(integration: Integration, call: CallState) -> dict[str, Any]:
    """The call's client and ticket: the open ticket the lookup found, or one created now
    (together with the client when Usedesk has none). Recorded under ``call:<call_id>``.

    A ticket created once the call is answered gets its owner in the same request; one
    created at the end also carries the call's comment as its first message."""
    effects, key = integration.effects, f"call:{call.call_id}"
    record = await effects.get(key)
    if record is not None:
        return record
    found = await lookup(integration, call)
    if "client_id" not in found:  # skipped, or waiting for the call's end
        return found
    plan = scenario.lookup_plan(call, runtime(integration).settings)
    if isinstance(plan, scenario.Skip | scenario.Wait):  # the lookup would have said so
        return {"skipped": plan.reason}
    async with integration.locks(_lock_name(plan)):
        record = await effects.get(key)  # done meanwhile by a concurrent run of this call
        if record is None:

            async def again() -> dict[str, Any]:
                # After a stale link was dropped: the lookup is redone, then the ticket.
                fresh = {**await _look_up(integration, plan), "looked_at": time.time()}
                await effects.drop(f"lookup:{call.call_id}")
                await effects.put(f"lookup:{call.call_id}", fresh)
                return await _ticket_for(integration, call, plan, fresh)

            record = await _healing(
                integration,
                call,
                plan,
                lambda: _ticket_for(integration, call, plan, found),
                retry=again,
            )
            await effects.put(key, record)
            await _record_steps_done(integration, plan, call, record)
            log.info("%s: %s", integration.key, _describe(record))
            _report_ticket(integration, record)
    return record


async def _record_steps_done(
    integration: Integration, plan: Plan, call: CallState, record: dict[str, Any]
) -> None:
    """The steps a ticket's create also did, as the steps' own keys, after the call record
    that holds them too: the number's link (a client made with the ticket is found through
    it), the owner, the decision, the comment carried as its first message."""
    effects, ticket_id = integration.effects, record.get("ticket_id")
    if record.get("link"):
        await effects.put(_link_key(integration, plan), record["link"])
    if record.get("owner_set") is not None:
        owner = {"agent": record["owner_set"], "call": call.call_id}
        await effects.put(f"ticket_owner:{ticket_id}", owner)
    if record.get("assigned") is not None:
        await effects.put(f"assigned:{call.call_id}", record["assigned"])
    if record.get("comment_in_ticket"):
        done = {"id": None, "ticket_id": ticket_id, "first_message": True}
        await effects.put(f"comment:{call.call_id}", done)


def missed_key(integration: Integration, phone: str) -> str:
    """The effect key of the number's open missed-call ticket: the ticket of its first missed
    call, while its calls go there (``missed_same_ticket_hours``)."""
    return f"phone:{phone}:missed@{runtime(integration).client.account}"


async def _open_missed_ticket(
    integration: Integration, call: CallState, plan: Plan
) -> dict[str, Any] | None:
    """The lookup's record when the number has an open missed-call ticket: every call of the
    number goes there (one ticket for one person's missed calls and the callback), even with
    ``always_new_ticket``. A ticket past ``missed_same_ticket_hours``, gone from Usedesk or no
    longer in ``search_statuses`` is forgotten: the call is looked up as usual."""
    rt = runtime(integration)
    hours = rt.settings.missed_same_ticket_hours
    if not isinstance(plan, scenario.Lookup) or not hours:
        return None
    key = missed_key(integration, plan.phone)
    missed = await integration.effects.get(key)
    if missed is None:
        return None
    ticket = None
    if (call.started_at or 0) - int(missed.get("started_at") or 0) <= hours * 3600:
        try:
            ticket = await rt.client.get_ticket(int(missed["ticket_id"]))
        except UnknownIdError:
            ticket = None
    if ticket is None or ticket.status_id not in rt.settings.search_statuses:
        await integration.effects.drop(key)
        return None
    link = await integration.effects.get(_link_key(integration, plan)) or {}
    integration.report(
        Decision(
            f"ticket {ticket.id}",
            f"the number's open missed-call ticket (call {missed.get('call_id')})",
            link=rt.ticket_url(ticket.id),
        )
    )
    found = {"client_id": ticket.client_id, "client_name": link.get("name", "")}
    return {**found, "client_new": False, **_ticket_fields(ticket)}


async def _remember_missed_ticket(
    integration: Integration, call: CallState, ticket_id: int
) -> None:
    """A missed call's ticket becomes the number's open missed-call ticket, unless the number
    has one already (the first missed call's stays: ``put`` writes only a new key)."""
    settings = runtime(integration).settings
    if (
        settings.missed_same_ticket_hours
        and call.client_number
        and call.direction is Direction.INBOUND
        and call.outcome is Outcome.MISSED
    ):
        await integration.effects.put(
            missed_key(integration, call.client_number),
            {"ticket_id": ticket_id, "call_id": call.call_id, "started_at": call.started_at},
        )


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


def _creating_key(integration: Integration, plan: Plan) -> str:
    """The effect key of the number's newest ticket create (its call, when it was sent): the
    number's other calls wait while it may still land, and look again if they looked before
    it could have (:func:`_looked_up_again`).

    Not under ``phone:<E.164>``, where ``connector forget`` drops the number's links: the mark
    is no link, and dropped while a create may still land it would let a second one be made."""
    account = runtime(integration).client.account
    if isinstance(plan, scenario.HiddenLookup):
        return f"creating:hidden_client:{plan.client_name}@{account}"
    return f"creating:phone:{plan.phone}@{account}"


async def _healing(
    integration: Integration,
    call: CallState,
    plan: Plan,
    step: Callable[[], Awaitable[dict[str, Any]]],
    retry: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """``step``; when Usedesk no longer knows the linked client (or the ticket it was
    created with), the link is dropped and ``retry`` (or ``step``) runs once more."""
    key = _link_key(integration, plan)
    link = await integration.effects.get(key)
    try:
        return await step()
    except UnknownIdError as exc:
        if link is None or exc.field not in ("client_id", "ticket_id"):
            raise  # not a remembered link (one found a moment ago): nothing stale to drop
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
            link.get("id") or f"of ticket {link.get('ticket')}",
            linked,
            exc.message,
            what,
        )
        return await (retry or step)()


async def _look_up(integration: Integration, plan: Plan) -> dict[str, Any]:
    """The client with the plan's number (remembered, or searched) and its open ticket."""
    rt = runtime(integration)
    link = await integration.effects.get(_link_key(integration, plan))
    tickets: list[TicketSummary] | None = None
    if link is not None:
        linked = await _linked_client(integration, plan, link)
        if linked.get("ticket_id"):  # the ticket the client was made with, still open
            return {"client_new": False, **linked}
        client_id, name = linked["client_id"], linked["client_name"]
    else:
        client_id, name, tickets = await _client(integration, plan)
    record: dict[str, Any] = {"client_id": client_id, "client_name": name, "client_new": False}
    if client_id is None or not plan.search_tickets:
        return {**record, "ticket_id": None}
    if tickets is None:  # not already read while choosing among several clients
        tickets = await rt.client.list_tickets(
            client_id=client_id, statuses=rt.settings.search_statuses
        )
    found = scenario.pick_ticket(tickets, rt.settings.search_statuses)
    if found is None:
        return {**record, "ticket_id": None}
    return {**record, **_ticket_fields(found)}


def _ticket_fields(ticket: TicketSummary) -> dict[str, Any]:
    return {
        "ticket_id": ticket.id,
        "ticket_new": False,
        "ticket_assignee": ticket.assignee_id,
        "ticket_subject": ticket.subject,
        "ticket_status": ticket.status_id,
    }


async def _ticket_for(
    integration: Integration, call: CallState, plan: Plan, found: dict[str, Any]
) -> dict[str, Any]:
    """The record of the call's ticket: ``found``'s open ticket, or a new one."""
    if not found.get("ticket_id") and (found.get("client_id") is None or plan.search_tickets):
        # No open ticket when this call looked: another call's create since may have made
        # one it should use (or the client it lacks).
        found = await _looked_up_again(integration, call, plan, found)
    if found.get("ticket_id"):
        intent = f"intent:ticket:{call.call_id}"
        earlier = await integration.effects.get(intent)
        if earlier is None:
            return {**found, "ticket_new": False}
        # An earlier attempt of this call sent a create that got no answer (the process
        # died), and the lookup, redone since (by this call, or by the number's next call
        # that found and linked the client it made), finds an open ticket: it may be the one
        # that create made, with the call's comment as its first message. Settle the create
        # first, or the comment would be written on it a second time.
        # Looked for where it was sent: among the number's clients when it made one.
        made = await _made_by_earlier_attempt(
            integration,
            intent,
            lambda: _ticket_made_for(integration, plan, earlier.get("client_id"), call.call_id),
        )
        if made is None:  # it never landed: the open ticket is another call's
            return {**found, "ticket_new": False}
        # It landed: recorded as that create's ticket (the intent says what it carried).
        return await _create_ticket(integration, call, plan, {**found, "ticket_id": None})
    client_id = found.get("client_id")
    if client_id is None and isinstance(plan, scenario.Lookup) and not plan.create_client:
        return {**found, "skipped": "unknown number, and creating clients is off (create_client)"}
    if not plan.create_ticket:
        if client_id is None:
            client_id = await _create_client_only(integration, call, plan)
            found = {**found, "client_id": client_id, "client_new": True}
        return {
            **found,
            "ticket_id": None,
            "skipped": "no ticket in the searched statuses, and creating tickets is off",
        }
    return await _create_ticket(integration, call, plan, found)


async def _looked_up_again(
    integration: Integration, call: CallState, plan: Plan, found: dict[str, Any]
) -> dict[str, Any]:
    """``found`` (no open ticket), or the number looked up again when it may have one by now.

    Two ways the number may have got a ticket or client since this call looked:

    * Another call of the number sent a create of its ticket (and client) since, or shortly
      before, so it may have landed after the look (the number's last create is named under
      ``_creating_key``). If that create got no answer (its process died, Usedesk answered
      too late), it may still land until ``write_settle_seconds`` after it was sent: this call
      waits (:class:`RetryLater`) rather than make a second one, then looks.
    * For a number without a client: another call made and linked it (links are written
      under the lock this runs in), or found the one this call's unanswered create made."""
    effects, rt = integration.effects, runtime(integration)
    creating = await effects.get(_creating_key(integration, plan))
    if creating is not None and creating.get("call_id") != call.call_id:
        other = creating.get("call_id")
        intent = f"intent:ticket:{other}"  # the create the mark names
        if await effects.get(f"call:{other}") is None and await effects.get(intent) is not None:
            wait = _may_land_for(rt, intent, creating)
            if wait > 0:
                raise RetryLater(
                    f"call {other} sent a create of this number's ticket that got no answer"
                    f" and may still land in Usedesk; looking for it in {wait:.0f} s"
                    " (write_settle_seconds)",
                    seconds=wait,
                )
        landed_by = float(creating.get("sent_at", 0.0)) + rt.settings.write_settle_seconds
        if landed_by > float(found.get("looked_at", 0.0)):  # it may have landed after the look
            return await _look_up(integration, plan)
    if found.get("client_id") is None and await effects.get(_link_key(integration, plan)):
        return await _look_up(integration, plan)  # the link, and that client's tickets
    return found


async def _create_ticket(
    integration: Integration, call: CallState, plan: Plan, found: dict[str, Any]
) -> dict[str, Any]:
    """Create the call's ticket (and its client when ``found`` has none): the owner is set in
    the same request when the call was answered, and at the call's end the first message is
    the call's comment. The intent and the ticket's ``additional_id`` (the call id) let a
    later attempt find a ticket whose create got no answer."""
    rt, effects, settings = runtime(integration), integration.effects, runtime(integration).settings
    client_id: int | None = found.get("client_id")
    intent = f"intent:ticket:{call.call_id}"
    earlier = await effects.get(intent) or {}  # what an earlier attempt sent, if it did
    made = await _made_by_earlier_attempt(
        integration,
        intent,
        lambda: _ticket_made_for(integration, plan, earlier.get("client_id"), call.call_id),
    )
    owner: Any = None
    assigned: dict[str, Any] | None = None
    agents = await rt.agents() if call.answered or call.finished else None
    if agents is not None:
        decision = _decide_owner(integration, call, agents, ticket_is_new=True, current=None)
        owner = decision.agent
        if call.finished:
            assigned = {"agent": decision.agent, "reason": decision.reason}
    name = (
        plan.client_name
        if isinstance(plan, scenario.HiddenLookup)
        else rt.render("client_name", call)[:255]
    )
    subject = rt.render("ticket_subject", call)[:255]
    if made is not None:
        # As the earlier attempt sent it: its owner, and its first message (the comment, if
        # the call had ended then).
        ticket_id, client_new = made, client_id is None
        owner, with_comment = earlier.get("owner"), bool(earlier.get("with_comment"))
    else:
        author = None
        if call.finished and agents is not None:
            author = await rt.usable_author(_author(call, integration, agents, assigned or {}))
        message = (
            rt.render("comment", call, html=True, agent_names=agents.names)
            if call.finished and agents is not None
            else rt.render("ticket_message", call)
        )
        with_comment = call.finished and agents is not None
        new_client = None
        if client_id is None:
            digits = (
                digits_only(plan.phone, settings.phone_format)
                if isinstance(plan, scenario.Lookup)
                else None
            )
            new_client = NewClient(name, digits)
        marks_number = new_client is not None or plan.search_tickets

        async def mark_number(sent_at: float) -> None:
            # The number's other calls wait for this create rather than make a second one,
            # and look again if they looked before it (the mark stays: the newest create's).
            creating = _creating_key(integration, plan)
            mark = {"call_id": call.call_id, "sent_at": sent_at}
            if not await effects.put(creating, mark):  # an earlier create's mark
                await effects.drop(creating)
                await effects.put(creating, mark)

        record = {"client_id": client_id, "owner": owner, "with_comment": with_comment}
        ticket_id = await _answered_or_pending(
            integration,
            intent,
            rt.client.create_ticket(
                subject=subject,
                message=message,
                client_id=new_client or client_id,  # type: ignore[arg-type]
                type=settings.ticket_type,
                tag=rt.render("ticket_tag", call) or None,
                private_comment=True,
                additional_id=call.call_id,
                channel_id=settings.channel_id,
                assignee_id=owner,
                user_id=author,
                before_send=_intent_at_send(
                    integration, intent, record, mark_number if marks_number else None
                ),
            ),
        )
        client_new = new_client is not None
        if with_comment:
            integration.report(
                Decision(
                    "comment written as the ticket's first message",
                    f"signed by agent {author}" if author else "Usedesk's default author",
                    link=rt.ticket_url(ticket_id),
                    text=message,
                )
            )
    return {
        **found,
        "client_id": client_id,
        "client_name": found.get("client_name") or name,
        "client_new": client_new,
        "ticket_id": ticket_id,
        "ticket_new": True,
        "ticket_assignee": owner,
        "ticket_subject": subject,
        "ticket_status": STATUS_NEW,
        # What the one request also did: the call record says so, so a retry after a failed
        # write of the steps below (a full disk) neither comments twice nor re-decides.
        "link": {"id": None, "name": name, "ticket": ticket_id} if client_new else None,
        "owner_set": owner,
        "assigned": assigned if with_comment else None,
        "comment_in_ticket": with_comment,
    }


async def _answered_or_pending(
    integration: Integration, intent: str, create: Awaitable[int]
) -> int:
    """The id ``create`` makes. A create Usedesk refused (a 4xx) made nothing, so its intent
    goes. One that got an answer (the id, a server error, a 429) is over, whatever it did: a
    later attempt in this process looks for it at once, even when recording the answer failed
    (a full disk). One that got no answer at all (a timeout, a dropped connection), or whose
    fate this process does not know (it started after a crash), may still land: it is looked
    for after ``write_settle_seconds`` (:func:`_made_by_earlier_attempt`)."""
    answered = runtime(integration).answered_creates
    try:
        made = await create
    except CrmError as exc:
        if not isinstance(exc, TransientError):
            await integration.effects.drop(intent)
        elif not exc.unanswered:
            answered.add(intent)
        raise
    answered.add(intent)
    return made


async def _made_by_earlier_attempt(
    integration: Integration, intent: str, find: Callable[[], Awaitable[int | None]]
) -> int | None:
    """What an earlier attempt's create made, when that create was sent but never answered.

    Usedesk may carry out a request it answers late or never (the answer timed out): until
    ``write_settle_seconds`` after it was sent it may still land, so the hook asks to run
    again then (:class:`RetryLater`) rather than look too early and create a second one.
    ``None``: no create was pending, or it never landed (the intent is dropped)."""
    pending = await integration.effects.get(intent)
    if pending is None:
        return None
    rt = runtime(integration)
    wait = _may_land_for(rt, intent, pending)
    if wait > 0:
        raise RetryLater(
            f"a create sent earlier got no answer and may still land in Usedesk;"
            f" looking for it in {wait:.0f} s (write_settle_seconds)",
            seconds=wait,
        )
    made = await find()
    rt.answered_creates.discard(intent)
    if made is None:
        await integration.effects.drop(intent)
    else:
        log.info("%s: a create Usedesk did not answer had landed: %s", integration.key, made)
    return made


def _intent_at_send(
    integration: Integration,
    intent: str,
    record: Mapping[str, Any],
    then: Callable[[float], Awaitable[None]] | None = None,
) -> BeforeSend:
    """The write-ahead record of a create (``record`` and its ``sent_at``), written when the
    request's turn has come, just before it leaves; ``then(sent_at)`` after it.

    Written before the rate limiter's wait instead, a create that waited its turn (a minute,
    at the limit) would count its ``write_settle_seconds`` from before it was sent, and a
    later attempt could look for it too early and make a second one; a process that
    stopped while it waited would leave an intent for a create never sent, which the next
    attempt waits for in vain."""

    async def write() -> None:
        sent_at = time.time()
        await integration.effects.put(intent, {**record, "sent_at": sent_at})
        if then is not None:
            await then(sent_at)

    return write


def _may_land_for(rt: UsedeskRuntime, intent: str, sent: Mapping[str, Any]) -> float:
    """Seconds until the create of ``intent``, sent at ``sent["sent_at"]``, can no longer
    land: none once this process saw its answer, else ``write_settle_seconds`` after."""
    settle = 0.0 if intent in rt.answered_creates else rt.settings.write_settle_seconds
    return float(sent.get("sent_at", 0.0)) + settle - time.time()


async def _ticket_made_for(
    integration: Integration, plan: Plan, client_id: int | None, call_id: str
) -> int | None:
    """The ticket carrying ``call_id`` in ``additional_id`` among the newest tickets of the
    client, or of the clients with the number when the client was to be created with it."""
    rt = runtime(integration)
    if client_id is not None:
        owners = [client_id]
    elif isinstance(plan, scenario.HiddenLookup):
        hits = await rt.client.search_clients(plan.client_name, search_type="full_match")
        owners = [h.id for h in hits]
    else:
        hits = await _phone_search(integration, plan.phone)
        owners = [h.id for h in hits]
    for owner in owners[:MAX_CANDIDATES_ASKED]:
        for ticket in (await rt.client.list_tickets(client_id=owner))[:RECHECK]:
            if (await rt.client.get_ticket(ticket.id)).additional_id == call_id:
                return ticket.id
    return None


async def _create_client_only(integration: Integration, call: CallState, plan: Plan) -> int:
    """A client without a ticket (``create_ticket = false``): one request, guarded by an
    intent like a ticket's, its phone (or name) being what a later attempt looks for."""
    rt, key = runtime(integration), _link_key(integration, plan)
    intent = f"intent:client:{key}"

    async def find() -> int | None:
        remembered = await _client(integration, plan)
        return remembered[0]

    made = await _made_by_earlier_attempt(integration, intent, find)
    if isinstance(plan, scenario.HiddenLookup):
        name, digits = plan.client_name, None
    else:
        name = rt.render("client_name", call)[:255]
        digits = digits_only(plan.phone, rt.settings.phone_format)
    if made is None:
        made = await _answered_or_pending(
            integration,
            intent,
            rt.client.create_client(
                name=name,
                phone_digits=digits,
                before_send=_intent_at_send(integration, intent, {}),
            ),
        )
    await integration.effects.put(key, {"id": made, "name": name})
    await integration.effects.drop(intent)
    return made


async def _phone_search(integration: Integration, phone: str) -> list[ClientSummary]:
    """``/clients`` for the number: one pattern query when the account's search takes
    wildcards (``phone_search``), else three spellings."""
    rt = runtime(integration)
    return await rt.client.find_clients_by_phone(
        phone, region=integration.region, wildcards=await rt.search_takes_wildcards()
    )


async def _client(
    integration: Integration, plan: Plan
) -> tuple[int | None, str, list[TicketSummary] | None]:
    """The client Usedesk has with the plan's number, searched (id, name, its searched
    tickets if they were read to choose), remembered from now on; ``None`` when it has none."""
    key = _link_key(integration, plan)
    if isinstance(plan, scenario.HiddenLookup):
        return await _hidden_client(integration, plan, key)
    hits = await _phone_search(integration, plan.phone)
    if not hits:
        return None, "", None
    chosen, tickets = await _one_of(integration, plan.phone, hits)
    await integration.effects.put(key, {"id": chosen.id, "name": chosen.name})
    if tickets is None and not chosen.ticket_ids:
        tickets = []  # the search listed no ticket at all: none can be open, nothing to ask
    return chosen.id, chosen.name, tickets


async def _hidden_client(
    integration: Integration, plan: scenario.HiddenLookup, key: str
) -> tuple[int | None, str, None]:
    """The client that calls without a number go to: found by its exact name (of several,
    the lowest id, with a warning) and remembered under ``key``; ``None`` when absent (it is
    created with the first such ticket)."""
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
    if not named:
        return None, name, None
    await integration.effects.put(key, {"id": named[0].id, "name": name})
    return named[0].id, name, None


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


async def _linked_client(
    integration: Integration, plan: Plan, link: dict[str, Any]
) -> dict[str, Any]:
    """The remembered client. A client Usedesk made with a ticket is remembered by that
    ticket until its id is needed: one ``/ticket`` then gives the id (kept from then on) and,
    while that ticket is still open, the ticket the call goes to."""
    if link.get("id") is not None:
        return {"client_id": int(link["id"]), "client_name": link.get("name", "")}
    rt = runtime(integration)
    ticket = await rt.client.get_ticket(int(link["ticket"]))
    if ticket.client_id is None:
        raise UnknownIdError("the remembered ticket has no client", field="ticket_id")
    await integration.effects.drop(_link_key(integration, plan))
    await integration.effects.put(
        _link_key(integration, plan), {"id": ticket.client_id, "name": link.get("name", "")}
    )
    linked: dict[str, Any] = {"client_id": ticket.client_id, "client_name": link.get("name", "")}
    if plan.search_tickets and ticket.status_id in rt.settings.search_statuses:
        linked.update(_ticket_fields(ticket))
    return linked


async def finish(integration: Integration, call: CallState) -> None:
    """Set the ticket's owner and write the call's one comment; a ticket or agent Usedesk
    refuses as unknown is looked up again once (the ticket through the call's client)."""
    await _healed(integration, call, _finish)


async def on_answer(integration: Integration, call: CallState) -> None:
    """The call was answered: create its ticket now when ``ticket_created_on = "answer"``,
    with the agent who answered as its owner."""
    if runtime(integration).settings.ticket_created_on == "answer":
        await _healed(integration, call, ensure_ticket)


async def _healed(
    integration: Integration,
    call: CallState,
    step: Callable[[Integration, CallState], Awaitable[Any]],
) -> None:
    try:
        await step(integration, call)
    except UnknownIdError as exc:
        if not await _forget_refused(integration, call, exc):
            raise
        await step(integration, call)


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
    await _remember_missed_ticket(integration, call, int(ticket_id))
    rt, effects = runtime(integration), integration.effects
    assigned = await effects.get(f"assigned:{call.call_id}") or record.get("assigned")
    if assigned is None:
        agents = await rt.agents()
        # Another call on the same ticket (the same client calling twice at once) may have
        # set its owner since this call looked the ticket up: that owner stays. An owner this
        # call set when it created the ticket (on answer) is this call's to change.
        owner = await effects.get(f"ticket_owner:{ticket_id}")
        if owner is None and record.get("owner_set") is not None:
            owner = {"agent": record["owner_set"], "call": call.call_id}
        own = owner is not None and owner.get("call") == call.call_id
        current = owner["agent"] if owner else record.get("ticket_assignee")
        if current is None and not record.get("ticket_new") and call.outcome is not Outcome.MISSED:
            # Unowned when the phone rang: a person may have taken it since. Ask again.
            current = (await rt.client.get_ticket(ticket_id)).assignee_id
        decision = _decide_owner(
            integration,
            call,
            agents,
            ticket_is_new=bool(record.get("ticket_new")) and (owner is None or own),
            current=current,
        )
        if decision.agent is not None and not (own and decision.agent == current):
            await rt.client.update_ticket(ticket_id, assignee_id=decision.agent, silent=True)
            await effects.drop(f"ticket_owner:{ticket_id}")
            await effects.put(f"ticket_owner:{ticket_id}", {"agent": decision.agent})
        assigned = {"agent": decision.agent, "reason": decision.reason}
        await effects.put(f"assigned:{call.call_id}", assigned)
        log.info("%s: ticket %s owner: %s", integration.key, ticket_id, decision.reason)
        if decision.agent is None:
            what = "owner unchanged"
        elif own and decision.agent != current:
            what = f"owner {decision.agent} (was {current}, set when the ticket was made)"
        else:
            what = f"owner {decision.agent}"
        integration.report(Decision(what, decision.reason, link=rt.ticket_url(ticket_id)))
    done = record.get("comment_in_ticket") or await effects.get(f"comment:{call.call_id}")
    if not done:
        agents = await rt.agents()  # read once per ten minutes: no request here as a rule
        author = await rt.usable_author(_author(call, integration, agents, assigned))
        intent = f"intent:comment:{call.call_id}"
        made = await _made_by_earlier_attempt(
            integration, intent, lambda: _comment_made_for(rt, ticket_id, call.call_id)
        )
        message = rt.render("comment", call, html=True, agent_names=agents.names)
        if made is None:
            made = await _answered_or_pending(
                integration,
                intent,
                rt.client.create_comment(
                    ticket_id,
                    message=message,
                    type="private",
                    from_="user",
                    user_id=author,
                    before_send=_intent_at_send(integration, intent, {"ticket_id": ticket_id}),
                ),
            )
        await effects.put(f"comment:{call.call_id}", {"id": made, "ticket_id": ticket_id})
        signed = f"signed by agent {author}" if author else "Usedesk's default author"
        integration.report(
            Decision(f"comment {made} written", signed, link=rt.ticket_url(ticket_id), text=message)
        )


def _report_lookup(integration: Integration, record: dict[str, Any]) -> None:
    """What the search while the phone rang found, for the trace."""
    rt = runtime(integration)
    if record.get("client_id") is None:
        integration.report(Decision("no client with the number", "searched on ring"))
        return
    found = f"client {record['client_id']} «{record.get('client_name', '')}» found"
    if record.get("ticket_id"):
        integration.report(
            Decision(
                f"{found}, ticket {record['ticket_id']}",
                "its newest ticket in search_statuses",
                link=rt.ticket_url(record["ticket_id"]),
            )
        )
    else:
        integration.report(Decision(found, "no ticket of it in search_statuses"))


def _report_ticket(integration: Integration, record: dict[str, Any]) -> None:
    """The call's client and ticket, and what the ticket's create also did, for the trace."""
    rt = runtime(integration)
    if not record.get("ticket_id"):
        integration.report(Decision(_describe(record), record.get("skipped", "")))
        return
    link = rt.ticket_url(record["ticket_id"])
    if record.get("ticket_new"):
        if record.get("comment_in_ticket"):
            when = "once the call had ended, with its owner and comment"
        elif record.get("owner_set") is not None:
            when = f"on answer, with its owner, agent {record['owner_set']}"
        else:
            when = "while the phone rang"
        reason = (
            "always_new_ticket: a ticket per call"
            if rt.settings.always_new_ticket
            else "no ticket in search_statuses"
        )
        why = f"{reason}; made {when}"
    else:
        why = "the client's newest ticket in search_statuses"
    integration.report(Decision(_describe(record), why, link=link))
    if record.get("assigned"):
        owner = record["assigned"].get("agent")
        what = f"owner {owner}" if owner is not None else "no owner"
        integration.report(Decision(what, record["assigned"].get("reason", ""), link=link))


def _decide_owner(
    integration: Integration,
    call: CallState,
    agents: Agents,
    *,
    ticket_is_new: bool,
    current: int | None,
) -> scenario.Assignment:
    return scenario.assignment(
        call,
        runtime(integration).settings,
        ticket_is_new=ticket_is_new,
        ticket_assignee=current,
        agents=agents.by_extension,
        on_duty=agents.on_duty,
        known_agents=agents.known,
        answered_owner=integration.answered_owner,
    )


async def _comment_made_for(rt: UsedeskRuntime, ticket_id: int, call_id: str) -> int | None:
    """This call's comment on the ticket, found by the call id its text carries (the comment
    template must hold ``{call_id}``)."""
    for comment in (await rt.client.get_ticket(ticket_id)).comments:
        if call_id in comment.message:
            return comment.id
    return None


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
    client = "new client" if record.get("client_new") else f"client {record['client_id']}"
    ticket = ("new ticket " if record.get("ticket_new") else "ticket ") + str(record["ticket_id"])
    return f"{client}, {ticket}"
