"""What the connector records about each call, so ``connector trace`` and the console explain it.

Per call and integration the store keeps typed records (the one place they become JSON is
:func:`encode` / :func:`decode` here):

- ``Routing``: whether the integration sees the call and why (the scheme filter, the
  transfer-scheme gate), kept each time the decision changes;
- ``ClickToCall``: a click-to-call started from the call, and Sipuni's answer (kept under
  ``click_to_call.RECORDS``, not an integration's key);
- ``HookCall``: one attempt at a lifecycle hook (which record, attempt number, start,
  duration, outcome, error), with the CRM requests the plugin made during it
  (``CrmRequest``: method, path, HTTP status, outcome, latency) and what it decided and why
  (``Decision``, reported by the plugin through ``integration.report``).

A hook call collects its requests and decisions in a :func:`recording` that the dispatcher
opens around the hook; plugins reach it without passing anything around, through
``integration.on_crm_request`` and ``integration.report`` (a context variable, as the log's
account and call id). Outside a hook call nothing is recorded.

Bounded: a call keeps at most ``MAX_RECORDS_PER_CALL`` records (the oldest hook calls are
dropped first; routing records stay), and a hook call at most ``MAX_ENTRIES_PER_HOOK_CALL``
requests and as many decisions (the rest are counted in ``dropped``). Age-based pruning is
left to the retention settings.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import Field, TypeAdapter

log = logging.getLogger(__name__)
# Records kept per call, all integrations together: a call that is retried for its whole
# 72-hour horizon keeps its routing and its latest attempts.
MAX_RECORDS_PER_CALL = 200
# Requests, and decisions, kept per hook call: a plugin caught in a loop cannot fill the store.
MAX_ENTRIES_PER_HOOK_CALL = 50


@dataclass(frozen=True)
class Decision:
    """What a plugin decided about a call, and why: ``integration.report(Decision(...))``.

    ``what`` is the decision (``owner 514``, ``client 2001 found``, ``ticket 5001 created``),
    ``why`` its reason (``missed call, on-duty agent``), ``link`` the CRM object's address
    when there is one (the ticket's URL), ``text`` what was written to the CRM (the comment).
    """

    what: str
    why: str = ""
    link: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class CrmRequest:
    """One request a plugin made to its CRM during a hook call."""

    method: str  # as the plugin names it: "create/ticket", "POST /api/v4/leads"
    outcome: str  # ok, timeout, connection, rate_limited, server_error, auth, invalid…
    seconds: float
    at: float  # when it started (seconds since the epoch)
    status: int | None = None  # the HTTP status, when the plugin reports it
    path: str | None = None


class HookOutcome(StrEnum):
    """How one hook call ended, as the dispatcher took it."""

    DONE = "done"
    RETRY = "retry"  # failed; tried again at ``retry_at``
    DEAD = "dead"  # failed for good: in the dead-letter queue


@dataclass(frozen=True, kw_only=True)
class HookCall:
    """One attempt at a lifecycle hook, with what the plugin did during it."""

    kind: Literal["hook"] = "hook"
    hook: str  # connector_call_finished
    record: str  # the lifecycle record's id: finished, transferred:102
    attempt: int
    started_at: float
    seconds: float
    outcome: HookOutcome
    error: str | None = None
    retry_at: float | None = None
    requests: tuple[CrmRequest, ...] = ()
    decisions: tuple[Decision, ...] = ()
    dropped: int = 0  # requests and decisions past MAX_ENTRIES_PER_HOOK_CALL


@dataclass(frozen=True, kw_only=True)
class Routing:
    """Whether an integration sees a call, and why.

    ``scheme_filter`` says why the call passed or failed ``schemes`` (or which plugin's
    ``connector_filter_call`` decided); ``transfer_scheme`` why transfer-scheme processing
    opened the call or not, ``None`` for an integration without ``transfer_schemes``.
    """

    kind: Literal["routing"] = "routing"
    sees: bool
    scheme_filter: str
    transfer_scheme: str | None = None

    @property
    def reason(self) -> str:
        """Both reasons, as one line."""
        return "; ".join(r for r in (self.scheme_filter, self.transfer_scheme) if r)


@dataclass(frozen=True, kw_only=True)
class ClickToCall:
    """A click-to-call started from this call («Перезвонить»): who asked, which extension
    Sipuni was to ring first and which number then, and what Sipuni answered.

    ``outcome`` is ``started`` (Sipuni took the request: ``callback_id`` names it; the call
    itself arrives later as webhooks) or ``failed`` (``error`` says why, as Sipuni or the
    connection did). Refusals before Sipuni was asked (a token, the rate limit) are not kept.
    """

    kind: Literal["click_to_call"] = "click_to_call"
    by: str  # "agent 101", "console"
    extension: str
    phone: str  # E.164
    outcome: Literal["started", "failed"]
    callback_id: str | None = None
    error: str | None = None


Entry = Routing | HookCall | ClickToCall
_ENTRY: TypeAdapter[Entry] = TypeAdapter(Annotated[Entry, Field(discriminator="kind")])


@dataclass(frozen=True)
class NewCallRecord:
    """A record to store for one integration's part in a call."""

    integration: str  # Integration.key
    entry: Entry
    at: float


@dataclass(frozen=True)
class CallRecord:
    """A stored record, in the order the store received it (``id``)."""

    id: int
    integration: str
    at: float
    entry: Entry


def encode(entry: Entry) -> str:
    """The JSON a record is stored as (its ``kind`` says which type it is)."""
    if isinstance(entry, Routing):
        return _encode_routing(entry)
    return _encode(entry)


def _encode(entry: Entry) -> str:
    return _ENTRY.dump_json(entry).decode()


# The worker encodes each integration's routing decision on every event of every call (the
# store keeps it only when it changed), and the decisions are a few texts over and over.
_encode_routing = functools.lru_cache(maxsize=256)(_encode)


def decode(text: str) -> Entry:
    """A stored record's entry, typed again."""
    return _ENTRY.validate_json(text)


E = TypeVar("E", Routing, HookCall, ClickToCall)


def redacted(entry: E, redact: Callable[[str], str]) -> E:
    """``entry`` with every text in it passed through ``redact`` (configured secrets masked)."""
    texts: list[str] = []
    _texts(entry, texts)
    # Most records hold no secret: one pass over all their texts at once (a line apart, so
    # a match inside any one text is a match in the whole) says so; then each text is done.
    joined = "\n".join(texts)
    if redact(joined) == joined:
        return entry
    result = _masked(entry, redact)
    assert isinstance(result, type(entry))
    return result


def _texts(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, tuple):
        for item in value:
            _texts(item, into)
    elif (names := _field_names(type(value))) is not None:
        for name in names:
            part = getattr(value, name)
            # Most fields are texts or plain values: taken here rather than by a call each
            # (a hook call's record has a few dozen, and this runs once per hook call).
            if isinstance(part, str):
                into.append(part)
            elif part is not None and not isinstance(part, (int, float)):
                _texts(part, into)


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type (``None`` for any other type), looked up once."""
    if kind not in _FIELD_NAMES:
        _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind)) if is_dataclass(kind) else None
    return _FIELD_NAMES[kind]


def _masked(value: Any, redact: Callable[[str], str]) -> Any:
    # Walks the frozen dataclasses themselves (no round trip through JSON-ready dicts, once
    # per hook call); a part with nothing masked is kept as it is.
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        items = tuple(_masked(v, redact) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in fields(value):
            old = getattr(value, f.name)
            new = _masked(old, redact)
            if new is not old and new != old:
                changes[f.name] = new
        return replace(value, **changes) if changes else value
    return value


# -- collecting a hook call's requests and decisions --------------------------------------------


@dataclass
class Recording:
    """What one hook call's plugin reported while it ran."""

    integration: str
    now: Callable[[], float]
    requests: list[CrmRequest] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    dropped: int = 0

    def _keep(self, entries: list[Any], entry: Any) -> None:
        if len(entries) < MAX_ENTRIES_PER_HOOK_CALL:
            entries.append(entry)
        else:
            self.dropped += 1


_current: ContextVar[Recording | None] = ContextVar("connector_call_recording", default=None)


@contextmanager
def recording(integration: str, now: Callable[[], float] = time.time) -> Iterator[Recording]:
    """Collect what ``integration``'s plugin reports inside (its requests and decisions).

    Tasks the hook starts inherit the recording; what they report after the hook call ended
    is not recorded.
    """
    current = Recording(integration, now)
    token = _current.set(current)
    try:
        yield current
    finally:
        _current.reset(token)


def _recording_for(integration: str | None) -> Recording | None:
    current = _current.get()
    if current is None or (integration is not None and current.integration != integration):
        return None
    return current


def report_decision(integration: str, decision: Decision) -> None:
    """Record ``decision`` with the hook call of ``integration`` that is running, if any."""
    current = _recording_for(integration)
    if current is None:
        log.debug("%s decided outside a hook call (not recorded): %s", integration, decision)
        return
    current._keep(current.decisions, decision)


class CrmRequestObserver(Protocol):
    """``integration.on_crm_request``: a CRM client reports each request it made.

    ``method``, ``seconds`` and ``outcome`` feed ``/metrics``; inside a hook call the request
    is also recorded with the call, with ``status`` (the HTTP status) and ``path`` when given.
    """

    def __call__(
        self,
        method: str,
        seconds: float,
        outcome: str,
        /,
        *,
        status: int | None = None,
        path: str | None = None,
    ) -> None: ...


def _no_metrics(method: str, seconds: float, outcome: str) -> None:
    return None


def crm_request_observer(
    metrics: Callable[[str, float, str], None] = _no_metrics,
) -> CrmRequestObserver:
    """An ``on_crm_request`` that records the request with the running hook call, then
    hands ``(method, seconds, outcome)`` to ``metrics``."""

    def observe(
        method: str,
        seconds: float,
        outcome: str,
        /,
        *,
        status: int | None = None,
        path: str | None = None,
    ) -> None:
        current = _recording_for(None)
        if current is not None:
            request = CrmRequest(
                method=method,
                outcome=outcome,
                seconds=seconds,
                at=current.now() - seconds,
                status=status,
                path=path,
            )
            current._keep(current.requests, request)
        metrics(method, seconds, outcome)

    return observe
