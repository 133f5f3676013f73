"""The missed-call lifecycle: per account and client number, which missed calls are open,
which call answered them, and which waited past the SLA.

Pure: it reads the number's finished calls (``NumberCall``, kept by the store) and the
time it is told, and says how they group and which lifecycle records are due. Everything is
decided by the calls' own times (Sipuni's), never by the order they were processed in, so
the same calls give the same groups and the same records whatever order their webhooks
arrived in (see docs/missed-calls.md for what happens to a call processed after its group
was announced).

A *group* is a number's run of missed calls (inbound, nobody answered) up to the call that
answered them:

- the first missed call opens a group; a missed call while the group is open joins it
  (``missed_again``, with the earlier ones);
- a *callback* (an outbound call the client answered, or an inbound call from the number an
  employee answered) answers the open group if the client was reached within the window of
  its first missed call (``called_back``); the group is then closed;
- a group whose window passes with no callback is closed unanswered: a later callback does
  not link to it, and a later missed call opens a new group;
- an open group whose first missed call has waited the SLA with no callback is overdue
  (``missed_overdue``), once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from connector_core.callstate import (
    Callback,
    CallState,
    Direction,
    LifecycleEvent,
    LifecycleKind,
    MissedCall,
    Overdue,
)

# Record ids: one of each kind per call, never another (dispatch rows are unique on them).
MISSED_AGAIN_ID = LifecycleKind.MISSED_AGAIN.value
CALLED_BACK_ID = LifecycleKind.CALLED_BACK.value
MISSED_OVERDUE_ID = LifecycleKind.MISSED_OVERDUE.value


class NumberCall(BaseModel):
    """A finished call with a client's number, as the lifecycle sees it (kept by the store)."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    direction: Direction
    started_at: int  # Sipuni's time
    answered_at: int | None = None  # when the client (or the employee, inbound) answered
    talk_seconds: int = 0
    extensions: tuple[str, ...] = ()  # the employees' phones that rang, in ring order
    by_extension: str | None = None  # who answered (inbound) or dialled (outbound)
    seen_by: tuple[str, ...] = ()  # the integrations the router gave the call to

    @property
    def missed(self) -> bool:
        return self.direction is Direction.INBOUND and self.answered_at is None

    @property
    def reached(self) -> bool:
        """Whether the client and an employee spoke: the call can be a callback."""
        return self.answered_at is not None

    @property
    def at(self) -> int:
        """When it counts for the lifecycle: a miss when it began, a callback when answered."""
        return self.answered_at if self.answered_at is not None else self.started_at

    def as_missed(self) -> MissedCall:
        return MissedCall(
            call_id=self.call_id, started_at=self.started_at, extensions=self.extensions
        )


def number_call(state: CallState, seen_by: Iterable[str]) -> NumberCall | None:
    """What the lifecycle keeps of a finished call, or ``None`` when it plays no part in it
    (not finished, no client number, internal, an outbound call nobody answered)."""
    if not state.finished or not state.client_number or state.started_at is None:
        return None
    if state.direction is Direction.INBOUND:
        by = state.answered_by
    elif state.direction is Direction.OUTBOUND and state.answered_at is not None:
        by = state.employee
    else:
        return None
    return NumberCall(
        call_id=state.call_id,
        direction=state.direction,
        started_at=state.started_at,
        answered_at=state.answered_at,
        talk_seconds=state.talk_seconds,
        extensions=tuple(dict.fromkeys(leg.extension for leg in state.legs)),
        by_extension=by,
        seen_by=tuple(sorted(set(seen_by))),
    )


@dataclass(frozen=True)
class Rules:
    """``[missed_calls]``: how long a callback may come, and the SLA (``None``: none)."""

    window_seconds: int = 24 * 3600
    sla_seconds: int | None = 15 * 60


@dataclass(frozen=True)
class Group:
    """A number's run of missed calls, oldest first, and the call that answered them."""

    missed: tuple[NumberCall, ...]
    callback: NumberCall | None = None

    @property
    def first(self) -> NumberCall:
        return self.missed[0]

    def open_at(self, moment: int | float, rules: Rules) -> bool:
        """Whether the group still waits for a callback at ``moment`` (Sipuni's time)."""
        if self.callback is not None and self.callback.at <= moment:
            return False
        return moment - self.first.started_at <= rules.window_seconds

    def overdue_at(self, rules: Rules) -> int | None:
        """When the group becomes overdue, or ``None`` if it never does (answered in time)."""
        if rules.sla_seconds is None:
            return None
        due = self.first.started_at + rules.sla_seconds
        if self.callback is not None and self.callback.at <= due:
            return None
        return due


@dataclass(frozen=True)
class Emission:
    """A lifecycle record due on one call for some integrations."""

    call_id: str
    integrations: tuple[str, ...]
    record: LifecycleEvent


def groups(calls: Iterable[NumberCall], rules: Rules) -> list[Group]:
    """The number's groups, in time order: a function of the *set* of calls."""
    found: list[Group] = []
    current: Group | None = None
    # A call seen twice (a duplicate webhook, a re-commit) counts once; ties by call id.
    unique = {c.call_id: c for c in calls}
    for call in sorted(unique.values(), key=lambda c: (c.at, c.call_id)):
        if current is not None and not current.open_at(call.at, rules):
            found.append(current)
            current = None
        if call.missed:
            current = Group((call,)) if current is None else Group((*current.missed, call))
        elif call.reached and current is not None:
            found.append(Group(current.missed, call))
            current = None
    if current is not None:
        found.append(current)
    return found


def records(
    found: Iterable[Group],
    rules: Rules,
    *,
    now: float,
    new: set[str],
    overdue_sent: set[str],
) -> list[Emission]:
    """The records due on the calls in ``new`` (not decided before), and the overdue records
    due at ``now`` that were not sent (``overdue_sent``: first calls whose record went).

    ``missed_again`` rides on the repeated call, for the integrations that saw it;
    ``called_back`` on the callback call, for the integrations that saw the group's first
    missed call (they hold its ticket); ``missed_overdue`` on the first missed call, for
    the integrations that saw it.
    """
    due: list[Emission] = []
    for group in found:
        for n, call in enumerate(group.missed[1:], start=1):
            if call.call_id in new:
                earlier = tuple(c.as_missed() for c in group.missed[:n])
                record = LifecycleEvent(
                    kind=LifecycleKind.MISSED_AGAIN, id=MISSED_AGAIN_ID, earlier=earlier
                )
                due.append(Emission(call.call_id, call.seen_by, record))
        back = group.callback
        if back is not None and back.call_id in new and back.answered_at is not None:
            callback = Callback(
                missed=tuple(c.as_missed() for c in group.missed),
                by_extension=back.by_extension,
                direction=back.direction,
                answered_at=back.answered_at,
                after_seconds=back.answered_at - group.first.started_at,
                talk_seconds=back.talk_seconds,
            )
            record = LifecycleEvent(
                kind=LifecycleKind.CALLED_BACK, id=CALLED_BACK_ID, callback=callback
            )
            due.append(Emission(back.call_id, group.first.seen_by, record))
        overdue = _overdue(group, rules, now)
        if overdue is not None and group.first.call_id not in overdue_sent:
            record = LifecycleEvent(
                kind=LifecycleKind.MISSED_OVERDUE, id=MISSED_OVERDUE_ID, overdue=overdue
            )
            due.append(Emission(group.first.call_id, group.first.seen_by, record))
    return due


def _overdue(group: Group, rules: Rules, now: float) -> Overdue | None:
    due = group.overdue_at(rules)
    if due is None or rules.sla_seconds is None or now < due:
        return None
    # A group closed unanswered by its window long ago (a replay, the loop off for a day)
    # is past caring about.
    if now - group.first.started_at > rules.window_seconds:
        return None
    return Overdue(
        missed=tuple(c.as_missed() for c in group.missed if c.started_at <= now),
        sla_seconds=rules.sla_seconds,
        waited_seconds=int(now) - group.first.started_at,
    )


@dataclass(frozen=True)
class Link:
    """Where a call stands in its number's lifecycle, as the store keeps it."""

    group: str | None  # the first missed call of its group (a missed call's own group)
    called_back_by: str | None  # the callback that answered its group
    # When the loop must look at the group again for its SLA (first missed calls only).
    overdue_at: int | None = None


def links(
    found: Iterable[Group], rules: Rules, *, now: float, overdue_sent: set[str]
) -> dict[str, Link]:
    """Each call's link, by call id: missed calls to their group and its callback, a
    callback to the group it answered; a group's first call says when its SLA falls due
    while that is still to come (not sent, the group not closed by its window at ``now``)."""
    result: dict[str, Link] = {}
    for group in found:
        first = group.first.call_id
        back = group.callback.call_id if group.callback else None
        for call in group.missed:
            result[call.call_id] = Link(first, back)
        due = group.overdue_at(rules)
        closed = now - group.first.started_at > rules.window_seconds
        if due is not None and first not in overdue_sent and not closed:
            result[first] = Link(first, back, due)
        if back is not None:
            result[back] = Link(first, back)
    return result
