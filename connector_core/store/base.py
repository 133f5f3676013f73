"""The storage interface: inbox, call states, dispatch outbox, effect keys, coordination.

SQLite implements it on one machine (``sqlite.py``), PostgreSQL for several processes on
several hosts (``postgres.py``); everything else (the worker, the dispatcher, the CLI, the
console, the health checks) uses only this interface. The guarantees every backend gives:

- ``append_event`` returns only once the event is durable: the webhook is acknowledged after.
- ``commit_event`` is atomic: the new call state, the inbox item marked done and the new
  dispatches are stored together or not at all, so a crash never half-processes an event.
- dispatch rows are unique per ``(integration, call, key)``: proposing one twice is a no-op.
  The key is the lifecycle record's id; the record itself (kind and payload) is kept with
  the row, so the dispatcher calls the hook with it instead of working it out from the key.
- coordination (``shared`` stores only do real work): a lease is held by one owner at a time
  until it expires unless renewed; a lock is held by one holder in the whole cluster; a rate
  slot is granted only while the shared windows have room; a published message reaches every
  subscriber of its channel in every process that shares the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import asyncpg
import pydantic_core

from connector_core import tracker
from connector_core.callrecords import CallRecord, NewCallRecord
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.errors import InvalidRequestError
from connector_core.events import SipuniEvent
from connector_core.missed import Link, NumberCall
from connector_core.store.pruning import PruneRule

# Refused webhooks are kept for inspection, but a flood of garbage must not fill the disk.
MAX_REJECTED = 10_000
PROBE_TIMEOUT = 5.0  # seconds: a write probe that takes longer says the store cannot write


class StoreUnavailable(RuntimeError):
    """The store as a whole cannot serve (not open, or its backend is failing)."""


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the store as a whole fails, rather than one piece of work.

    SQLite reports a full disk, an I/O error, a locked or read-only database as
    ``OperationalError``: retrying the work later helps, quarantining it would not. So does
    PostgreSQL a lost or refused connection, a server shutting down or out of resources (a
    full disk), a system I/O error, or a read-only server (a standby after a failover).
    """
    return isinstance(exc, (StoreUnavailable, sqlite3.OperationalError, *_POSTGRES_FAILURES))


_POSTGRES_FAILURES = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.PostgresSystemError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


def params_json(params: Mapping[str, str]) -> str:
    """The stored text of an accepted webhook's fields: text ingest checked is valid Unicode
    (no lone surrogates), which SQLite and PostgreSQL can store; a rejected webhook's may not
    be, and is written with ``json.dumps``.

    pydantic-core's encoder, at a fifth of ``json.dumps``'s time per webhook (1.8 against
    9.4 µs for a ring's 12 fields), the stdlib building an encoder on every call.
    """
    return pydantic_core.to_json(params).decode()


def call_id_of(params: Mapping[str, Any]) -> str | None:
    """The call id a stored webhook names, as the worker groups webhooks by call."""
    return str(params.get("call_id") or "").strip() or None


@dataclass(frozen=True)
class InboxItem:
    id: int
    account: str
    received_at: float
    params: dict[str, Any]
    status: str = "pending"  # pending | done | quarantined | dropped
    attempts: int = 0  # failed attempts at processing it
    last_error: str | None = None
    # The event as ingest validated it; None for a row stored before the inbox kept it
    # (then the worker parses ``params``).
    event: SipuniEvent | None = None


def stored_event(text: str | None) -> SipuniEvent | None:
    """An inbox row's ``event`` column, as ``append_event`` wrote it: already validated once,
    so it is read back by pydantic's JSON reader, not by ``parse_event`` again."""
    return SipuniEvent.model_validate_json(text) if text else None


@dataclass(frozen=True)
class NewDispatch:
    """Work for one integration about one call: run the hook of ``record`` once."""

    integration: str  # Integration.key, "<account>/<name>"
    record: LifecycleEvent  # kind, id (the row's key) and the hook's payload
    not_before: float = 0.0

    @property
    def key(self) -> str:
        return self.record.id

    @property
    def kind(self) -> LifecycleKind:
        return self.record.kind


@dataclass(frozen=True)
class DueHead:
    """A call group whose first pending row is due (``Store.due_heads``): which group, and
    whether its work completes the call. Not the row's record: the dispatcher reads the
    group's rows when it runs it (``Store.group_work``), so a scan parses no records."""

    id: int  # the head row's
    integration: str
    account: str
    call_id: str
    key: str  # the head row's lifecycle record id
    # The call hung up (its finished row waits in this group), so the group's work is the
    # work that completes the call (pacing.Priority).
    completes_call: bool = False


@dataclass(frozen=True)
class GroupWork:
    """What one (integration, call) group has to run: its pending rows, in order, and the
    call's state (``None`` when the call is gone)."""

    rows: list[Dispatch]
    call: CallState | None


@dataclass(frozen=True)
class Dispatch:
    id: int
    account: str
    call_id: str
    integration: str
    key: str  # the lifecycle record's id: started, answered, transferred:102, finished, …
    attempts: int
    not_before: float
    status: str  # pending | done | dead | dropped
    last_error: str | None = None
    created_at: float = 0.0
    # None for a row written before rows kept their record (schema version 1).
    record: LifecycleEvent | None = None

    @property
    def kind(self) -> LifecycleKind | None:
        """What the row is about; ``None`` only for an old row whose key names nothing known."""
        return self.record.kind if self.record else _legacy_key(self.key)[0]

    def hook_record(self, call: CallState) -> LifecycleEvent:
        """The record to call the hook with: the stored one, with what ``call`` knows now."""
        if self.record is None:
            return _legacy_record(self.key, call)
        return tracker.refreshed(self.record, call)


# Rows written before the record was kept name the transfer-scheme hook by this prefix.
_LEGACY_TRANSFER_SCHEME = "transfer_scheme"


def _legacy_key(key: str) -> tuple[LifecycleKind | None, str]:
    """The kind and argument of a key written before rows kept their record (the only parser)."""
    name, _, argument = key.partition(":")
    if name == _LEGACY_TRANSFER_SCHEME:
        return LifecycleKind.REACHED_TRANSFER_SCHEME, argument
    known = {kind.value: kind for kind in LifecycleKind}
    return known.get(name), argument


def _legacy_record(key: str, call: CallState) -> LifecycleEvent:
    """The record of a row written before rows kept it, worked out once from its key."""
    kind, argument = _legacy_key(key)
    if kind is None:
        raise InvalidRequestError(
            f"dispatch row {key!r} names no lifecycle event this release knows:"
            " drop it with `connector dlq drop`"
        )
    if kind is LifecycleKind.TRANSFERRED:
        # "transferred:102#2" is the second time the call was handed to 102.
        extension, _, nth = argument.partition("#")
        to_it = [t for t in call.transfers if t.to_extension == extension]
        n = int(nth or 1)
        if len(to_it) < n:
            raise InvalidRequestError(
                f"dispatch row {key!r}, written by an older release, names transfer {n} to"
                f" {extension}; the call shows {len(to_it)}: drop it with `connector dlq drop`"
            )
        return LifecycleEvent(kind=kind, id=key, extension=extension, transfer=to_it[n - 1])
    if kind in (LifecycleKind.ENTERED_SCHEME, LifecycleKind.REACHED_TRANSFER_SCHEME):
        # The argument is the scheme's number or name, whichever was known then.
        visit = next((v for v in call.schemes if v.matches(argument)), None)
        if visit is None:
            known = ", ".join(f"{v.id}/{v.name}" for v in call.schemes) or "none"
            raise InvalidRequestError(
                f"dispatch row {key!r}, written by an older release, names scheme {argument!r};"
                f" the call's schemes are {known}: drop it with `connector dlq drop`"
            )
        return LifecycleEvent(kind=kind, id=key, scheme=visit)
    if kind is LifecycleKind.ANSWERED:
        return LifecycleEvent(kind=kind, id=key, extension=call.first_answered_by)
    return LifecycleEvent(kind=kind, id=key)


@dataclass(frozen=True)
class Rejected:
    id: int
    account: str | None
    received_at: float
    reason: str
    params: dict[str, Any]


@dataclass(frozen=True)
class SeenScheme:
    """A routing scheme some stored call went through: its number and its name, as seen."""

    id: str | None
    name: str | None

    def matches(self, selector: str) -> bool:
        """Whether a ``schemes``/``transfer_schemes`` entry names this scheme (number or name)."""
        return selector in (self.id, self.name)


class DeliveryStatus(StrEnum):
    """Where an integration's hook calls for one call stand, worst first.

    ``dead``: one is in the dead-letter queue; ``retrying``: one failed and waits for its
    retry; ``pending``: one waits for its first run; ``dropped``: an operator gave one up;
    ``done``: every one ran. The store works it out from the dispatch rows (one definition,
    in SQL, so a list can be filtered by it).
    """

    DEAD = "dead"
    RETRYING = "retrying"
    PENDING = "pending"
    DROPPED = "dropped"
    DONE = "done"


# The rows without which an integration cannot stand at each status but done: few (the rows
# not done), found through the dispatches_status index. The same SQL on both backends.
ROWS_OF_STATUS = {
    DeliveryStatus.DEAD: "status = 'dead'",
    DeliveryStatus.RETRYING: "status = 'pending' AND attempts > 0",
    DeliveryStatus.PENDING: "status = 'pending'",
    DeliveryStatus.DROPPED: "status = 'dropped'",
}


def extensions_column(state: CallState) -> str:
    """The extensions a call rang, was answered by or was made from, as ``,101,102,``: the
    ``calls.extensions`` column a list filtered by extension searches."""
    found = [leg.extension for leg in state.legs] + [a.extension for a in state.answers]
    if state.employee:
        found.append(state.employee)
    return "," + ",".join(dict.fromkeys(found)) + ","


@dataclass(frozen=True)
class CallQuery:
    """Which stored calls to list, newest start first; every filter given must hold."""

    limit: int = 50
    since: float | None = None  # started at or after (seconds since the epoch)
    before: float | None = None  # started before: the next page
    # With ``before``: also the calls started at ``before`` whose id sorts below this one, so
    # a page that ends amid calls started in the same second loses none of them.
    before_call_id: str | None = None
    account: str | None = None
    call_id: str | None = None
    # (account, E.164) pairs: the caller's number, read in each account's region.
    numbers: tuple[tuple[str, str], ...] | None = None
    number_digits: str | None = None  # digits anywhere in the caller's number: "4567"
    extension: str | None = None  # rung, answered, or dialled
    outcome: str | None = None  # callstate.Outcome
    status: DeliveryStatus | None = None  # of any integration, or of ``integration``
    integration: str | None = None


@dataclass(frozen=True)
class CallRow:
    """A stored call as a list shows it: its state, and per integration where it stands."""

    state: CallState
    statuses: dict[str, DeliveryStatus] = field(default_factory=dict)  # by Integration.key
    # The latest CRM link a plugin reported (``Decision.link``), by Integration.key.
    links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueDepth:
    """An integration's hook calls that are not done, and its latest failure."""

    pending: int = 0
    retrying: int = 0
    dead: int = 0
    last_error: str | None = None
    last_error_call: str | None = None


@dataclass(frozen=True)
class RecentUse:
    """What an account's latest calls went through: extensions (with how many calls each was
    in) and schemes (number, name), as seen."""

    calls: int
    extensions: dict[str, int]
    schemes: list[tuple[str | None, str | None]]


@dataclass(frozen=True)
class StoredAuth:
    """The latest authorisation check of an integration, as the cluster's checker stored it."""

    integration: str  # Integration.key
    status: str  # integrations.AuthStatus value
    reason: str
    checked_at: float


@dataclass(frozen=True)
class StoreInfo:
    """What ``connector check`` says of a store: where it is and its schema version."""

    backend: str  # "sqlite" | "postgresql"
    where: str  # a path, or the URL with its password masked
    version: int  # the schema version found (0: an empty database)
    latest: int  # the version this release writes


@dataclass(frozen=True)
class StoredNumberCall:
    """A call of a client's number as the missed-call lifecycle keeps it."""

    call: NumberCall
    decided: bool  # its records were worked out (it may still be linked anew)
    overdue_sent: bool  # a first missed call whose overdue record was written
    group: str | None = None  # the first missed call of its group
    called_back_by: str | None = None  # the callback that answered its group


@dataclass(frozen=True)
class NumberSettlement:
    """What the missed-call loop decided for one number, written in one transaction."""

    account: str
    number: str  # E.164
    decided: tuple[str, ...]  # the call ids whose records are now written
    links: Mapping[str, Link]  # by call id
    overdue_sent: tuple[str, ...]  # first missed calls whose overdue record is written
    dispatches: tuple[tuple[str, NewDispatch], ...]  # (call id, row) of the new records


@dataclass(frozen=True)
class MissedSummary:
    """An account's missed-call lifecycle at a glance (the console)."""

    missed: int  # missed calls
    open: int  # of them, not linked to a callback (waiting, or closed unanswered)
    called_back: int  # callbacks that answered missed calls


def summarise(rows: Iterable[tuple[str, str, str | None, str | None]]) -> dict[str, MissedSummary]:
    """Each account's summary from (account, call id, group, called back by) rows: a missed
    call is one in a group (a callback is linked to the group it answered without being in
    it); an open one has no callback."""
    counts: dict[str, list[int]] = {}
    for account, call_id, group, called_back_by in rows:
        count = counts.setdefault(account, [0, 0, 0])
        if called_back_by == call_id:
            count[2] += 1
        elif group is not None:
            count[0] += 1
            count[1] += called_back_by is None
    return {account: MissedSummary(*count) for account, count in counts.items()}


# Channels of Store.publish / Store.subscribe.
INBOX_CHANNEL = "inbox"  # an event was appended: workers look at the inbox now
DISPATCH_CHANNEL = "dispatches"  # dispatch rows were added: dispatchers scan now
CARD_CHANNEL = "cards"  # an agent card (JSON) for the process that holds the agent's stream


class EffectStore(Protocol):
    """Idempotency keys of CRM effects for one integration."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        """Record ``value`` under ``key``; ``False`` (and nothing written) if the key exists."""
        ...

    async def drop(self, key: str) -> bool:
        """Forget ``key`` (a link found stale); ``False`` if it was not there."""
        ...

    async def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """Every key starting with ``prefix``, and its value, in the order they were put."""
        ...


class EffectTable(Protocol):
    """A store's effect keys of every integration (what ``BoundEffects`` binds to one)."""

    async def effect_get(self, integration: str, key: str) -> dict[str, Any] | None: ...

    async def effect_put(self, integration: str, key: str, value: dict[str, Any]) -> bool: ...

    async def effect_drop(self, integration: str, key: str) -> bool: ...

    async def effect_items(
        self, integration: str, prefix: str = ""
    ) -> list[tuple[str, dict[str, Any]]]: ...


class BoundEffects:
    """``EffectStore`` for one integration over a store's ``effects`` table."""

    def __init__(self, table: EffectTable, integration: str) -> None:
        self._table, self._integration = table, integration

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._table.effect_get(self._integration, key)

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        return await self._table.effect_put(self._integration, key, value)

    async def drop(self, key: str) -> bool:
        return await self._table.effect_drop(self._integration, key)

    async def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return await self._table.effect_items(self._integration, prefix)


class Store(Protocol):
    # Whether other processes may use this store at the same time (PostgreSQL). When not,
    # leases, locks, rate slots and channels work within this process only.
    shared: bool

    async def open(self) -> None:
        """Connect and bring the schema to this release's version (refused if newer)."""
        ...

    async def close(self) -> None: ...

    async def append_event(
        self,
        account: str,
        params: dict[str, Any],
        received_at: float,
        event: SipuniEvent | None = None,
    ) -> int:
        """Durably store one accepted webhook and announce it on ``INBOX_CHANNEL`` (on a
        shared store, in the same transaction); returns its inbox id. ``event`` is what
        ``parse_event`` made of ``params``: stored beside them, so the worker need not parse
        them again."""
        ...

    async def record_rejected(
        self, account: str | None, params: dict[str, Any], reason: str, received_at: float
    ) -> int:
        """Keep a refused webhook for inspection (bounded: the oldest are pruned)."""
        ...

    async def pending_events(self, limit: int, after_id: int = 0) -> list[InboxItem]:
        """Up to ``limit`` pending inbox items with an id above ``after_id``, in id order; a
        shared store leaves out the calls whose lease a process holds, so each worker is
        handed calls it can take."""
        ...

    async def fail_event(self, item_id: int, error: str, *, quarantine: bool) -> None:
        """Count a failed attempt at inbox item ``item_id``; set it aside if ``quarantine``."""
        ...

    async def writable(self) -> bool:
        """Whether a real write (committed, durable) succeeds now."""
        ...

    async def load_call(self, account: str, call_id: str) -> CallState | None: ...

    async def load_calls(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], CallState]:
        """The stored state of each ``(account, call_id)`` that has one, in one round trip
        (the worker loads the calls of a drain together)."""
        ...

    async def commit_event(
        self,
        item_id: int | None,
        state: CallState | None,
        dispatches: list[NewDispatch],
        records: Sequence[NewCallRecord] = (),
        *,
        number_call: NumberCall | None = None,
    ) -> None:
        """Atomically save ``state``, mark inbox item ``item_id`` done, add ``dispatches``
        and the call's ``records`` (a routing record only when it differs from the last);
        with ``dispatches``, announce them on ``DISPATCH_CHANNEL`` (on a shared store, at
        the same COMMIT). With ``number_call`` (a finished call of the client's number),
        keep it for the missed-call lifecycle, to be decided again if it changed."""
        ...

    # -- the missed-call lifecycle (``connector_core.missed``, ``missed_calls``) ---------------

    async def unsettled_numbers(
        self, noted_before: float, now: float, limit: int
    ) -> list[tuple[str, str]]:
        """(account, number) pairs with a call noted before ``noted_before`` and not decided,
        or a group whose SLA falls due by ``now``."""
        ...

    async def number_calls(self, account: str, number: str) -> list[StoredNumberCall]:
        """Every kept call of a number."""
        ...

    async def settle_number(self, settlement: NumberSettlement) -> None:
        """Atomically mark calls decided, store their links and overdue marks, and add the
        dispatch rows (each ignored if its (integration, call, id) exists); announce them on
        ``DISPATCH_CHANNEL``."""
        ...

    async def missed_summaries(self, since: float) -> dict[str, MissedSummary]:
        """Each account's missed calls since ``since`` (Sipuni's time), the open ones and the
        callbacks, by account."""
        ...

    async def idle_open_calls(self, idle_before: float, limit: int) -> list[CallState]:
        """Unfinished calls whose last event was received before ``idle_before``."""
        ...

    async def due_heads(self, integration: str, now: float, limit: int) -> list[DueHead]:
        """The first pending row of each of ``integration``'s (call) groups, if due; a shared
        store leaves out the groups whose dispatch lease a process holds. The groups of calls
        that hung up come first (``DueHead.completes_call``), then by age."""
        ...

    async def pending_in_group(
        self, integration: str, account: str, call_id: str
    ) -> list[Dispatch]:
        """A group's pending rows, in the order they must run."""
        ...

    async def group_work(self, integration: str, account: str, call_id: str) -> GroupWork:
        """A group's pending rows and its call's state, in one round trip: the state is
        read after the rows, so it holds every event that made them (the dispatcher runs a
        group's rows with it)."""
        ...

    async def complete_dispatch(
        self, dispatch_id: int, records: Sequence[NewCallRecord] = ()
    ) -> None:
        """Mark a row done and keep ``records`` with its call."""
        ...

    async def complete_and_read_group(
        self, row: Dispatch, records: Sequence[NewCallRecord] = ()
    ) -> GroupWork:
        """``complete_dispatch`` of ``row``, then its group's pending rows and its call's state
        as ``group_work`` reads them, in the same round trip: the rows added while the group
        ran run without a read of their own."""
        ...

    async def fail_dispatch(
        self,
        dispatch_id: int,
        error: str,
        retry_at: float | None,
        records: Sequence[NewCallRecord] = (),
    ) -> None:
        """Record a failed attempt; retry at ``retry_at``, or dead-letter it when ``None``;
        keep ``records`` with the row's call."""
        ...

    async def add_call_records(
        self, account: str, call_id: str, records: Sequence[NewCallRecord]
    ) -> None:
        """Keep ``records`` with a call: at most ``callrecords.MAX_RECORDS_PER_CALL`` per
        call, the oldest hook calls dropped first."""
        ...

    async def call_records(self, account: str, call_id: str) -> list[CallRecord]:
        """A call's records, in the order they were stored."""
        ...

    async def call_events(self, account: str, call_id: str) -> list[InboxItem]:
        """The webhooks stored for a call, in arrival order."""
        ...

    async def find_calls(self, query: CallQuery) -> list[CallRow]:
        """Stored calls matching ``query``, newest start first."""
        ...

    def effects(self, integration: str) -> EffectStore: ...

    async def stats(self) -> dict[str, int]:
        """Counts for health and metrics: inbox pending, dispatches pending/dead, calls open."""
        ...

    async def seen_schemes(self, account: str) -> list[SeenScheme]:
        """Every distinct scheme (number, name) in the account's stored calls."""
        ...

    async def rejected(self, limit: int) -> list[Rejected]: ...

    async def dispatches_for(self, account: str, call_id: str) -> list[Dispatch]: ...

    async def info(self) -> StoreInfo:
        """Backend, location (secrets masked) and schema version, for ``connector check``."""
        ...

    # -- set-aside work: `connector dlq`, `connector quarantine`, the console --------------

    async def quarantined_events(self, limit: int = 100) -> list[InboxItem]:
        """Inbox items set aside after failing too often, oldest first."""
        ...

    async def get_event(self, item_id: int) -> InboxItem | None: ...

    async def requeue_event(self, item_id: int) -> bool:
        """Put a quarantined item back with fresh attempts; ``False`` if not quarantined."""
        ...

    async def drop_event(self, item_id: int) -> bool:
        """Give up on a quarantined item for good (it stays visible as ``dropped``)."""
        ...

    async def inbox_items(
        self, *, since: float = 0.0, limit: int = 1000, after_id: int = 0
    ) -> list[InboxItem]:
        """Stored events received at or after ``since`` with an id above ``after_id``, in id
        order (replay)."""
        ...

    async def pending_dispatches(self, limit: int) -> list[Dispatch]: ...

    async def dead_dispatches(self, limit: int = 100) -> list[Dispatch]: ...

    async def get_dispatch(self, dispatch_id: int) -> Dispatch | None: ...

    async def requeue_dispatch(self, dispatch_id: int) -> bool:
        """Give a dead-lettered row a fresh start; ``False`` if it is not dead."""
        ...

    async def drop_dispatch(self, dispatch_id: int) -> bool:
        """Give up on a dead-lettered row for good (it stays visible as ``dropped``)."""
        ...

    async def forget_links(self, subject: str, integration: str | None) -> list[tuple[str, str]]:
        """Drop the effect keys ``subject`` and ``subject:…`` of ``integration`` (or of every
        integration); returns the (integration, key) pairs dropped."""
        ...

    # -- the console's own reads -------------------------------------------------------------

    async def call_links(
        self, integrations: Sequence[str], call_ids: Sequence[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The ``call:<call_id>`` effect records plugins keep, by (integration, call id)."""
        ...

    async def queue_depths(self) -> dict[str, QueueDepth]:
        """Per integration: hook calls waiting, retrying and dead, and the newest error."""
        ...

    async def recent_use(self, account: str, limit: int) -> RecentUse:
        """Extensions and schemes of the latest ``limit`` calls of ``account``."""
        ...

    # -- retention (``connector_core.pruner``) -------------------------------------------------

    async def prune_batch(self, rule: PruneRule, cutoff: float, limit: int) -> int:
        """Delete up to ``limit`` rows of ``rule`` dated before ``cutoff``, oldest first, in one
        short transaction (never pending work, nothing of a call in progress); returns how
        many."""
        ...

    async def count_prunable(self, rule: PruneRule, cutoff: float) -> int:
        """How many rows ``prune_batch`` would delete for ``rule`` and ``cutoff``, in all."""
        ...

    # -- coordination of several processes (``connector_core.cluster``) ----------------------

    async def take_leases(self, names: Sequence[str], owner: str, ttl: float) -> set[str]:
        """Take each lease in ``names`` that is free, expired or already ``owner``'s, for
        ``ttl`` seconds from now; returns the names ``owner`` holds now. One round trip."""
        ...

    async def renew_leases(self, owner: str, ttl: float) -> int:
        """Extend every unexpired lease ``owner`` holds to ``ttl`` seconds from now; returns
        how many (a lease that expired meanwhile may be another's already: not renewed)."""
        ...

    async def release_leases(self, owner: str, names: Sequence[str] | None = None) -> None:
        """Give up ``names`` (every lease of ``owner`` when ``None``)."""
        ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the cluster-wide lock ``name`` for the ``async with`` block (PostgreSQL: a
        session advisory lock, freed by the server if this process dies). Waiting for it is
        a queue wait (``hooktime.queue_wait``)."""
        ...

    async def take_rate_slot(
        self, name: str, per_minute: int, per_second: int, margin: float = 0.0
    ) -> float:
        """Grant one request under the shared windows ``name`` (at most ``per_minute`` in
        any 60 s and ``per_second`` in any 1 s, each window ``margin`` seconds wider) and
        return 0.0; or grant nothing and return the seconds until a slot may be free."""
        ...

    async def publish(self, channel: str, payload: str) -> None:
        """Send ``payload`` to every subscriber of ``channel``, in every process."""
        ...

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` on the event loop for each message on ``channel``
        (from this process too). Subscribe before ``open``."""
        ...

    async def save_auth(self, result: StoredAuth) -> None:
        """Keep an integration's latest authorisation check for every process to show."""
        ...

    async def auth_results(self) -> dict[str, StoredAuth]:
        """The latest stored authorisation check of each integration, by Integration.key."""
        ...
