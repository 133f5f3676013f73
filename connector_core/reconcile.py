"""Reconciliation: the calls Sipuni knows and the connector never heard of (or not to the end).

Sipuni's call history (``statistic/export``, :meth:`SipuniApi.calls_since`) is compared with
what the store received for the same window. A call Sipuni lists and the connector never
received is recorded from its history row: the webhooks Sipuni would have sent are made up
(:func:`synthesize`) and appended to the inbox like any webhook, so the worker, the router
and the dispatcher take them to every integration that should see the call, once. A call
received without its final hang-up gets only that hang-up. A call received whole gets
nothing.

The made-up webhooks carry ``connector_reconciled = sipuni_history`` (:data:`MARK`): the
trace and the console say the call was reconciled. They are the same for the same row every
time, so a repeated run (or one cut short between two appends) appends only duplicates the
tracker ignores.

Matching a history row to a received call [INF]: the reference says the recording link of
the webhooks is ``…/record?id=<call_id>`` and ``statistic/record`` takes the CSV's «ID
записи», so that column is taken as the call's ``call_id``; but no source says so outright.
A row whose «ID записи» names no received call is therefore also matched by its start time
(within :data:`MATCH_SECONDS`), its direction and the client's number, before it is taken
as missing.

:func:`plan` and :func:`synthesize` are pure; :func:`reconcile_account` reads Sipuni and the
store and appends; :func:`reconcile_round` is the background loop's round.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from connector_core import tracker
from connector_core.callstate import CallState
from connector_core.clock import Clock
from connector_core.config import Config, ReconcileConfig
from connector_core.errors import describe_error
from connector_core.events import CALL_ID, EventError, EventType, SipuniEvent, parse_event
from connector_core.phones import extension_of, last_digits
from connector_core.sipuni_api import Direction, HistoryRow, SipuniApi
from connector_core.store.base import CallQuery, InboxItem, Store

log = logging.getLogger(__name__)
RECONCILE_SINGLETON: Final = "singleton:reconcile"
# The parameter every made-up webhook carries, and its value: what the trace shows.
MARK_PARAM: Final = "connector_reconciled"
MARK_VALUE: Final = "sipuni_history"
MARK: Final = {MARK_PARAM: MARK_VALUE}
# A history row and a received call under another id are one call when they started this
# close together (and agree on direction and number).
MATCH_SECONDS: Final = 10
_PAGE: Final = 500
_EXTENSION: Final = re.compile(r"\d{1,8}")


class Verdict(StrEnum):
    """What reconciliation makes of one history row."""

    WHOLE = "whole"  # received with its final hang-up: nothing to do
    MISSING_CALL = "missing_call"  # never received: recorded from the history row
    MISSING_END = "missing_end"  # received without its final hang-up: that hang-up added
    TOO_RECENT = "too_recent"  # ended less than the settle margin ago: left for a later run


@dataclass(frozen=True)
class Received:
    """What the connector holds of one call, as reconciliation compares it."""

    call_id: str
    started_at: int | None
    direction: str  # callstate.Direction's value
    client_digits: str | None  # the client's number, its last 10 digits
    ended: bool  # the final hang-up (event 2) is among its webhooks

    @classmethod
    def of(cls, state: CallState) -> Received:
        """From a call's state (the events it merged)."""
        return cls(
            call_id=state.call_id,
            started_at=state.started_at,
            direction=state.direction.value,
            client_digits=last_digits(state.client_number) if state.client_number else None,
            ended=any(e.type is EventType.HANGUP for e in state.events),
        )


@dataclass(frozen=True)
class Finding:
    """One history row, what the connector had of it, and the webhooks to append."""

    row: HistoryRow
    verdict: Verdict
    call_id: str
    matched_by: str  # "id", "time and number", or "" (nothing received)
    events: tuple[dict[str, str], ...] = ()

    @property
    def reconciled(self) -> bool:
        return self.verdict in (Verdict.MISSING_CALL, Verdict.MISSING_END)


# -- pure: which rows are missing what ------------------------------------------------------


def call_id_for(row: HistoryRow) -> str:
    """The call id a row is recorded under: its «ID записи» [INF: the webhooks' ``call_id``],
    or, when that is empty or not an id, one made from the row (the same every time)."""
    if CALL_ID.fullmatch(row.record_id):
        return row.record_id
    seed = "|".join((row.started_at.isoformat(), row.source, row.destination, row.status))
    digest = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()[:12]
    return f"{int(row.started_at.timestamp())}.h{digest}"


def row_direction(row: HistoryRow) -> str:
    """The row's direction («Тип»), or, when the column says nothing known, from its numbers:
    an employee's short number on the calling side makes it outbound (internal if both)."""
    if row.direction is not None:
        return row.direction.value
    short_src = _EXTENSION.fullmatch(row.source) is not None
    short_dst = _EXTENSION.fullmatch(row.destination) is not None
    if short_src:
        return Direction.INTERNAL.value if short_dst else Direction.OUTBOUND.value
    return Direction.INBOUND.value


def _client_digits(row: HistoryRow) -> str | None:
    direction = row_direction(row)
    number = row.source if direction == Direction.INBOUND.value else row.destination
    if direction == Direction.INTERNAL.value or not re.sub(r"\D", "", number):
        return None
    return last_digits(number)


def _same_call(row: HistoryRow, call: Received) -> bool:
    if call.started_at is None:
        return False
    if abs(call.started_at - int(row.started_at.timestamp())) > MATCH_SECONDS:
        return False
    if call.direction not in (row_direction(row), "unknown"):
        return False
    return call.client_digits == _client_digits(row)


def match(
    rows: Sequence[HistoryRow], received: Sequence[Received]
) -> list[tuple[Received | None, str]]:
    """For each row, the received call it is (and how it was found), or ``None``.

    By id first; a row whose id names nothing is then paired with the nearest-in-time
    received call of the same direction and number that no other row took.
    """
    by_id = {call.call_id: call for call in received}
    found: list[tuple[Received | None, str]] = []
    taken: set[str] = set()
    for row in rows:
        call = by_id.get(call_id_for(row))
        found.append((call, "id") if call else (None, ""))
        if call:
            taken.add(call.call_id)
    for i, row in enumerate(rows):
        if found[i][0] is not None:
            continue
        candidates = [c for c in received if c.call_id not in taken and _same_call(row, c)]
        if candidates:
            start = int(row.started_at.timestamp())
            nearest = min(candidates, key=lambda c: (abs((c.started_at or 0) - start), c.call_id))
            taken.add(nearest.call_id)
            found[i] = (nearest, "time and number")
    return found


def plan(
    account: str,
    rows: Sequence[HistoryRow],
    received: Sequence[Received],
    *,
    now: float,
    settle_seconds: float,
) -> list[Finding]:
    """What to do about each history row, given what the store received.

    A row whose call ended less than ``settle_seconds`` before ``now`` is left alone: the
    call may still be going on, or its webhooks still on their way (Sipuni retries).
    """
    findings = []
    for row, (call, how) in zip(rows, match(rows, received), strict=True):
        if call is not None and call.ended:
            findings.append(Finding(row, Verdict.WHOLE, call.call_id, how))
            continue
        if _ended_at(row) > now - settle_seconds:
            findings.append(Finding(row, Verdict.TOO_RECENT, call.call_id if call else "", how))
            continue
        call_id = call.call_id if call else call_id_for(row)
        events = synthesize(account, row, call_id)
        if call is None:
            findings.append(Finding(row, Verdict.MISSING_CALL, call_id, how, tuple(events)))
        else:
            findings.append(Finding(row, Verdict.MISSING_END, call_id, how, (events[-1],)))
    return findings


# -- pure: the webhooks Sipuni would have sent ----------------------------------------------


def _start(row: HistoryRow) -> int:
    return int(row.started_at.timestamp())


def _answered_at(row: HistoryRow) -> int | None:
    return _start(row) + row.answer_seconds if row.answered else None


def _ended_at(row: HistoryRow) -> int:
    """The call's end: its start and its length («Длительность звонка»), or, without that,
    its answer time and talk."""
    length = row.call_seconds or row.answer_seconds + row.talk_seconds
    return _start(row) + length


def _extension(text: str, account: str) -> str | None:
    """An employee's extension in a history cell: ``101``, ``012345101``, ``Анна (101)``.
    [INF] «Кто ответил» may hold a name; a short number in it is taken as the extension."""
    text = text.strip()
    if text.isdigit():
        found = extension_of(text, account)
        return found if found and _EXTENSION.fullmatch(found) else None
    numbers = re.findall(r"(?<!\d)\d{1,8}(?!\d)", text)
    return numbers[-1] if numbers else None


def synthesize(account: str, row: HistoryRow, call_id: str) -> list[dict[str, str]]:
    """The webhooks of ``row``'s call as Sipuni sends them (sequences A, B, D of the
    reference): a ring of the employee who answered (inbound) or dialled (outbound), the
    answer if someone answered, and the final hang-up with its status and times, its
    last item. Each carries :data:`MARK`. Only what the history row says is in them: an
    inbound call nobody answered names no employee (the history does not list who rang),
    the scheme is named by its name only, and there is no recording link (the history has
    none; Sipuni's ``statistic/record`` needs the integration key, which must not go into
    a CRM).
    """
    direction = row_direction(row)
    start, answered_at, ended = _start(row), _answered_at(row), _ended_at(row)
    base = {"call_id": call_id, "user_id": account, **MARK}
    if row.scheme:
        base["treeName"] = row.scheme
    answered_by = _extension(row.answered_by, account)
    if direction == Direction.INBOUND.value:
        employee = answered_by
        caller = {"src_num": row.source, "src_type": "1", "short_src_num": row.source}
        line = {"pbxdstnum": row.destination} if row.destination else {}
    else:
        employee = _extension(row.source, account)
        caller = {"src_num": account + employee if employee else row.source, "src_type": "2"}
        if employee:
            caller["short_src_num"] = employee
        line = {}
    if direction == Direction.INBOUND.value and employee:
        callee = {"dst_num": account + employee, "dst_type": "2", "short_dst_num": employee}
    elif direction == Direction.INTERNAL.value:
        other = _extension(row.destination, account) or row.destination
        callee = {"dst_num": account + other, "dst_type": "2", "short_dst_num": other}
    else:
        callee = {"dst_num": row.destination, "dst_type": "1"}
    party = {**caller, **callee, **line}
    events: list[dict[str, str]] = []
    if employee or direction != Direction.INBOUND.value:
        events.append({"event": "1", **base, **party, "timestamp": str(start)})
    if answered_at is not None:
        events.append({"event": "3", **base, **party, "timestamp": str(answered_at)})
    hangup = {
        "event": "2",
        **base,
        **party,
        "status": _status(row),
        "call_start_timestamp": str(start),
        "call_answer_timestamp": str(answered_at or 0),
        "timestamp": str(max(ended, answered_at or start)),
    }
    last = answered_by if direction == Direction.INBOUND.value else employee
    if last:
        hangup["last_called"] = last
    events.append(hangup)
    return events


def _status(row: HistoryRow) -> str:
    """The final hang-up's ``status`` from the row: answered or not; «Занято» is BUSY."""
    if row.answered:
        return "ANSWER"
    return "BUSY" if "занят" in row.status.lower() else "NOANSWER"


def is_reconciled(params: Mapping[str, object]) -> bool:
    """Whether a stored webhook was made from Sipuni's history rather than received."""
    return params.get(MARK_PARAM) == MARK_VALUE


def reconciled_in(state: CallState) -> int:
    """How many of a call's merged events were made from Sipuni's history."""
    return sum(1 for e in state.events if e.extra.get(MARK_PARAM) == MARK_VALUE)


# -- reading Sipuni and the store, appending --------------------------------------------------


@dataclass
class Report:
    """One account's reconciliation of one window."""

    account: str
    since: datetime
    until: datetime
    findings: list[Finding] = field(default_factory=list)
    appended: int = 0  # webhooks appended to the inbox
    dry_run: bool = False

    def count(self, verdict: Verdict) -> int:
        return sum(1 for f in self.findings if f.verdict is verdict)

    @property
    def reconciled(self) -> list[Finding]:
        return [f for f in self.findings if f.reconciled]

    def summary(self) -> str:
        """One line: how many calls Sipuni listed and what became of them."""
        done = "would be recorded" if self.dry_run else "recorded"
        return (
            f"account {self.account}: {len(self.findings)} call(s) in Sipuni's history from"
            f" {_utc(self.since)} to {_utc(self.until)}: {self.count(Verdict.WHOLE)} received"
            f" whole, {self.count(Verdict.MISSING_CALL)} never received ({done} from the"
            f" history), {self.count(Verdict.MISSING_END)} without their final hang-up"
            f" ({done}), {self.count(Verdict.TOO_RECENT)} too recent (left for a later run)"
        )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def _stored_calls(store: Store, account: str, since: float, until: float) -> list[CallState]:
    """The account's processed calls that started in [since, until], every page."""
    calls: list[CallState] = []
    before: float | None = until + MATCH_SECONDS + 1
    before_id: str | None = None
    while True:
        rows = await store.find_calls(
            CallQuery(
                limit=_PAGE,
                account=account,
                since=since - MATCH_SECONDS,
                before=before,
                before_call_id=before_id,
            )
        )
        calls += [r.state for r in rows]
        if len(rows) < _PAGE:
            return calls
        last = rows[-1].state
        before, before_id = float(last.started_at or 0), last.call_id


def _folded(account: str, call_id: str, items: list[InboxItem]) -> CallState | None:
    """A call's stored webhooks not processed yet, merged as the worker will merge them."""
    state: CallState | None = None
    for item in items:
        try:
            parsed = parse_event(item.params)
        except EventError:
            continue
        if isinstance(parsed, SipuniEvent):
            state, _ = tracker.apply(
                state, parsed, account=account, region="RU", received_at=item.received_at
            )
    return state


async def _received(
    store: Store, account: str, rows: Sequence[HistoryRow], since: float, until: float
) -> list[Received]:
    """What the store holds of the window's calls: the processed calls, and for rows whose
    id names none of them, the webhooks stored under that id and not processed yet (a
    previous run's, when the worker is behind)."""
    calls = {s.call_id: s for s in await _stored_calls(store, account, since, until)}
    for row in rows:
        call_id = call_id_for(row)
        if call_id in calls:
            continue
        pending = _folded(account, call_id, await store.call_events(account, call_id))
        if pending is not None:
            calls[call_id] = pending
    return [Received.of(state) for state in calls.values()]


async def reconcile_account(
    store: Store,
    api: SipuniApi,
    *,
    since: datetime,
    until: datetime,
    now: float,
    settle_seconds: float,
    dry_run: bool = False,
) -> Report:
    """Compare the account's calls of [since, until] in Sipuni's history with the store and
    (unless ``dry_run``) append the webhooks of what is missing. Raises the API's errors
    (``TransientError``, ``AuthError``, ``InvalidRequestError``)."""
    rows = await api.calls_since(since, until)
    received = await _received(store, api.account, rows, since.timestamp(), until.timestamp())
    report = Report(api.account, since, until, dry_run=dry_run)
    report.findings = plan(api.account, rows, received, now=now, settle_seconds=settle_seconds)
    if dry_run:
        return report
    for finding in report.reconciled:
        for params in finding.events:
            await store.append_event(api.account, dict(params), now)
            report.appended += 1
    return report


OnReconciled = Callable[[str, Verdict], None]


async def reconcile_all(
    store: Store,
    config: Config,
    settings: ReconcileConfig,
    now: float,
    on_reconciled: OnReconciled = lambda account, verdict: None,
) -> list[Report]:
    """One run over every account with a key, the window ``lookback_hours`` back from
    ``now``; an account whose history cannot be read is logged and skipped."""
    until = datetime.fromtimestamp(now, UTC)
    since = datetime.fromtimestamp(now - settings.lookback_hours * 3600, UTC)
    reports = []
    for account in config.accounts.values():
        api = SipuniApi.of_account(account)
        if api is None:
            continue
        try:
            async with api:
                report = await reconcile_account(
                    store,
                    api,
                    since=since,
                    until=until,
                    now=now,
                    settle_seconds=settings.settle_minutes * 60,
                )
        except Exception as exc:
            log.error(
                "reconciliation of account %s failed: %s", account.number, describe_error(exc)
            )
            continue
        for finding in report.reconciled:
            on_reconciled(account.number, finding.verdict)
            log.warning(
                "call %s of account %s: %s; recorded from Sipuni's call history",
                finding.call_id,
                account.number,
                "its webhooks never arrived"
                if finding.verdict is Verdict.MISSING_CALL
                else "its final hang-up never arrived",
            )
        log.info("reconciliation: %s", report.summary())
        reports.append(report)
    return reports


def reconcile_round(
    store: Store, config: Config, clock: Clock, on_reconciled: OnReconciled
) -> Callable[[], Awaitable[bool]]:
    """The supervised background round (one process of the cluster runs it)."""

    async def run() -> bool:
        await reconcile_all(store, config, config.reconcile, clock.now(), on_reconciled)
        return False

    return run


def accounts_with_key(config: Config) -> list[str]:
    """The accounts reconciliation can read Sipuni's history of."""
    return [a.number for a in config.accounts.values() if a.sipuni_api_key is not None]
