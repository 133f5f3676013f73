"""The call tracker: merges the several Sipuni events of a call into one ``CallState``.

Pure logic, no I/O, no clock. Sipuni repeats events, sends them out of order, drops fields
on follow-up events and sometimes loses the final hang-up. So the tracker keeps the *set* of
distinct events of a call and derives everything from that set in a fixed order: the same
events, in any arrival order and with any repetition, give the same state and the same
lifecycle events, each exactly once.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import TypeVar

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

EXTERNAL, INTERNAL = 1, 2
# Within one second, a ring precedes its answer, and hang-ups come last.
_TYPE_RANK = {
    EventType.RING: 0,
    EventType.ANSWER: 1,
    EventType.TRANSFER_HANGUP: 2,
    EventType.HANGUP: 3,
}


def _order(event: SipuniEvent) -> tuple[int, int, str]:
    return (event.timestamp, _TYPE_RANK[event.type], event.model_dump_json())


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
    events = state.events
    if event not in events:
        events = sorted([*events, event], key=_order)
    state = state.model_copy(
        update={"events": events, "last_received_at": max(state.last_received_at, received_at)}
    )
    return _emit(derive(state, region))


def expire(
    state: CallState, *, now: float, timeout: float, region: str
) -> tuple[CallState, list[LifecycleEvent]]:
    """Finish a call whose final hang-up never came, ``timeout`` seconds after its last event."""
    if state.finished or now - state.last_received_at < timeout:
        return state, []
    return _emit(derive(state.model_copy(update={"timed_out_at": now}), region))


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
    account = state.account
    events = state.events
    typed = [
        (
            e,
            _party_type(e.src_type, e.src_num, account),
            _party_type(e.dst_type, e.dst_num, account),
        )
        for e in events
    ]

    if any(src == EXTERNAL for _, src, _ in typed):
        direction = Direction.INBOUND
    elif any(dst == EXTERNAL for _, _, dst in typed):
        direction = Direction.OUTBOUND
    elif any(src or dst for _, src, dst in typed):
        direction = Direction.INTERNAL
    else:
        direction = Direction.UNKNOWN

    client_raw = line_raw = employee = None
    if direction is Direction.INBOUND:
        client_raw = _first(e.src_num for e, src, _ in typed if src == EXTERNAL)
        line_raw = _first(e.pbxdstnum for e in events) or _first(
            e.dst_num for e, _, dst in typed if dst == EXTERNAL
        )
    elif direction is Direction.OUTBOUND:
        client_raw = _first(e.dst_num for e, _, dst in typed if dst == EXTERNAL) or _first(
            e.pbxdstnum for e in events
        )
    if direction in (Direction.OUTBOUND, Direction.INTERNAL):
        employee = _first(
            e.short_src_num or extension_of(e.src_num, account)
            for e, src, _ in typed
            if src == INTERNAL
        )

    legs: dict[str, Leg] = {}
    answers: list[Answer] = []  # every pick-up in time order; a hand-back is a new one
    hangups: list[Hangup] = []
    answer_times: list[int] = []
    schemes: list[SchemeVisit] = []
    final: SipuniEvent | None = None
    final_dst_ext: str | None = None
    starts: list[int] = []

    for e, src, dst in typed:
        starts.append(e.call_start_timestamp or e.timestamp)
        dst_ext = e.short_dst_num or extension_of(e.dst_num, account) if dst == INTERNAL else None
        if e.type is EventType.RING and dst_ext and dst_ext not in legs:
            transfer_from = e.transfer_from or (
                e.short_src_num or extension_of(e.src_num, account)
                if src == INTERNAL and direction is Direction.INBOUND
                else None
            )
            legs[dst_ext] = Leg(extension=dst_ext, rang_at=e.timestamp, transfer_from=transfer_from)
        elif e.type is EventType.ANSWER:
            answer_times.append(e.timestamp)
            who = employee if direction is Direction.OUTBOUND else dst_ext
            if who and (not answers or answers[-1].extension != who):
                answers.append(Answer(extension=who, at=e.timestamp))
        elif e.type is EventType.TRANSFER_HANGUP:
            hangups.append(Hangup(at=e.timestamp, status=e.status, extension=e.transfer_from))
        elif e.type is EventType.HANGUP:
            final, final_dst_ext = e, dst_ext
        if e.treeNumber or e.treeName:
            _visit(schemes, e)

    sipuni_status = final.status if final else None
    last_called = _last_extension(final.last_called, account) if final else None
    answer_stamp = _first(
        e.call_answer_timestamp
        for e in events
        if e.type in (EventType.HANGUP, EventType.TRANSFER_HANGUP)
        and e.call_answer_timestamp
        and e.call_start_timestamp
        # Sipuni's API callbacks report a bogus answer time at or before the start.
        and e.call_answer_timestamp > e.call_start_timestamp
    )
    if answer_stamp is not None:
        answer_times.append(answer_stamp)
    answered = bool(answers) or sipuni_status == "ANSWER"
    if final is not None and sipuni_status == "ANSWER":
        # The final hang-up names who ended up with the call. When no answer event said so
        # (none came, or the transfer leg's event 3 is late or never sent), that is a pick-up.
        who = employee if direction is Direction.OUTBOUND else final_dst_ext or last_called
        if who and (not answers or answers[-1].extension != who):
            if answers:
                leg = legs.get(who)
                at = max(answers[-1].at, leg.rang_at if leg else 0)
            else:
                at = answer_stamp or (min(answer_times) if answer_times else final.timestamp)
            answers.append(Answer(extension=who, at=at))

    ordered_answers = answers
    transfers = [
        Transfer(
            from_extension=legs[a.extension].transfer_from
            if a.extension in legs and legs[a.extension].transfer_from
            else previous.extension,
            to_extension=a.extension,
            at=a.at,
        )
        for previous, a in itertools.pairwise(ordered_answers)
    ]

    finished_by = "hangup" if final else ("timeout" if state.timed_out_at is not None else None)
    if answered:
        outcome = Outcome.ANSWERED if finished_by else Outcome.TALKING
    elif not finished_by:
        outcome = Outcome.RINGING
    else:
        outcome = Outcome.MISSED if direction is Direction.INBOUND else Outcome.NOT_ANSWERED

    record_url = (final.call_record_link if final else None) or _first(
        e.call_record_link for e in events
    )
    return state.model_copy(
        update={
            "direction": direction,
            "client_number_raw": client_raw and strip_line_suffix(client_raw),
            "client_number": normalize(client_raw, region),
            "line_number": normalize(line_raw, region),
            "employee": employee,
            "legs": sorted(legs.values(), key=lambda leg: (leg.rang_at, leg.extension)),
            "answers": ordered_answers,
            "transfers": transfers,
            "schemes": schemes,
            "hangups": hangups,
            "sipuni_status": sipuni_status,
            "last_called": last_called,
            "outcome": outcome,
            "started_at": min(starts) if starts else None,
            "answered_at": min(answer_times)
            if answered and answer_times
            else (ordered_answers[0].at if ordered_answers else None),
            "ended_at": final.timestamp if final else None,
            "record_url": record_url,
            "finished_by": finished_by,
        }
    )


def _visit(schemes: list[SchemeVisit], event: SipuniEvent) -> None:
    """Add the event's scheme to the path, merging a visit seen with only its id or name."""
    for i, visit in enumerate(schemes):
        same_id = event.treeNumber and visit.id == event.treeNumber
        same_name = (
            event.treeName and visit.name == event.treeName and not (event.treeNumber and visit.id)
        )
        if same_id or same_name:
            schemes[i] = SchemeVisit(
                id=visit.id or event.treeNumber,
                name=visit.name or event.treeName,
                entered_at=visit.entered_at,
            )
            return
    schemes.append(
        SchemeVisit(id=event.treeNumber, name=event.treeName, entered_at=event.timestamp)
    )


def lifecycle(state: CallState) -> list[LifecycleEvent]:
    """Every lifecycle event the state calls for, in the order they happened."""
    if not state.events:
        return []
    timed: list[tuple[int, int, LifecycleEvent]] = []
    if state.answered:
        at = state.answered_at or 0
        timed.append(
            (
                at,
                0,
                LifecycleEvent(
                    kind=LifecycleKind.ANSWERED, key="answered", extension=state.first_answered_by
                ),
            )
        )
    transfers_to: dict[str, int] = {}
    for t in state.transfers:
        # A call can come back to an employee: the n-th transfer to one is its own event.
        n = transfers_to[t.to_extension] = transfers_to.get(t.to_extension, 0) + 1
        timed.append(
            (
                t.at,
                1,
                LifecycleEvent(
                    kind=LifecycleKind.TRANSFERRED,
                    key=f"transferred:{t.to_extension}" + (f"#{n}" if n > 1 else ""),
                    extension=t.to_extension,
                ),
            )
        )
    for visit in state.schemes[1:]:
        timed.append(
            (
                visit.entered_at,
                2,
                LifecycleEvent(
                    kind=LifecycleKind.ENTERED_SCHEME,
                    key=f"entered_scheme:{visit.key}",
                    scheme=visit,
                ),
            )
        )
    timed.sort(key=lambda item: (item[0], item[1], item[2].key))
    result = [LifecycleEvent(kind=LifecycleKind.STARTED, key="started")]
    result += [item[2] for item in timed]
    if state.finished:
        result.append(LifecycleEvent(kind=LifecycleKind.FINISHED, key="finished"))
    return result


def _emit(state: CallState) -> tuple[CallState, list[LifecycleEvent]]:
    # A scheme first seen by name only (or number only) was announced under that identifier.
    announced = [
        key.removeprefix("entered_scheme:")
        for key in state.emitted
        if key.startswith("entered_scheme:")
    ]
    new = [
        event
        for event in lifecycle(state)
        if event.key not in state.emitted
        and not (event.scheme and any(event.scheme.matches(a) for a in announced))
    ]
    if not new:
        return state, []
    return state.model_copy(update={"emitted": [*state.emitted, *(e.key for e in new)]}), new


_Value = TypeVar("_Value", str, int)


def _first(values: Iterable[_Value | None]) -> _Value | None:
    for value in values:
        if value:
            return value
    return None
