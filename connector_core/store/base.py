"""The storage interface: inbox, call states, dispatch outbox, effect keys.

SQLite implements it on one machine (``sqlite.py``); a distributed backend (Redis Streams)
can take its place by implementing the same methods. The guarantees every backend gives:

- ``append_event`` returns only once the event is durable: the webhook is acknowledged after.
- ``commit_event`` is atomic: the new call state, the inbox item marked done and the new
  dispatches are stored together or not at all, so a crash never half-processes an event.
- dispatch rows are unique per ``(integration, call, key)``: proposing one twice is a no-op.
  The key is the lifecycle record's id; the record itself (kind and payload) is kept with
  the row, so the dispatcher calls the hook with it instead of working it out from the key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from connector_core import tracker
from connector_core.callrecords import CallRecord, NewCallRecord
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.errors import InvalidRequestError


class StoreUnavailable(RuntimeError):
    """The store as a whole cannot serve (not open, or its backend is failing)."""


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the store as a whole fails, rather than one piece of work.

    SQLite reports a full disk, an I/O error, a locked or read-only database as
    ``OperationalError``: retrying the work later helps, quarantining it would not.
    """
    return isinstance(exc, StoreUnavailable | sqlite3.OperationalError)


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


class EffectStore(Protocol):
    """Idempotency keys of CRM effects for one integration."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        """Record ``value`` under ``key``; ``False`` (and nothing written) if the key exists."""
        ...

    async def drop(self, key: str) -> bool:
        """Forget ``key`` (a link found stale); ``False`` if it was not there."""
        ...


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append_event(self, account: str, params: dict[str, Any], received_at: float) -> int:
        """Durably store one accepted webhook; returns its inbox id."""
        ...

    async def record_rejected(
        self, account: str | None, params: dict[str, Any], reason: str, received_at: float
    ) -> int:
        """Keep a refused webhook for inspection (bounded: the oldest are pruned)."""
        ...

    async def pending_events(self, limit: int) -> list[InboxItem]: ...

    async def fail_event(self, item_id: int, error: str, *, quarantine: bool) -> None:
        """Count a failed attempt at inbox item ``item_id``; set it aside if ``quarantine``."""
        ...

    async def writable(self) -> bool:
        """Whether a real write (committed, durable) succeeds now."""
        ...

    async def load_call(self, account: str, call_id: str) -> CallState | None: ...

    async def commit_event(
        self,
        item_id: int | None,
        state: CallState | None,
        dispatches: list[NewDispatch],
        records: Sequence[NewCallRecord] = (),
    ) -> None:
        """Atomically save ``state``, mark inbox item ``item_id`` done, add ``dispatches``
        and the call's ``records`` (a routing record only when it differs from the last)."""
        ...

    async def idle_open_calls(self, idle_before: float, limit: int) -> list[CallState]:
        """Unfinished calls whose last event was received before ``idle_before``."""
        ...

    async def due_heads(self, integration: str, now: float, limit: int) -> list[Dispatch]:
        """The first pending row of each of ``integration``'s (call) groups, if due."""
        ...

    async def pending_in_group(
        self, integration: str, account: str, call_id: str
    ) -> list[Dispatch]:
        """A group's pending rows, in the order they must run."""
        ...

    async def complete_dispatch(
        self, dispatch_id: int, records: Sequence[NewCallRecord] = ()
    ) -> None:
        """Mark a row done and keep ``records`` with its call."""
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
