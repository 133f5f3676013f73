"""One function per console page, each returning a typed view: what the page shows.

The pages render these objects and nothing else, so where the facts come from can change
without touching a template. Today they come from what the store keeps (``reads``); the
one-call page (:func:`call_view`) is the seam for the per-call record of routing decisions,
hook attempts and CRM requests: a trace read model can fill :class:`CallView` instead.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from connector_core.callstate import CallState, Direction, Outcome
from connector_core.clock import Clock
from connector_core.config import Config
from connector_core.console import reads
from connector_core.console.filters import PAGE_SIZE, CallFilter, HookStatus
from connector_core.console.links import link_of
from connector_core.dispatcher import PACING_HORIZON_SECONDS, Dispatcher
from connector_core.events import EventType
from connector_core.hooks import PluginHost
from connector_core.httplog import Redactor
from connector_core.integrations import AuthResult, Integration
from connector_core.pacing import Budget, budget_of
from connector_core.phones import PhoneFormat, format_number
from connector_core.store.base import Dispatch, InboxItem, Rejected, SeenScheme
from connector_core.store.sqlite import SQLiteStore

LIST_LIMIT = 100  # dead letters, quarantined and rejected webhooks shown at most


@dataclass(frozen=True)
class Circuit:
    """An integration's circuit breaker as the dispatcher holds it now."""

    open: bool
    failures: int
    open_until: datetime | None


@dataclass(frozen=True)
class Sources:
    """Where the pages read from: the store, the config, and the running service's parts."""

    store: SQLiteStore
    config: Config
    clock: Clock
    host: PluginHost
    integrations: dict[str, Integration]
    dispatcher: Dispatcher | None = None  # None: no circuit or running calls to show

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.console.timezone)

    def moment(self, seconds: float | None) -> datetime | None:
        """A Unix time in the console's time zone."""
        return None if seconds is None else datetime.fromtimestamp(seconds, self.zone)

    def phone_format(self, account: str) -> PhoneFormat:
        """``[console] phone_format``, else the account's first integration that has one."""
        if self.config.console.phone_format is not None:
            return self.config.console.phone_format
        config = self.config.accounts.get(account)
        for integration in config.integrations.values() if config else ():
            chosen = getattr(integration.settings, "phone_format", None)
            if isinstance(chosen, PhoneFormat):
                return chosen
        return PhoneFormat.PLUS

    def regions(self) -> dict[str, str]:
        return {n: a.default_region for n, a in self.config.accounts.items()}


# --- the calls page -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HookState:
    """One integration's state for one call: its hook calls summed up, and the CRM link."""

    integration: str  # <account>/<name>
    name: str
    status: HookStatus
    link: str | None = None


@dataclass(frozen=True)
class CallRow:
    """One line of the calls page."""

    account: str
    call_id: str
    started_at: datetime | None
    direction: Direction
    number: str | None  # in the operator's format; the raw text when it is no number
    extensions: list[str]  # rung, in order
    answered_by: list[str]
    employee: str | None  # who dialled (outbound, internal)
    outcome: Outcome
    duration_seconds: int | None
    finished_by: str | None
    hooks: list[HookState]

    @property
    def status(self) -> HookStatus | None:
        return HookStatus.worst([h.status for h in self.hooks])


@dataclass(frozen=True)
class CallsView:
    filter: CallFilter
    rows: list[CallRow]
    accounts: list[str]
    next_before: int | None  # where the next page starts; None on the last one


async def calls_view(sources: Sources, f: CallFilter) -> CallsView:
    """The calls page: the newest calls passing ``f``, a page at a time."""
    seconds = f.period.seconds
    since = None if seconds is None else sources.clock.now() - seconds

    def read(db: Any) -> tuple[list[reads.StoredCall], dict[reads.CallKey, list[Any]], Any]:
        stored = reads.recent_calls(db, f, received_since=since, limit=PAGE_SIZE + 1)
        shown = stored[:PAGE_SIZE]
        keys = [(c.account, c.call_id) for c in shown]
        hooks = reads.hook_summaries(db, keys)
        integrations = {h.integration for summaries in hooks.values() for h in summaries}
        links = reads.call_links(db, sorted(integrations), [c.call_id for c in shown])
        return stored, hooks, links

    stored, hooks, links = await sources.store.read(read)
    rows = [
        _row(sources, CallState.model_validate_json(c.state), hooks[(c.account, c.call_id)], links)
        for c in stored[:PAGE_SIZE]
    ]
    more = len(stored) > PAGE_SIZE
    return CallsView(
        filter=f,
        rows=rows,
        accounts=sorted(sources.config.accounts),
        next_before=stored[PAGE_SIZE - 1].position if more else None,
    )


def _row(
    sources: Sources,
    call: CallState,
    hooks: list[reads.HookSummary],
    links: Mapping[tuple[str, str], dict[str, Any]],
) -> CallRow:
    states = []
    for summary in hooks:
        integration = sources.integrations.get(summary.integration)
        record = links.get((summary.integration, call.call_id))
        states.append(
            HookState(
                integration=summary.integration,
                name=summary.integration.split("/", 1)[-1],
                status=summary.status,
                link=link_of(integration.runtime, record) if integration else None,
            )
        )
    return CallRow(
        account=call.account,
        call_id=call.call_id,
        started_at=sources.moment(call.started_at),
        direction=call.direction,
        number=_number(sources, call),
        extensions=list(dict.fromkeys(leg.extension for leg in call.legs)),
        answered_by=list(dict.fromkeys(a.extension for a in call.answers)),
        employee=call.employee,
        outcome=call.outcome,
        duration_seconds=call.duration_seconds,
        finished_by=call.finished_by,
        hooks=states,
    )


def _number(sources: Sources, call: CallState) -> str | None:
    if call.client_number:
        return format_number(call.client_number, sources.phone_format(call.account))
    return call.client_number_raw


# --- one call -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    """One stored Sipuni webhook of the call, in arrival order."""

    inbox_id: int
    received_at: datetime | None
    event: int | None
    kind: str  # i18n key: event.ring, event.answer…
    sent_at: datetime | None  # the event's own timestamp
    src: str | None
    dst: str | None
    scheme: str | None
    status: str  # inbox status: pending, done, quarantined, dropped
    attempts: int
    last_error: str | None
    params: dict[str, Any]


@dataclass(frozen=True)
class HookCall:
    """One dispatch row: a lifecycle hook call for one integration."""

    id: int
    key: str
    hook: str | None
    row_status: str  # pending, done, dead, dropped
    status: HookStatus
    attempts: int
    created_at: datetime | None
    next_attempt_at: datetime | None  # pending rows
    last_error: str | None


@dataclass(frozen=True)
class Routing:
    """Whether an integration sees the call, as its routing settings decide now."""

    selected: bool
    reason: str  # i18n key: routing.all, routing.schemes, routing.not_selected…
    schemes: list[str] = field(default_factory=list)  # the configured selectors, if any


@dataclass(frozen=True)
class IntegrationTrace:
    """What one integration of the account did with the call."""

    integration: str
    name: str
    plugin: str
    configured: bool  # False: rows of an integration no longer in the config
    routing: Routing | None
    status: HookStatus | None
    link: str | None
    hook_calls: list[HookCall]


@dataclass(frozen=True)
class CallView:
    """The one-call page: the call's events, its derived state, and each integration's part."""

    row: CallRow
    state: CallState
    owner: str | None
    events: list[EventRow]
    integrations: list[IntegrationTrace]


_EVENT_KINDS = {
    EventType.RING: "event.ring",
    EventType.HANGUP: "event.hangup",
    EventType.ANSWER: "event.answer",
    EventType.TRANSFER_HANGUP: "event.transfer_hangup",
}


async def call_view(sources: Sources, account: str, call_id: str) -> CallView | None:
    """The one-call page for ``(account, call_id)``; ``None`` when the store has no such call.

    The seam for the per-call record: a trace read model returns this same object.
    """
    call = await sources.store.load_call(account, call_id)
    if call is None:
        return None
    items = await sources.store.call_events(account, call_id)
    dispatches = await sources.store.dispatches_for(account, call_id)
    by_integration: dict[str, list[Dispatch]] = {}
    for row in dispatches:
        by_integration.setdefault(row.integration, []).append(row)
    configured = sources.config.accounts.get(account)
    names = [f"{account}/{name}" for name in (configured.integrations if configured else {})]
    keys = list(dict.fromkeys([*names, *by_integration]))
    links = await sources.store.read(lambda db: reads.call_links(db, keys, [call_id]))
    traces = [_trace(sources, call, key, by_integration.get(key, []), links) for key in keys]
    summaries = [
        reads.HookSummary(t.integration, t.status, len(t.hook_calls))
        for t in traces
        if t.status is not None
    ]
    return CallView(
        row=_row(sources, call, summaries, links),
        state=call,
        owner=call.owner(sources.config.tracker.answered_owner),
        events=[_event(sources, item) for item in items],
        integrations=traces,
    )


def _event(sources: Sources, item: InboxItem) -> EventRow:
    params = item.params
    event = _int(params.get("event"))
    kind = _EVENT_KINDS.get(EventType(event), "event.other") if event in set(EventType) else ""
    scheme = " ".join(str(params[k]) for k in ("treeNumber", "treeName") if params.get(k))
    return EventRow(
        inbox_id=item.id,
        received_at=sources.moment(item.received_at),
        event=event,
        kind=kind or "event.other",
        sent_at=sources.moment(_int(params.get("timestamp"))),
        src=_text(params.get("src_num")),
        dst=_text(params.get("dst_num")),
        scheme=scheme or None,
        status=item.status,
        attempts=item.attempts,
        last_error=item.last_error,
        params=params,
    )


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _trace(
    sources: Sources,
    call: CallState,
    key: str,
    rows: list[Dispatch],
    links: Mapping[tuple[str, str], dict[str, Any]],
) -> IntegrationTrace:
    integration = sources.integrations.get(key)
    account, _, name = key.partition("/")
    configured = sources.config.accounts.get(account)
    item = configured.integrations.get(name) if configured else None
    calls = [
        HookCall(
            id=row.id,
            key=row.key,
            hook=row.kind.hook if row.kind else None,
            row_status=row.status,
            status=HookStatus.of_row(row.status, row.attempts),
            attempts=row.attempts,
            created_at=sources.moment(row.created_at),
            next_attempt_at=sources.moment(row.not_before) if row.status == "pending" else None,
            last_error=row.last_error,
        )
        for row in rows
    ]
    return IntegrationTrace(
        integration=key,
        name=name,
        plugin=item.plugin if item else "",
        configured=item is not None and item.enabled,
        routing=_routing(sources.host, integration, call) if integration else None,
        status=HookStatus.worst([c.status for c in calls]),
        link=link_of(integration.runtime, links.get((key, call.call_id))) if integration else None,
        hook_calls=calls,
    )


def _routing(host: PluginHost, integration: Integration, call: CallState) -> Routing:
    """The routing decision for the call as the settings and routing hooks make it now."""
    settings = integration.routing
    schemes = [] if settings.selects_all() else list(settings.schemes)
    if not host.filter_call(integration, call):
        return Routing(False, "routing.not_selected", schemes)
    if settings.transfer_schemes:
        if host.transfer_scheme(integration, call) is None:
            return Routing(False, "routing.no_transfer_scheme", list(settings.transfer_schemes))
        return Routing(True, "routing.transfer_scheme", list(settings.transfer_schemes))
    return Routing(True, "routing.all" if settings.selects_all() else "routing.schemes", schemes)


# --- integrations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegrationHealth:
    """One integration's state: authorisation, circuit, pace, queues, last failure."""

    integration: str
    plugin: str
    auth: AuthResult
    circuit: Circuit | None  # None: no dispatcher runs
    budget: Budget | None  # None: the runtime does not report one (pacing.Paced)
    running: int | None  # calls whose hooks run now
    depth: reads.QueueDepth


@dataclass(frozen=True)
class IntegrationsView:
    integrations: list[IntegrationHealth]
    dead_letters: list[Dispatch]
    quarantined: list[InboxItem]
    rejected: list[Rejected]
    stats: dict[str, int]


async def integrations_view(sources: Sources) -> IntegrationsView:
    """The integrations page: each integration's health, and the work set aside."""
    depths = await sources.store.read(reads.queue_depths)
    health = []
    for key, integration in sources.integrations.items():
        circuit = running = None
        if sources.dispatcher is not None:
            breaker = sources.dispatcher.breaker(key)
            circuit = Circuit(
                open=breaker.is_open,
                failures=breaker.failures,
                open_until=sources.moment(breaker.open_until) if breaker.is_open else None,
            )
            running = sources.dispatcher.running(key)
        health.append(
            IntegrationHealth(
                integration=key,
                plugin=integration.type.name,
                auth=integration.auth,
                circuit=circuit,
                budget=budget_of(integration.runtime, PACING_HORIZON_SECONDS),
                running=running,
                depth=depths.get(key, reads.QueueDepth()),
            )
        )
    return IntegrationsView(
        integrations=health,
        dead_letters=await sources.store.dead_dispatches(limit=LIST_LIMIT),
        quarantined=await sources.store.quarantined_events(limit=LIST_LIMIT),
        rejected=await sources.store.rejected(limit=LIST_LIMIT),
        stats=await sources.store.stats(),
    )


# --- setup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtensionRow:
    """An extension the calls went to or came from, and which integrations map it."""

    extension: str
    calls: int
    mapped_in: list[str]  # integration names whose `users` name it
    agent_page: bool  # has an agent page token (accounts.<n>.agents)
    unmapped: bool  # some integration maps extensions, and none maps this one


@dataclass(frozen=True)
class AccountSetup:
    number: str
    calls_looked_at: int  # the latest calls the schemes and extensions come from
    webhook_url: str
    schemes: list[SeenScheme]
    schemes_line: str  # `schemes = [...]`, ready to paste
    extensions: list[ExtensionRow]
    mapping_integrations: list[str]  # the integrations that map extensions to CRM users


@dataclass(frozen=True)
class SetupView:
    public_url: str  # empty: the webhook address is the bound one
    accounts: list[AccountSetup]
    config_text: str  # the effective configuration, secrets masked
    warnings: list[str]


def mapped_extensions(settings: BaseModel) -> set[str] | None:
    """The extensions an integration's settings map to CRM users, or ``None`` if it has no map.

    The convention: a ``users`` setting, either a list of items with an ``extension``
    (Usedesk: ``users = [{ extension = "101", agent = 2 }]``) or a table keyed by extension
    (the amoCRM stub: ``users = { "201" = 3001 }``).
    """
    users = getattr(settings, "users", None)
    if isinstance(users, Mapping):
        return {str(k) for k in users}
    if isinstance(users, list):
        return {str(e) for u in users if (e := _extension_of(u)) is not None}
    return None


def _extension_of(user: object) -> object:
    return user.get("extension") if isinstance(user, Mapping) else getattr(user, "extension", None)


def webhook_base(config: Config) -> str:
    """Where Sipuni reaches the service: ``server.public_url``, else the bound address."""
    if config.server.public_url:
        return config.server.public_url
    host = config.server.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.server.port}"


async def setup_view(sources: Sources) -> SetupView:
    """The setup page: what to paste into Sipuni and into the config."""
    config = sources.config
    base = webhook_base(config)
    accounts = []
    for number, account in config.accounts.items():
        used = await sources.store.read(functools.partial(reads.recent_use, account=number))
        seen = used.extensions
        schemes = [SeenScheme(id_, name) for id_, name in used.schemes]
        maps = {
            name: found
            for name, item in account.integrations.items()
            if item.enabled and (found := mapped_extensions(item.settings)) is not None
        }
        every = sorted(set(seen) | {e for m in maps.values() for e in m}, key=_extension_order)
        rows = [
            ExtensionRow(
                extension=ext,
                calls=seen.get(ext, 0),
                mapped_in=[name for name, m in maps.items() if ext in m],
                agent_page=ext in account.agents,
                unmapped=bool(maps) and not any(ext in m for m in maps.values()),
            )
            for ext in every
        ]
        selectors = [s.id or s.name for s in schemes if s.id or s.name]
        accounts.append(
            AccountSetup(
                number=number,
                calls_looked_at=used.calls,
                webhook_url=f"{base}/sipuni/{account.token.get_secret_value()}",
                schemes=schemes,
                schemes_line="schemes = "
                + json.dumps(list(dict.fromkeys(selectors)), ensure_ascii=False),
                extensions=rows,
                mapping_integrations=list(maps),
            )
        )
    return SetupView(
        public_url=config.server.public_url,
        accounts=accounts,
        config_text=effective_config(config),
        warnings=list(config.warnings),
    )


def _extension_order(extension: str) -> tuple[int, str]:
    return (int(extension) if extension.isdigit() else 1 << 62, extension)


def effective_config(config: Config) -> str:
    """The validated config as JSON, every secret masked (``SecretStr`` and, to be sure, every
    secret value wherever else it appears)."""
    data = config.model_dump(mode="json", by_alias=True, exclude={"warnings"})
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return Redactor(config.secrets())(text)
