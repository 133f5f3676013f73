"""The call tracker: merges the several Sipuni events of a call into one ``CallState``.

Pure logic, no I/O, no clock. Sipuni repeats events, sends them out of order, drops fields
on follow-up events and sometimes loses the final hang-up. So the tracker keeps the *set* of
distinct events of a call and derives everything from that set in a fixed order: the same
events, in any arrival order and with any repetition, give the same state and the same
lifecycle events, each exactly once.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from connector_core.callstate import (
    Answer,
    CallState,
    Direction,
    Hangup,
    Leg,
    LifecycleEvent,
    LifecycleKind,
    Outcome,
    SchemeVisit,
    Transfer,
)
from connector_core.events import EventType, SipuniEvent
from connector_core.phones import extension_of, normalize, strip_line_suffix
from connector_core.recent import Recent

# Pure functions of a number, called on every event of a call each time one arrives: the
# same few numbers come back (a call's client and line, the account's extensions), and
# parsing them was a large share of the worker's time per event. A few hundred calls'
# numbers are all a cache needs: a bigger one is memory every open call seems to cost.
CACHED = 1024
_normalize = functools.lru_cache(maxsize=CACHED)(normalize)


@functools.lru_cache(maxsize=CACHED)
def _leg(extension: str, rang_at: int, transfer_from: str | None) -> Leg:
    # Legs are frozen: the one built for a ring the last time the call changed is reused.
    return Leg(extension=extension, rang_at=rang_at, transfer_from=transfer_from)


# The parts of a state, and its records, are frozen and rebuilt from the events on each
# event: the one built for the same values the last time the call changed is reused, as
# building (validating) one costs more than finding it.
_answer = functools.lru_cache(maxsize=CACHED)(Answer)
_transfer = functools.lru_cache(maxsize=CACHED)(Transfer)
_visit = functools.lru_cache(maxsize=CACHED)(SchemeVisit)
_record = functools.lru_cache(maxsize=CACHED)(LifecycleEvent)
_hangup = functools.lru_cache(maxsize=CACHED)(Hangup)

EXTERNAL, INTERNAL = 1, 2
# Within one second, a ring precedes its answer, and hang-ups come last.
_TYPE_RANK = {
    EventType.RING: 0,
    EventType.ANSWER: 1,
    EventType.TRANSFER_HANGUP: 2,
    EventType.HANGUP: 3,
}


def _moment(event: SipuniEvent) -> tuple[int, int]:
    return (event.timestamp, _TYPE_RANK[event.type])


def _text(event: SipuniEvent) -> str:
    return event.model_dump_json()


def _insert(events: tuple[SipuniEvent, ...], event: SipuniEvent) -> tuple[SipuniEvent, ...]:
    """``events`` with ``event`` in its place, ordered by (timestamp, type, JSON text); the
    same tuple when it is there already (two events with the same key are the same event).

    The JSON text only orders events of the same second and type, so it is made only for
    those (rarely any): serialising on every comparison was most of the search's time.
    """
    moment = _moment(event)
    at = bisect.bisect_left(events, moment, key=_moment)
    end = bisect.bisect_right(events, moment, lo=at, key=_moment)
    if at < end:
        at = bisect.bisect_left(events, _text(event), lo=at, hi=end, key=_text)
        if at < end and events[at] == event:
            return events
    return (*events[:at], event, *events[at:])


def apply(
    state: CallState | None,
    event: SipuniEvent,
    *,
    account: str,
    region: str,
    received_at: float,
) -> tuple[CallState, list[LifecycleEvent]]:
    """Merge one event into the call's state; return the new state and what it started.

    ``received_at`` is when the service received the event (for the lost-hang-up timeout);
    every time inside the state comes from the events themselves.
    """
    if state is None:
        state = CallState(account=account, call_id=event.call_id)
    # A binary search finds a repeat, or where a new event goes, looking at a few events
    # rather than comparing it with all of them.
    events = _insert(state.events, event)
    gathered = _gathered_before(state, account)
    if gathered is not None and len(events) == len(state.events) + 1 and events[-1] is event:
        gathered = _extended(gathered, event)
    elif events is not state.events:
        gathered = None
    if gathered is None:
        gathered = _gather(account, events)
    # One copy with the events and what they say (a copy of a state costs as much as
    # deriving it).
    state = state.model_copy(
        update={
            "events": events,
            "last_received_at": max(state.last_received_at, received_at),
            **_derived(gathered, state.timed_out_at, region),
        }
    )
    state, new = _emit(state)
    _GATHERED.put(id(state), (state, gathered))
    return state, new


# What the events of the states made last say, by the state object: the next event of the
# call extends it (the worker holds a call's latest state, and the store hands back the object
# it wrote for the same text). As many as the store keeps states (``store.parsed.KEPT``), which
# are mostly these very objects: memory per open call must stay small. A call beyond them
# has its events walked again, as before.
GATHERED_KEPT = 64
_GATHERED: Recent[int, tuple[CallState, _Gathered]] = Recent(GATHERED_KEPT)


def _gathered_before(state: CallState, account: str) -> _Gathered | None:
    """What ``state``'s events say, if it was made here lately."""
    known = _GATHERED.get(id(state))
    if known is None or known[0] is not state or known[1].account != account:
        return None
    return known[1]


def expire(
    state: CallState, *, now: float, timeout: float, region: str
) -> tuple[CallState, list[LifecycleEvent]]:
    """Finish a call whose final hang-up never came, ``timeout`` seconds after its last event."""
    if state.finished or now - state.last_received_at < timeout:
        return state, []
    return _emit(derive(state.model_copy(update={"timed_out_at": now}), region))


@functools.lru_cache(maxsize=CACHED)
def _party_type(declared: int | None, number: str | None, account: str) -> int | None:
    """Sipuni's 1/2 party type; inferred from the number when a follow-up event omits it."""
    if declared is not None or not number:
        return declared
    digits = re.sub(r"\D", "", strip_line_suffix(number))
    # The rule Sipuni itself uses: the account prefix or a short number is an employee.
    return INTERNAL if digits.startswith(account) or len(digits) < 10 else EXTERNAL


def _last_extension(last_called: str | None, account: str) -> str | None:
    # Seen as a single extension, "102,103" and "101&102": the last one is where it ended.
    if not last_called:
        return None
    items = [item for item in re.split(r"[,&]", last_called) if item.strip()]
    if not items:
        return None
    ext = extension_of(items[-1].strip(), account)
    return ext if ext and "_id" not in items[-1] else None


def derive(state: CallState, region: str) -> CallState:
    """Recompute every derived field of ``state`` from its events."""
    gathered = _gather(state.account, state.events)
    return state.model_copy(update=_derived(gathered, state.timed_out_at, region))


@dataclass
class _Gathered:
    """What ``_derived`` gathers from a call's events, walked in their order.

    Every part is a first or a last seen, a set or a list extended in that order, so an event
    that comes after all the others extends it to what walking them all again would give:
    a call's next event (usually the last one so far) costs the same whatever the number of
    events before it. The events are walked twice: who is who (the direction, the dialling
    employee) first, from every event, then the rest, which depends on who is who; an event
    that changes who is who is walked with all the others again.
    """

    account: str
    # Who is who: Sipuni's party types, and the first numbers of each party.
    src_external: bool = False
    dst_external: bool = False
    typed: bool = False
    caller: str | None = None  # the first external caller's number
    callee: str | None = None  # the first external callee's number
    pbxdstnum: str | None = None
    dialler: str | None = None  # the first internal caller's extension
    # The rest, walked with the direction and the employee these give.
    direction: Direction = Direction.UNKNOWN
    employee: str | None = None
    legs: dict[str, Leg] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)  # a hand-back is a new one
    hangups: list[Hangup] = field(default_factory=list)
    first_answer: int | None = None  # the earliest answer event's time
    final: SipuniEvent | None = None
    final_dst_ext: str | None = None
    started_at: int | None = None
    answer_stamp: int | None = None
    record_link: str | None = None
    # Each distinct (treeNumber, treeName) seen, with its first time: later sightings of
    # the same pair change nothing in the scheme path.
    sightings: dict[tuple[str | None, str | None], int] = field(default_factory=dict)

    def who_is_who(self, e: SipuniEvent) -> tuple[int | None, int | None]:
        """Take in the parties of ``e``; returns their types."""
        src = _party_type(e.src_type, e.src_num, self.account)
        dst = _party_type(e.dst_type, e.dst_num, self.account)
        if src == EXTERNAL:
            self.src_external = True
            self.caller = self.caller or e.src_num
        if dst == EXTERNAL:
            self.dst_external = True
            self.callee = self.callee or e.dst_num
        self.typed = self.typed or bool(src or dst)
        self.pbxdstnum = self.pbxdstnum or e.pbxdstnum
        if src == INTERNAL and not self.dialler:
            self.dialler = e.short_src_num or extension_of(e.src_num, self.account)
        return src, dst

    def parties(self) -> tuple[Direction, str | None]:
        """The call's direction and dialling employee, from the parties taken in."""
        if self.src_external:
            direction = Direction.INBOUND
        elif self.dst_external:
            direction = Direction.OUTBOUND
        elif self.typed:
            direction = Direction.INTERNAL
        else:
            direction = Direction.UNKNOWN
        internal = direction in (Direction.OUTBOUND, Direction.INTERNAL)
        return direction, self.dialler if internal else None

    def walk(self, e: SipuniEvent, src: int | None, dst: int | None) -> None:
        """Take in ``e``, which comes after every event taken in before."""
        account, direction = self.account, self.direction
        start = e.call_start_timestamp or e.timestamp
        self.started_at = start if self.started_at is None else min(self.started_at, start)
        self.record_link = self.record_link or e.call_record_link
        if e.treeNumber or e.treeName:
            self.sightings.setdefault((e.treeNumber, e.treeName), e.timestamp)
        dst_ext = e.short_dst_num or extension_of(e.dst_num, account) if dst == INTERNAL else None
        kind = e.type
        if kind is EventType.RING and dst_ext and dst_ext not in self.legs:
            transfer_from = e.transfer_from or (
                e.short_src_num or extension_of(e.src_num, account)
                if src == INTERNAL and direction is Direction.INBOUND
                else None
            )
            self.legs[dst_ext] = _leg(dst_ext, e.timestamp, transfer_from)
        elif kind is EventType.ANSWER:
            if self.first_answer is None or e.timestamp < self.first_answer:
                self.first_answer = e.timestamp
            who = self.employee if direction is Direction.OUTBOUND else dst_ext
            answers = self.answers
            if who and (not answers or answers[-1].extension != who):
                answers.append(_answer(extension=who, at=e.timestamp))
        elif kind is EventType.TRANSFER_HANGUP:
            self.hangups.append(_hangup(at=e.timestamp, status=e.status, extension=e.transfer_from))
        elif kind is EventType.HANGUP:
            self.final, self.final_dst_ext = e, dst_ext
        if (
            self.answer_stamp is None
            and kind in (EventType.HANGUP, EventType.TRANSFER_HANGUP)
            and e.call_answer_timestamp
            and e.call_start_timestamp
            # Sipuni's API callbacks report a bogus answer time at or before the start.
            and e.call_answer_timestamp > e.call_start_timestamp
        ):
            self.answer_stamp = e.call_answer_timestamp

    def copy(self) -> _Gathered:
        """A copy to extend, leaving this one as it is."""
        # Not dataclasses.replace: that runs __init__ again, for a third of an event's walk.
        result = object.__new__(_Gathered)
        result.__dict__.update(self.__dict__)
        result.legs = dict(self.legs)
        result.answers = list(self.answers)
        result.hangups = list(self.hangups)
        result.sightings = dict(self.sightings)
        return result


def _gather(account: str, events: Sequence[SipuniEvent]) -> _Gathered:
    """What the call's ``events`` say, walked from the first."""
    gathered = _Gathered(account)
    typed = [(e, *gathered.who_is_who(e)) for e in events]
    gathered.direction, gathered.employee = gathered.parties()
    for e, src, dst in typed:
        gathered.walk(e, src, dst)
    return gathered


def _extended(gathered: _Gathered, event: SipuniEvent) -> _Gathered | None:
    """``gathered`` with ``event``, which comes after its events; ``None`` when ``event``
    changes who is who (the events must be walked again)."""
    result = gathered.copy()
    src, dst = result.who_is_who(event)
    if result.parties() != (gathered.direction, gathered.employee):
        return None
    result.walk(event, src, dst)
    return result


def _derived(gathered: _Gathered, timed_out_at: float | None, region: str) -> dict[str, object]:
    """The derived fields of a call, from what its events say, by name."""
    account, direction, employee = gathered.account, gathered.direction, gathered.employee
    client_raw = line_raw = None
    if direction is Direction.INBOUND:
        client_raw = gathered.caller
        line_raw = gathered.pbxdstnum or gathered.callee
    elif direction is Direction.OUTBOUND:
        client_raw = gathered.callee or gathered.pbxdstnum

    legs = gathered.legs
    answers = list(gathered.answers)
    final = gathered.final
    answer_stamp = gathered.answer_stamp
    answer_times = [t for t in (gathered.first_answer, answer_stamp) if t is not None]
    sipuni_status = final.status if final else None
    last_called = _last_extension(final.last_called, account) if final else None
    answered = bool(answers) or sipuni_status == "ANSWER"
    if final is not None and sipuni_status == "ANSWER":
        # The final hang-up names who ended up with the call. When no answer event said so
        # (none came, or the transfer leg's event 3 is late or never sent), that is a pick-up.
        who = employee if direction is Direction.OUTBOUND else gathered.final_dst_ext or last_called
        if who and (not answers or answers[-1].extension != who):
            if answers:
                leg = legs.get(who)
                at = max(answers[-1].at, leg.rang_at if leg else 0)
            else:
                at = answer_stamp or (min(answer_times) if answer_times else final.timestamp)
            answers.append(_answer(extension=who, at=at))

    transfers = [
        _transfer(
            from_extension=legs[a.extension].transfer_from
            if a.extension in legs and legs[a.extension].transfer_from
            else previous.extension,
            to_extension=a.extension,
            at=a.at,
        )
        for previous, a in itertools.pairwise(answers)
    ]

    finished_by = "hangup" if final else ("timeout" if timed_out_at is not None else None)
    if answered:
        outcome = Outcome.ANSWERED if finished_by else Outcome.TALKING
    elif not finished_by:
        outcome = Outcome.RINGING
    else:
        outcome = Outcome.MISSED if direction is Direction.INBOUND else Outcome.NOT_ANSWERED

    record_url = (final.call_record_link if final else None) or gathered.record_link
    return {
        "direction": direction,
        "client_number_raw": client_raw and strip_line_suffix(client_raw),
        "client_number": _normalize(client_raw, region),
        "line_number": _normalize(line_raw, region),
        "employee": employee,
        # Tuples: a state is shared read-only (see CallState), its sequences too.
        "legs": tuple(sorted(legs.values(), key=_leg_order)),
        "answers": tuple(answers),
        "transfers": tuple(transfers),
        "schemes": tuple(_scheme_path(gathered.sightings)),
        "hangups": tuple(gathered.hangups),
        "sipuni_status": sipuni_status,
        "last_called": last_called,
        "outcome": outcome,
        "started_at": gathered.started_at,
        "answered_at": min(answer_times)
        if answered and answer_times
        else (answers[0].at if answers else None),
        "ended_at": final.timestamp if final else None,
        "record_url": record_url,
        "finished_by": finished_by,
    }


def _leg_order(leg: Leg) -> tuple[int, str]:
    return (leg.rang_at, leg.extension)


def _scheme_path(sightings: dict[tuple[str | None, str | None], int]) -> list[SchemeVisit]:
    """The schemes the call went through, in the order it entered them.

    Sipuni names a scheme by its number, its name or both, and not always the same way on
    every event of a call. A name that some event pairs with a number is that number's scheme
    (the first pairing in time wins when two schemes share a name), so a visit seen first by
    its name and later by its number (or the other way round) is one visit, whatever the
    order the events arrived in. ``sightings`` holds each (number, name) seen with the time
    it was first seen, in that order.
    """
    number_of: dict[str, str] = {}
    for number, name in sightings:
        if number and name:
            number_of.setdefault(name, number)
    visits: dict[tuple[bool, str], SchemeVisit] = {}
    for (number, name), at in sightings.items():
        number = number or (number_of.get(name) if name else None)
        identity = (True, number) if number else (False, name or "")
        visit = visits.get(identity)
        if visit is None:
            visits[identity] = _visit(id=number, name=name, entered_at=at)
        elif visit.name is None and name:
            visits[identity] = _visit(id=visit.id, name=name, entered_at=visit.entered_at)
    return list(visits.values())


def scheme_record_id(identifier: str) -> str:
    """The id of the record announcing a scheme visit first known as ``identifier``."""
    return f"{LifecycleKind.ENTERED_SCHEME.value}:{identifier}"


def _scheme_ids(state: CallState) -> list[str]:
    """The record id of each scheme visit after the first: the one it was announced under.

    A visit is announced under the identifier known when it was first seen (its number, else
    its name), and keeps that id when the other one arrives: the id is what dispatch rows are
    unique on, so a new one would call the hook again.
    """
    claimed: set[str] = set()
    ids = []
    for visit in state.schemes[1:]:
        candidates = [scheme_record_id(x) for x in (visit.id, visit.name) if x]
        announced = [c for c in candidates if c in state.emitted and c not in claimed]
        record_id = announced[0] if announced else candidates[0]
        claimed.add(record_id)
        ids.append(record_id)
    return ids


# The records of the states asked about last, by the state object: ``apply``, the router and
# the dispatcher each ask for one state's records (it is frozen: they cannot have changed).
# A few: the states in flight between the worker and the dispatcher (each holds its events).
RECORDS_KEPT = 64
_RECORDS: Recent[int, tuple[CallState, tuple[LifecycleEvent, ...]]] = Recent(RECORDS_KEPT)


def lifecycle(state: CallState) -> tuple[LifecycleEvent, ...]:
    """Every lifecycle record the state calls for, in the order they happened.

    Records already emitted keep their id (see ``_scheme_ids``); payloads are what the
    state knows now.
    """
    known = _RECORDS.get(id(state))
    if known is not None and known[0] is state:
        return known[1]
    records = tuple(_lifecycle(state))
    # The state is kept with its records, so its id cannot be another state's meanwhile.
    _RECORDS.put(id(state), (state, records))
    return records


def _lifecycle(state: CallState) -> list[LifecycleEvent]:
    if not state.events:
        return []
    timed: list[tuple[int, int, LifecycleEvent]] = []
    if state.answered:
        answered = _record(
            kind=LifecycleKind.ANSWERED, id="answered", extension=state.first_answered_by
        )
        timed.append((state.answered_at or 0, 0, answered))
    transfers_to: dict[str, int] = {}
    for t in state.transfers:
        # A call can come back to an employee: the n-th transfer to one is its own record.
        n = transfers_to[t.to_extension] = transfers_to.get(t.to_extension, 0) + 1
        record_id = f"transferred:{t.to_extension}" + (f"#{n}" if n > 1 else "")
        transferred = _record(
            kind=LifecycleKind.TRANSFERRED, id=record_id, extension=t.to_extension, transfer=t
        )
        timed.append((t.at, 1, transferred))
    for visit, record_id in zip(state.schemes[1:], _scheme_ids(state), strict=True):
        entered = _record(kind=LifecycleKind.ENTERED_SCHEME, id=record_id, scheme=visit)
        timed.append((visit.entered_at, 2, entered))
    timed.sort(key=lambda item: (item[0], item[1], item[2].id))
    result = [_record(kind=LifecycleKind.STARTED, id="started")]
    result += [item[2] for item in timed]
    if state.finished:
        result.append(_record(kind=LifecycleKind.FINISHED, id="finished"))
    return result


def emitted_records(state: CallState) -> list[LifecycleEvent]:
    """The records the call has emitted, in the order it emitted them, with today's payload.

    A record whose subject the state no longer shows (two visits that one later event
    revealed to be the same scheme) is left out: it was dispatched when it was emitted.
    """
    by_id = {record.id: record for record in lifecycle(state)}
    return [by_id[record_id] for record_id in state.emitted if record_id in by_id]


def refreshed(record: LifecycleEvent, state: CallState) -> LifecycleEvent:
    """``record`` with what ``state`` knows now about the same visit or transfer.

    Ids never change, so the state's own record of that id is the fresh one: a scheme
    announced by its name now has its number, a transfer its final time. A record the state
    no longer shows (the router's transfer-scheme record, a visit merged into another) keeps
    its payload, with its scheme looked up by number or name.
    """
    current = next((r for r in lifecycle(state) if r.id == record.id), None)
    if current is not None and current.kind is record.kind:
        return current
    if record.scheme is not None:
        scheme = record.scheme
        visit = next((v for v in state.schemes if v.same_scheme(scheme)), scheme)
        return record.model_copy(update={"scheme": visit})
    return record


def _emit(state: CallState) -> tuple[CallState, list[LifecycleEvent]]:
    # ``state`` was just made: its records are worked out here, and kept only when it is the
    # state returned (a state that emits something is replaced by its copy below).
    records = tuple(_lifecycle(state))
    new = [record for record in records if record.id not in state.emitted]
    if not new:
        _RECORDS.put(id(state), (state, records))
        return state, []
    emitted = state.model_copy(update={"emitted": (*state.emitted, *(e.id for e in new))})
    # The records depend on what was emitted only through the scheme visits' ids: when those
    # stay the same, the router and the dispatcher (who ask for the emitted state's records)
    # get the ones just made rather than a second derivation.
    if _scheme_ids(emitted) == _scheme_ids(state):
        _RECORDS.put(id(emitted), (emitted, records))
    return emitted, new
