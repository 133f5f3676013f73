"""The calls as people look at them: a list of recent calls, and one call's whole trace.

One read model for ``connector calls`` / ``connector trace`` and the web console. The pure
functions (:func:`store_query`, :func:`summary`, :func:`trace`) turn what a person asked
for into a store query and store rows into the views below; :func:`list_calls` and
:func:`load_trace` do the reading. :func:`to_json` is the one JSON form of every view
(documented in docs/trace.md).

- ``CallSummary``: a row of the list (time, direction, number, extensions, outcome,
  duration, and per integration an ``IntegrationStatus``: done / pending / retrying / dead /
  dropped, with the CRM object's link when its plugin reported one);
- ``CallTrace``: one call: its webhooks in arrival order (``RawEvent``), the derived
  ``CallState``, and per integration an ``IntegrationTrace``: the routing decisions
  (``RoutingStep``), the hook rows (``HookRow``), each hook call (``callrecords.HookCall``
  with its ``CrmRequest``s and ``Decision``s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import TypeAdapter

from connector_core import callrecords, click_to_call, phones
from connector_core.callrecords import CallRecord, ClickToCall, Decision, HookCall, Routing
from connector_core.callstate import CallState, Direction, Outcome
from connector_core.events import EventError, EventType, SipuniEvent, parse_event
from connector_core.reconcile import is_reconciled
from connector_core.store.base import (
    CallQuery,
    CallRow,
    DeliveryStatus,
    Dispatch,
    InboxItem,
    Store,
)

MAX_LIMIT = 1000


class ViewError(ValueError):
    """What was asked for cannot be shown; ``str(err)`` says why, for the person asking."""


@dataclass(frozen=True)
class CallFilter:
    """Which calls to list, as a person asks for them (every filter given must hold)."""

    limit: int = 50
    since: float | None = None  # started at or after, seconds since the epoch
    before: float | None = None  # started before: the next page
    before_call_id: str | None = None  # with ``before``: and started then, with a lower id
    account: str | None = None
    phone: str | None = None  # the caller's number, any spelling: "8 (916) 123-45-67"
    extension: str | None = None  # rung, answered or dialled
    outcome: str | None = None  # callstate.Outcome: answered, missed, not_answered…
    status: str | None = None  # DeliveryStatus of any integration (or of ``integration``)
    integration: str | None = None  # <account>/<name>


@dataclass(frozen=True)
class IntegrationStatus:
    """Where one integration stands with a call."""

    integration: str  # <account>/<name>
    status: DeliveryStatus
    link: str | None = None  # the CRM object (the ticket), when the plugin reported one


@dataclass(frozen=True)
class CallSummary:
    """A call as one row of a list."""

    account: str
    call_id: str
    started_at: float  # the call's start by Sipuni's clock; when it has none, when received
    direction: Direction
    number: str | None  # the client's number, E.164 (None for internal calls)
    number_raw: str | None  # as Sipuni sent it
    extensions: list[str]  # employee phones rung, in order
    answered_by: str | None
    employee: str | None  # who dialled (outbound, internal)
    outcome: Outcome
    finished: bool
    duration_seconds: int | None
    talk_seconds: int
    integrations: list[IntegrationStatus]


@dataclass(frozen=True)
class RawEvent:
    """A webhook Sipuni sent for the call, as stored, with its own timestamp."""

    inbox_id: int
    received_at: float  # when the connector received it
    event: int | None  # 1 ring, 2 hang-up, 3 answer, 4 transfer hang-up
    event_name: str  # ring, hangup, answer, transfer_hangup; "unreadable" if it parses no more
    timestamp: int | None  # Sipuni's own time of the event
    status: str  # the inbox item's: done, pending, quarantined, dropped
    error: str | None  # why processing it failed, if it did
    params: dict[str, Any]  # the fields exactly as received


@dataclass(frozen=True)
class RoutingStep:
    """A routing decision for one integration, from when it was made (kept when it changes)."""

    at: float
    sees: bool
    scheme_filter: str
    transfer_scheme: str | None
    reason: str  # both, as one line


@dataclass(frozen=True)
class HookRow:
    """One hook call the connector owes an integration for the call (a dispatch row)."""

    dispatch_id: int  # what `connector dlq retry` takes
    record: str  # the lifecycle record: started, answered, transferred:102, finished
    hook: str  # connector_call_started…
    status: str  # pending, done, dead, dropped
    attempts: int
    next_attempt_at: float | None  # for a pending row
    last_error: str | None


@dataclass(frozen=True)
class IntegrationTrace:
    """Everything one integration did with the call, and why."""

    integration: str
    status: DeliveryStatus | None  # None: no hook call was due (the call was not routed)
    link: str | None
    routing: list[RoutingStep]
    rows: list[HookRow]
    hook_calls: list[HookCall]  # every attempt kept, oldest first, with requests and decisions
    decisions: list[Decision]  # every hook call's decisions, in order


@dataclass(frozen=True)
class CallTrace:
    """One call: what Sipuni sent, what the connector made of it, and what each CRM got."""

    summary: CallSummary
    state: CallState
    events: list[RawEvent]
    integrations: list[IntegrationTrace]
    records_limit: int = callrecords.MAX_RECORDS_PER_CALL
    notes: list[str] = field(default_factory=list)
    # «Перезвонить» pressed on this call (click_to_call), and the click this call came from.
    click_to_call: list[ClickToCallStep] = field(default_factory=list)
    started_from: ClickToCallStep | None = None


@dataclass(frozen=True)
class ClickToCallStep:
    """A click-to-call: when it was asked, from which call, and what Sipuni answered."""

    at: float
    call_id: str  # the call it was started from
    request: ClickToCall


# -- pure: from what a person asks to a store query, from store rows to views ------------------


def store_query(wanted: CallFilter, regions: Mapping[str, str]) -> CallQuery:
    """The store query for ``wanted``; ``regions`` maps each configured account to its
    ``default_region``, in which a phone number is read. Raises ``ViewError``."""
    if not 1 <= wanted.limit <= MAX_LIMIT:
        raise ViewError(f"limit must be between 1 and {MAX_LIMIT}, not {wanted.limit}")
    if wanted.account is not None and wanted.account not in regions:
        known = ", ".join(sorted(regions)) or "none"
        raise ViewError(f"account {wanted.account} is not in the config (accounts: {known})")
    outcome = _member(Outcome, wanted.outcome, "outcome")
    status = _member(DeliveryStatus, wanted.status, "status")
    numbers: tuple[tuple[str, str], ...] | None = None
    if wanted.phone is not None:
        numbers = _numbers(wanted.phone, wanted.account, regions)
    return CallQuery(
        limit=wanted.limit,
        since=wanted.since,
        before=wanted.before,
        before_call_id=wanted.before_call_id,
        account=wanted.account,
        numbers=numbers,
        extension=wanted.extension.strip() if wanted.extension else None,
        outcome=outcome.value if outcome else None,
        status=status,
        integration=wanted.integration,
    )


M = TypeVar("M", Outcome, DeliveryStatus)


def _member(kind: type[M], value: str | None, name: str) -> M | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ViewError(
            f"{name} {value!r} is not one of: {', '.join(m.value for m in kind)}"
        ) from None


def _numbers(
    phone: str, account: str | None, regions: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """``phone`` read in each account's region: (account, E.164) pairs."""
    accounts = [account] if account is not None else sorted(regions)
    pairs = []
    for number in accounts:
        e164 = phones.normalize(phone, regions[number])
        if e164 is not None:
            pairs.append((number, e164))
    if not pairs:
        where = ", ".join(sorted({regions[a] for a in accounts})) or "no configured region"
        raise ViewError(f"{phone!r} cannot be read as a phone number (region {where})")
    return tuple(pairs)


def summary(row: CallRow) -> CallSummary:
    """A stored call as a list row."""
    call = row.state
    return CallSummary(
        account=call.account,
        call_id=call.call_id,
        started_at=float(call.started_at if call.started_at is not None else call.last_received_at),
        direction=call.direction,
        number=call.client_number,
        number_raw=call.client_number_raw,
        extensions=list(dict.fromkeys(leg.extension for leg in call.legs)),
        answered_by=call.answered_by,
        employee=call.employee,
        outcome=call.outcome,
        finished=call.finished,
        duration_seconds=call.duration_seconds,
        talk_seconds=call.talk_seconds,
        integrations=[
            IntegrationStatus(key, status, row.links.get(key))
            for key, status in row.statuses.items()
        ],
    )


def trace(
    row: CallRow,
    events: list[InboxItem],
    dispatches: list[Dispatch],
    records: list[CallRecord],
) -> CallTrace:
    """One call's trace from its stored rows: its call row, webhooks, dispatch rows, records."""
    clicks = [r for r in records if isinstance(r.entry, ClickToCall)]
    records = [r for r in records if not isinstance(r.entry, ClickToCall)]
    keys = list(
        dict.fromkeys(
            [*row.statuses, *(d.integration for d in dispatches), *(r.integration for r in records)]
        )
    )
    integrations = [
        _integration_trace(
            key,
            row,
            [d for d in dispatches if d.integration == key],
            [r for r in records if r.integration == key],
        )
        for key in keys
    ]
    notes = []
    made_up = sum(1 for item in events if is_reconciled(item.params))
    if made_up:
        notes.append(
            f"reconciled from Sipuni's call history: {made_up} of its webhooks never arrived"
            " and were made from the history row (`connector reconcile`, docs/sipuni.md)"
        )
    if len(records) >= callrecords.MAX_RECORDS_PER_CALL:
        notes.append(
            f"the call has {len(records)} records, the most kept per call: its oldest hook"
            " calls were dropped"
        )
    return CallTrace(
        summary=summary(row),
        state=row.state,
        events=[_raw_event(item) for item in events],
        integrations=integrations,
        notes=notes,
        click_to_call=[
            ClickToCallStep(r.at, row.state.call_id, r.entry)
            for r in clicks
            if isinstance(r.entry, ClickToCall)
        ],
    )


def _integration_trace(
    key: str, row: CallRow, dispatches: list[Dispatch], records: list[CallRecord]
) -> IntegrationTrace:
    routing = [
        RoutingStep(r.at, e.sees, e.scheme_filter, e.transfer_scheme, e.reason)
        for r in records
        if isinstance(e := r.entry, Routing)
    ]
    hook_calls = [r.entry for r in records if isinstance(r.entry, HookCall)]
    return IntegrationTrace(
        integration=key,
        status=row.statuses.get(key),
        link=row.links.get(key),
        routing=routing,
        rows=[_hook_row(d) for d in dispatches],
        hook_calls=hook_calls,
        decisions=[d for call in hook_calls for d in call.decisions],
    )


def _hook_row(row: Dispatch) -> HookRow:
    return HookRow(
        dispatch_id=row.id,
        record=row.key,
        hook=row.kind.hook if row.kind else "unknown",
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.not_before if row.status == "pending" else None,
        last_error=row.last_error,
    )


_EVENT_NAMES = {kind: kind.name.lower() for kind in EventType}


def _raw_event(item: InboxItem) -> RawEvent:
    try:
        parsed = parse_event(item.params)
    except EventError:
        parsed = None
    event = parsed if isinstance(parsed, SipuniEvent) else None
    return RawEvent(
        inbox_id=item.id,
        received_at=item.received_at,
        event=event.event if event else None,
        event_name=_EVENT_NAMES[event.type] if event else "unreadable",
        timestamp=event.timestamp if event else None,
        status=item.status,
        error=item.last_error,
        params=item.params,
    )


# -- reading --------------------------------------------------------------------------------------


async def list_calls(
    store: Store, wanted: CallFilter, regions: Mapping[str, str]
) -> list[CallSummary]:
    """The calls ``wanted`` names, newest first. Raises ``ViewError``."""
    return [summary(row) for row in await store.find_calls(store_query(wanted, regions))]


_LIKE_A_PHONE = re.compile(r"\+?[\d\s()-]{7,}")


async def load_trace(store: Store, call_id: str, account: str | None = None) -> CallTrace:
    """The trace of call ``call_id`` (of ``account``, or of the one account that has it).

    Raises ``ViewError`` when no stored call has that id, or several accounts do and
    ``account`` does not say which.
    """
    rows = await store.find_calls(CallQuery(limit=2, account=account, call_id=call_id))
    if not rows:
        where = f" of account {account}" if account else ""
        # Sipuni's call ids are "<seconds>.<number>"; a caller's number is what people have.
        see = (
            f"it looks like a phone number: `connector calls --phone {call_id!r}` lists its calls"
            if _LIKE_A_PHONE.fullmatch(call_id)
            else "see `connector calls`"
        )
        raise ViewError(f"no stored call{where} has the id {call_id!r} ({see})")
    if len(rows) > 1:
        accounts = " and ".join(sorted(r.state.account for r in rows))
        raise ViewError(f"call {call_id!r} is in accounts {accounts}: name one with --account")
    row = rows[0]
    number = row.state.account
    events = await store.call_events(number, call_id)
    found = trace(
        row,
        events,
        await store.dispatches_for(number, call_id),
        await store.call_records(number, call_id),
    )
    origin = await click_to_call.find_origin(store, row.state, [e.params for e in events])
    if origin is None:
        return found
    return replace(found, started_from=ClickToCallStep(origin.at, origin.call_id, origin.request))


_TRACE: TypeAdapter[CallTrace] = TypeAdapter(CallTrace)
_SUMMARIES: TypeAdapter[list[CallSummary]] = TypeAdapter(list[CallSummary])


def to_json(view: CallTrace | list[CallSummary]) -> Any:
    """The JSON form of a trace or a list (docs/trace.md): plain dicts, lists and values.

    A trace's ``state`` leaves out the parsed events: ``events`` has them as received.
    """
    if isinstance(view, CallTrace):
        return _TRACE.dump_python(view, mode="json", exclude={"state": {"events"}})
    return _SUMMARIES.dump_python(view, mode="json")
