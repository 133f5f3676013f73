"""One function per console page, each returning a typed view: what the page shows.

The pages render these objects and nothing else. The calls page and the one-call page read
through the calls' read model (``connector_core.calls_view``), the one ``connector calls``
and ``connector trace`` print: the calls page lists ``store.find_calls``, the one-call page
renders ``calls_view.load_trace`` (the routing decisions, hook calls, CRM requests and
decisions recorded when they happened). The integrations and setup pages read what only they
show through the store's console reads (``call_links``, ``queue_depths``, ``recent_use``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from connector_core import calls_view as read_model
from connector_core import click_to_call, public_url
from connector_core.callrecords import HookCall
from connector_core.calls_view import (
    CallSummary,
    CallTrace,
    HookRow,
    IntegrationTrace,
    RawEvent,
    RoutingStep,
    ViewError,
)
from connector_core.callstate import CallState
from connector_core.clock import Clock
from connector_core.config import Config
from connector_core.console.filters import (
    PAGE_SIZE,
    CallFilter,
    Cursor,
    row_status,
    store_query,
    worst,
)
from connector_core.console.links import Linking, link_of, web_link
from connector_core.dispatcher import PACING_HORIZON_SECONDS, Dispatcher
from connector_core.hooks import PluginHost
from connector_core.httplog import Redactor
from connector_core.integrations import AuthResult, Integration
from connector_core.pacing import Budget, budget_of
from connector_core.phones import PhoneFormat, format_number
from connector_core.settings_check import (
    SipuniSchemes,
    UnknownScheme,
    read_sipuni_schemes,
    schemes_sipuni_lacks,
)
from connector_core.store.base import (
    DeliveryStatus,
    Dispatch,
    InboxItem,
    MissedSummary,
    QueueDepth,
    Rejected,
    SeenScheme,
    Store,
)

MISSED_PERIOD_SECONDS = 24 * 3600  # the missed-calls block counts the last day's calls
LIST_LIMIT = 100  # dead letters, quarantined and rejected webhooks shown at most
# The setup page looks at this many of each account's latest calls: what rings now matters,
# and reading every call ever stored would make the page slower as the store grows.
RECENT_CALLS = 2000


@dataclass(frozen=True)
class Circuit:
    """An integration's circuit breaker as the dispatcher holds it now."""

    open: bool
    failures: int
    open_until: datetime | None


@dataclass(frozen=True)
class Sources:
    """Where the pages read from: the store, the config, and the running service's parts."""

    store: Store
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
    """One integration's state for one call, and the CRM object it made."""

    integration: str  # <account>/<name>
    name: str
    status: DeliveryStatus
    link: str | None = None


@dataclass(frozen=True)
class CallRow:
    """One line of the calls page: the read model's summary, as the operator reads it."""

    summary: CallSummary
    started_at: datetime | None  # in the console's time zone
    number: str | None  # in the operator's format; the raw text when it is no number
    answered_by: list[str]  # every extension that answered, in order
    finished_by: str | None
    hooks: list[HookState]

    @property
    def account(self) -> str:
        return self.summary.account

    @property
    def call_id(self) -> str:
        return self.summary.call_id

    @property
    def status(self) -> DeliveryStatus | None:
        return worst([h.status for h in self.hooks])


@dataclass(frozen=True)
class CallsView:
    filter: CallFilter
    rows: list[CallRow]
    accounts: list[str]
    integrations: list[str]  # the configured integrations' keys, for the filter
    next_page: Cursor | None  # where the next page starts; None on the last one


async def calls_view(sources: Sources, f: CallFilter) -> CallsView:
    """The calls page: the newest calls passing ``f``, a page at a time (``store.find_calls``,
    as ``connector calls`` lists them)."""
    query = store_query(f, sources.regions(), now=sources.clock.now(), limit=PAGE_SIZE + 1)
    found = await sources.store.find_calls(query)
    shown = found[:PAGE_SIZE]
    links = await _link_records(
        sources,
        [(key, c.state.call_id) for c in shown for key in c.statuses if key not in c.links],
    )
    rows = [_row(sources, read_model.summary(stored), stored.state, links) for stored in shown]
    last = rows[-1].summary if rows else None
    return CallsView(
        filter=f,
        rows=rows,
        accounts=sorted(sources.config.accounts),
        integrations=list(sources.integrations),
        next_page=Cursor(last.started_at, last.call_id)
        if last is not None and len(found) > PAGE_SIZE
        else None,
    )


async def _link_records(
    sources: Sources, unlinked: list[tuple[str, str]]
) -> Mapping[tuple[str, str], dict[str, Any]]:
    """For (integration, call) pairs whose plugin reported no link with its decisions (a call
    from before plugins reported them, or a plugin that does not), the ``call:<call_id>``
    records from which its runtime may name one (``links.link_of``)."""
    wanted = [
        (key, call_id)
        for key, call_id in unlinked
        if (integration := sources.integrations.get(key)) is not None
        and isinstance(integration.runtime, Linking)
    ]
    if not wanted:
        return {}
    keys = list(dict.fromkeys(key for key, _ in wanted))
    call_ids = list(dict.fromkeys(call_id for _, call_id in wanted))
    return await sources.store.call_links(keys, call_ids)


def _link(
    sources: Sources,
    key: str,
    call_id: str,
    reported: str | None,
    records: Mapping[tuple[str, str], dict[str, Any]],
) -> str | None:
    """The CRM link the plugin reported with its decisions, else the one its runtime names."""
    if reported is not None:
        return web_link(reported)
    integration = sources.integrations.get(key)
    return link_of(integration.runtime, records.get((key, call_id))) if integration else None


def _row(
    sources: Sources,
    summary: CallSummary,
    call: CallState,
    links: Mapping[tuple[str, str], dict[str, Any]],
) -> CallRow:
    return CallRow(
        summary=summary,
        started_at=sources.moment(summary.started_at),
        number=_number(sources, call),
        answered_by=list(dict.fromkeys(a.extension for a in call.answers)),
        finished_by=call.finished_by,
        hooks=[
            HookState(
                integration=state.integration,
                name=state.integration.split("/", 1)[-1],
                status=state.status,
                link=_link(sources, state.integration, summary.call_id, state.link, links),
            )
            for state in summary.integrations
        ],
    )


def _number(sources: Sources, call: CallState) -> str | None:
    if call.client_number:
        return format_number(call.client_number, sources.phone_format(call.account))
    return call.client_number_raw


# --- one call -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    """One stored Sipuni webhook of the call, in arrival order, with what the page shows of
    its fields."""

    raw: RawEvent
    received_at: datetime | None
    sent_at: datetime | None  # the event's own timestamp
    src: str | None
    dst: str | None
    scheme: str | None


@dataclass(frozen=True)
class HookGroup:
    """One hook call the connector owes an integration (a dispatch row: its status and the
    buttons), with every attempt at it the call's record kept."""

    record: str  # started, answered, transferred:102, finished
    hook: str
    row: HookRow | None  # None: the row is gone, its attempts are still recorded
    status: DeliveryStatus | None
    attempts: list[HookCall]


@dataclass(frozen=True)
class IntegrationView:
    """What one integration did with the call, and why, as recorded when it happened."""

    integration: str
    name: str
    plugin: str
    configured: bool  # False: the integration is no longer in the config (or is disabled)
    status: DeliveryStatus | None  # None: no hook call was due
    link: str | None
    routing: list[RoutingStep]  # the decision, each time it changed; [] if none was recorded
    hooks: list[HookGroup]


@dataclass(frozen=True)
class CallView:
    """The one-call page: the read model's trace (``calls_view.load_trace``, as ``connector
    trace`` prints it) and what the page adds: times in the console's zone, the number in
    the operator's format, the owner by the tracker's rule, the configuration's names."""

    trace: CallTrace
    row: CallRow
    owner: str | None
    events: list[EventRow]
    integrations: list[IntegrationView]
    # «Перезвонить»: the extensions to ring first, the likeliest first; () when it is off
    # (no Sipuni key) or the number is hidden.
    call_back: tuple[str, ...] = ()

    @property
    def state(self) -> CallState:
        return self.trace.state


async def call_view(sources: Sources, account: str, call_id: str) -> CallView | None:
    """The one-call page for ``(account, call_id)``; ``None`` when the store has no such call."""
    try:
        trace = await read_model.load_trace(sources.store, call_id, account)
    except ViewError:
        return None
    links = await _link_records(
        sources, [(t.integration, call_id) for t in trace.integrations if t.link is None]
    )
    configured = sources.config.accounts.get(account)
    names = [f"{account}/{name}" for name in (configured.integrations if configured else {})]
    traced = {t.integration: t for t in trace.integrations}
    # The account's integrations in the config's order, then any it no longer has.
    keys = list(dict.fromkeys([*names, *traced]))
    return CallView(
        trace=trace,
        row=_row(sources, trace.summary, trace.state, links),
        owner=trace.state.owner(sources.config.tracker.answered_owner),
        events=[_event(sources, raw) for raw in trace.events],
        integrations=[_integration(sources, key, traced.get(key), call_id, links) for key in keys],
        call_back=_call_back(sources, trace.state),
    )


def _call_back(sources: Sources, state: CallState) -> tuple[str, ...]:
    configured = sources.config.accounts.get(state.account)
    if click_to_call.unavailable(sources.config, state.account) or not state.client_number:
        return ()
    agents = configured.agents if configured else {}
    owner_rule = sources.config.tracker.answered_owner
    return tuple(click_to_call.choices(state, agents, owner_rule))


def _event(sources: Sources, raw: RawEvent) -> EventRow:
    params = raw.params
    scheme = " ".join(str(params[k]) for k in ("treeNumber", "treeName") if params.get(k))
    return EventRow(
        raw=raw,
        received_at=sources.moment(raw.received_at),
        sent_at=sources.moment(raw.timestamp),
        src=_text(params.get("src_num")),
        dst=_text(params.get("dst_num")),
        scheme=scheme or None,
    )


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _integration(
    sources: Sources,
    key: str,
    trace: IntegrationTrace | None,
    call_id: str,
    links: Mapping[tuple[str, str], dict[str, Any]],
) -> IntegrationView:
    account, _, name = key.partition("/")
    configured = sources.config.accounts.get(account)
    item = configured.integrations.get(name) if configured else None
    return IntegrationView(
        integration=key,
        name=name,
        plugin=item.plugin if item else "",
        configured=item is not None and item.enabled,
        status=trace.status if trace else None,
        link=_link(sources, key, call_id, trace.link, links) if trace else None,
        routing=trace.routing if trace else [],
        hooks=_hook_groups(trace) if trace else [],
    )


def _hook_groups(trace: IntegrationTrace) -> list[HookGroup]:
    """Each dispatch row with the attempts at it, in the rows' order; attempts whose row is
    gone come last, by record."""
    attempts: dict[str, list[HookCall]] = {}
    for call in trace.hook_calls:
        attempts.setdefault(call.record, []).append(call)
    groups = [
        HookGroup(
            record=row.record,
            hook=row.hook,
            row=row,
            status=row_status(row.status, row.attempts),
            attempts=attempts.pop(row.record, []),
        )
        for row in trace.rows
    ]
    groups += [
        HookGroup(record=record, hook=calls[0].hook, row=None, status=None, attempts=calls)
        for record, calls in attempts.items()
    ]
    return groups


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
    depth: QueueDepth


@dataclass(frozen=True)
class IntegrationsView:
    integrations: list[IntegrationHealth]
    dead_letters: list[Dispatch]
    quarantined: list[InboxItem]
    rejected: list[Rejected]
    stats: dict[str, int]
    missed: dict[str, MissedSummary]  # by account: the last day's missed calls and callbacks


async def integrations_view(sources: Sources) -> IntegrationsView:
    """The integrations page: each integration's health, and the work set aside."""
    depths = await sources.store.queue_depths()
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
                depth=depths.get(key, QueueDepth()),
            )
        )
    return IntegrationsView(
        integrations=health,
        dead_letters=await sources.store.dead_dispatches(limit=LIST_LIMIT),
        quarantined=await sources.store.quarantined_events(limit=LIST_LIMIT),
        rejected=await sources.store.rejected(limit=LIST_LIMIT),
        stats=await sources.store.stats(),
        missed=await sources.store.missed_summaries(sources.clock.now() - MISSED_PERIOD_SECONDS),
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
    sipuni: SipuniSchemes  # the account's schemes as Sipuni lists them, or why not shown
    # (integration, entry) for each routing entry of the config that Sipuni has no scheme for
    unknown_schemes: list[tuple[str, UnknownScheme]]


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


async def setup_view(sources: Sources) -> SetupView:
    """The setup page: what to paste into Sipuni and into the config."""
    config = sources.config
    base = public_url.base_url(config.server)
    accounts = []
    for number, account in config.accounts.items():
        used = await sources.store.recent_use(number, RECENT_CALLS)
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
        sipuni = await read_sipuni_schemes(account)
        unknown = [
            (name, entry)
            for name, item in account.integrations.items()
            if item.enabled and sipuni.schemes is not None
            for entry in schemes_sipuni_lacks(item.routing, sipuni.schemes)
        ]
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
                sipuni=sipuni,
                unknown_schemes=unknown,
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
