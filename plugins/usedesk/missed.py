"""The missed-call lifecycle in Usedesk: a repeated miss, the callback, a miss past the SLA.

The core tells the plugin (``connector_call_missed_again``, ``connector_call_called_back``,
``connector_call_missed_overdue``); this module writes it on the ticket of the number's first
missed call, the one ``flow`` recorded under ``call:<call_id>``. While that ticket is open the
number's other calls go to it too (``flow._open_missed_ticket``), so the person's misses and
the callback end up in one ticket.

Each step is recorded under a key of the hook's call and the step, so a hook that runs again
(a retry, a redelivery) does nothing twice: ``missed_again:<call_id>``,
``callback:<call_id>:comment``, ``callback:<call_id>:update``, ``overdue:<call_id>:update``,
``overdue:<call_id>:card``. A note's create is guarded like the call's comment: an intent
first, and a marker in its text (the call id and the step) that a later attempt looks for.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from connector_core.callstate import Callback, CallState, Direction, MissedCall, Overdue
from connector_core.integrations import CardPart, Integration
from connector_core.plugin import Decision

from . import flow
from .settings import UsedeskSettings

log = logging.getLogger(__name__)
# Usedesk's priorities, lowest first: an overdue ticket's priority is raised, never lowered.
PRIORITY_RANK = {"low": 0, "medium": 1, "urgent": 2, "extreme": 3}

WORDS = {
    "ru": {
        "again": "Повторный звонок без ответа ({n}-й)",
        "again_first": "первый звонок: {first}",
        "called_back": "Перезвонили",
        "came_back": "Перезвонили (клиент дозвонился сам)",
        "nobody": "сотрудник неизвестен",
        "after": "через {after} после первого звонка",
        "talk": "разговор {talk}",
        "calls": "звонков без ответа: {n}",
        "overdue": "Не перезвонили за {sla}: {phone}",
        "hours": "{h} ч",
        "minutes": "{m} мин",
        "seconds": "{s} с",
        "ticket": "Тикет",
    },
    "en": {
        "again": "Called again, not answered (#{n})",
        "again_first": "first call: {first}",
        "called_back": "Called back",
        "came_back": "Called back (the client got through)",
        "nobody": "employee unknown",
        "after": "{after} after the first call",
        "talk": "talk {talk}",
        "calls": "unanswered calls: {n}",
        "overdue": "Not called back within {sla}: {phone}",
        "hours": "{h} h",
        "minutes": "{m} min",
        "seconds": "{s} s",
        "ticket": "Ticket",
    },
}


# -- pure text -------------------------------------------------------------------------------


def marker(call_id: str, step: str) -> str:
    """What a note's text carries so a later attempt finds it: the call id and the step."""
    return f"ID: {call_id}, {step}"


def span(seconds: int, language: str) -> str:
    """``1 ч 5 мин``, ``12 мин``, ``40 с``: a wait as a person says it."""
    words = WORDS[language]
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if not hours and not minutes:
        return words["seconds"].format(s=secs)
    parts = [words["hours"].format(h=hours)] if hours else []
    if minutes:
        parts.append(words["minutes"].format(m=minutes))
    return " ".join(parts)


def moment(at: int, settings: UsedeskSettings) -> str:
    """A Sipuni time in the integration's time zone."""
    return datetime.fromtimestamp(at, ZoneInfo(settings.timezone)).strftime("%Y-%m-%d %H:%M")


def again_note(
    call: CallState, earlier: Sequence[MissedCall], phone: str, settings: UsedeskSettings
) -> str:
    """The note of a repeated miss: the count, and when the person first called."""
    words = WORDS[settings.language]
    title = words["again"].format(n=len(earlier) + 1)
    when = moment(call.started_at or earlier[-1].started_at, settings)
    first = words["again_first"].format(first=moment(earlier[0].started_at, settings))
    return (
        f"<p><b>{html.escape(title)}</b>: {html.escape(phone)}, {when}; {first}</p>"
        f"<p>{marker(call.call_id, 'missed_again')}</p>"
    )


def callback_note(call: CallState, callback: Callback, who: str, settings: UsedeskSettings) -> str:
    """«Перезвонили»: who, when, how long after the first miss, the talk time."""
    words = WORDS[settings.language]
    title = words["called_back" if callback.direction is Direction.OUTBOUND else "came_back"]
    talk_min, talk_sec = divmod(callback.talk_seconds, 60)
    details = ", ".join(
        (
            html.escape(who),
            moment(callback.answered_at, settings),
            words["after"].format(after=span(callback.after_seconds, settings.language)),
        )
    )
    talk = words["talk"].format(talk=f"{talk_min}:{talk_sec:02d}")
    calls = words["calls"].format(n=len(callback.missed))
    return (
        f"<p><b>{title}</b>: {details}</p><p>{talk}; {calls}</p>"
        f"<p>{marker(call.call_id, 'called_back')}</p>"
    )


def raised_priority(current: str | None, wanted: str) -> str | None:
    """``wanted`` when it is higher than ``current``; ``None`` (leave it) otherwise, and when
    nothing is wanted (``""``)."""
    if not wanted:
        return None
    if PRIORITY_RANK.get(current or "medium", 1) >= PRIORITY_RANK[wanted]:
        return None
    return wanted


# -- the hooks -------------------------------------------------------------------------------


async def missed_again(
    integration: Integration, call: CallState, earlier: tuple[MissedCall, ...]
) -> None:
    """A repeated miss: a note with the count on the first missed call's ticket (where the
    call itself went too, while that ticket is open)."""
    rt = flow.runtime(integration)
    if not rt.settings.missed_same_ticket_hours:
        return
    ticket_id = await _ticket_of(integration, call, [*earlier, missed_call(call)])
    if ticket_id is None:
        return
    phone = rt.values(call)["phone"]
    note = again_note(call, earlier, phone, rt.settings)
    step = "missed_again"
    await _note(integration, ticket_id, f"{step}:{call.call_id}", note, marker(call.call_id, step))


async def called_back(integration: Integration, call: CallState, callback: Callback) -> None:
    """The callback on the missed ticket: «Перезвонили», then its owner (``callback_owner``)
    and status (``callback_status``) in one update. The number's calls no longer go there."""
    rt = flow.runtime(integration)
    settings = rt.settings
    ticket_id = await _ticket_of(integration, call, callback.missed)
    if ticket_id is None:
        return
    agents = await rt.agents()
    ext = callback.by_extension
    agent = agents.by_extension.get(ext) if ext else None
    if agent is not None and agents.known is not None and agent not in agents.known:
        agent = None
    if settings.callback_comment:
        who = WORDS[settings.language]["nobody"]
        if ext:
            name = agents.names.get(ext)
            who = f"{name} ({ext})" if name else ext
        note = callback_note(call, callback, who, settings)
        await _note(
            integration,
            ticket_id,
            f"callback:{call.call_id}:comment",
            note,
            marker(call.call_id, "called_back"),
            author=await rt.usable_author(agent),
        )
    owner = agent if settings.callback_owner else None
    await _update(
        integration,
        ticket_id,
        f"callback:{call.call_id}:update",
        reason=f"called back by {ext or 'nobody known'}",
        assignee_id=owner,
        status=settings.callback_status,
    )
    if owner is not None:
        # flow's owner rule reads this: the owner the callback chose stays.
        await integration.effects.drop(f"ticket_owner:{ticket_id}")
        await integration.effects.put(f"ticket_owner:{ticket_id}", {"agent": owner})
    if call.client_number:
        key = flow.missed_key(integration, call.client_number)
        open_missed = await integration.effects.get(key)
        if open_missed is not None and int(open_missed["ticket_id"]) == ticket_id:
            await integration.effects.drop(key)


async def missed_overdue(integration: Integration, call: CallState, overdue: Overdue) -> None:
    """Past the SLA: the tag (``overdue_tag``) and a higher priority (``overdue_priority``) on
    the missed ticket, and a card for the on-duty agent (``overdue_card``)."""
    rt = flow.runtime(integration)
    settings = rt.settings
    ticket_id = await _ticket_of(integration, call, overdue.missed)
    if ticket_id is None:
        return
    key = f"overdue:{call.call_id}:update"
    if await integration.effects.get(key) is None and (
        settings.overdue_tag or settings.overdue_priority
    ):
        ticket = await rt.client.get_ticket(ticket_id)
        tags = None
        if settings.overdue_tag and settings.overdue_tag not in ticket.tags:
            # Whether Usedesk's ``tag`` replaces or adds is undocumented: send them all.
            tags = [*ticket.tags, settings.overdue_tag]
        await _update(
            integration,
            ticket_id,
            key,
            reason=f"no callback within {span(overdue.sla_seconds, 'en')}",
            tag=tags,
            priority=raised_priority(ticket.priority, settings.overdue_priority),
        )
    if settings.overdue_card:
        await _card(integration, call, overdue, ticket_id)


# -- steps -----------------------------------------------------------------------------------


def missed_call(call: CallState) -> MissedCall:
    """``call`` as the missed-call lifecycle names it."""
    return MissedCall(call_id=call.call_id, started_at=call.started_at or 0)


async def _ticket_of(
    integration: Integration, call: CallState, missed: Sequence[MissedCall]
) -> int | None:
    """The ticket of the first of the missed calls this integration wrote (``call:<id>``);
    ``None``, said in the trace, when it wrote none (they were outside its schemes)."""
    for one in missed:
        record = await integration.effects.get(f"call:{one.call_id}")
        if record is not None and record.get("ticket_id"):
            return int(record["ticket_id"])
    why = "the missed calls have no ticket here"
    log.info("%s: call %s: nothing to write: %s", integration.key, call.call_id, why)
    integration.report(Decision("nothing written", why))
    return None


async def _note(
    integration: Integration,
    ticket_id: int,
    key: str,
    message: str,
    mark: str,
    author: int | None = None,
) -> None:
    """A private comment on the ticket, once per ``key``: an attempt whose create got no
    answer is settled first, by the marker the text ends with."""
    effects, rt = integration.effects, flow.runtime(integration)
    if await effects.get(key) is not None:
        return
    intent = f"intent:{key}"

    async def find() -> int | None:
        for comment in (await rt.client.get_ticket(ticket_id)).comments:
            if mark in comment.message:
                return comment.id
        return None

    made = await flow._made_by_earlier_attempt(integration, intent, find)
    if made is None:
        made = await flow._answered_or_pending(
            integration,
            intent,
            rt.client.create_comment(
                ticket_id,
                message=message,
                type="private",
                from_="user",
                user_id=author,
                before_send=flow._intent_at_send(integration, intent, {"ticket_id": ticket_id}),
            ),
        )
    await effects.put(key, {"id": made, "ticket_id": ticket_id})
    integration.report(
        Decision(f"comment {made} written", key, link=rt.ticket_url(ticket_id), text=message)
    )


async def _update(
    integration: Integration, ticket_id: int, key: str, *, reason: str, **fields: Any
) -> None:
    """One ``/update/ticket`` of the fields given, once per ``key``. An update is the same
    when sent twice, so a retry after a lost answer simply sends it again."""
    if await integration.effects.get(key) is not None:
        return
    wanted = {name: value for name, value in fields.items() if value is not None}
    rt = flow.runtime(integration)
    if wanted:
        await rt.client.update_ticket(ticket_id, silent=True, **wanted)
        what = ", ".join(f"{name} {value}" for name, value in wanted.items())
        integration.report(
            Decision(f"ticket {ticket_id}: {what}", reason, link=rt.ticket_url(ticket_id))
        )
        log.info("%s: ticket %s: %s (%s)", integration.key, ticket_id, what, reason)
    await integration.effects.put(key, {"ticket_id": ticket_id, **wanted})


async def _card(
    integration: Integration, call: CallState, overdue: Overdue, ticket_id: int
) -> None:
    """The on-duty agent's card (every extension mapped to that agent), once."""
    key = f"overdue:{call.call_id}:card"
    if await integration.effects.get(key) is not None:
        return
    rt = flow.runtime(integration)
    agents = await rt.agents()
    on_duty = agents.on_duty
    extensions = sorted(
        e for e, a in agents.by_extension.items() if on_duty is not None and a == on_duty
    )
    if not extensions:
        log.info(
            "%s: no card for overdue call %s: no on_duty_user, or no extension of it in users",
            integration.key,
            call.call_id,
        )
    words = WORDS[rt.settings.language]
    values = rt.values(call)
    sla = span(overdue.sla_seconds, rt.settings.language)
    lines = [
        words["overdue"].format(sla=sla, phone=values["phone"]),
        words["calls"].format(n=len(overdue.missed)),
    ]
    part = CardPart(
        title="Usedesk", lines=lines, links=[(words["ticket"], rt.ticket_url(ticket_id))]
    )
    for extension in extensions:
        await integration.notify(extension, call, part, "missed_overdue")
    await integration.effects.put(key, {"extensions": extensions})
