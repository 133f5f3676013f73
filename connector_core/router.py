"""The router: which integrations see a call, and which hook calls are due for each.

Pure given the plugin host's routing hooks: it reads the call state and proposes dispatch
rows, each carrying its typed lifecycle record (kind, id, payload); the store ignores rows
it already has (same integration, call and id), so running the router again after every
event is safe and makes late events converge (an integration that starts seeing a call late
still gets every lifecycle event it is owed). With the rows it gives, per integration, the
decision and its reason (``callrecords.Routing``), which the store keeps when it changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from connector_core import tracker
from connector_core.callrecords import NewCallRecord, Routing
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind, SchemeVisit
from connector_core.events import EventType
from connector_core.hooks import BUILTIN_ROUTING, PluginHost
from connector_core.integrations import Integration
from connector_core.store.base import NewDispatch

# One per call, whatever the scheme and however Sipuni spelt it: the transfer is the call's
# start for the integration, and a call starts once.
REACHED_TRANSFER_SCHEME_ID = LifecycleKind.REACHED_TRANSFER_SCHEME.value


@dataclass(frozen=True)
class Route:
    """What the router proposes for a call: the dispatch rows, and why, per integration."""

    dispatches: list[NewDispatch]
    decisions: list[NewCallRecord]


def route(
    call: CallState,
    integrations: Iterable[Integration],
    host: PluginHost,
    *,
    now: float,
    finish_settle_seconds: float = 0.0,
) -> Route:
    """The dispatches ``call`` calls for across the account's integrations, and the routing
    decision behind them for each integration."""
    # A hang-up whose ring events have not arrived yet (out of order) waits a moment for
    # them, so the "first extension rung" is known when the call is finished.
    rings_seen = any(e.event == EventType.RING for e in call.events)
    finish_at = now if rings_seen else now + finish_settle_seconds
    dispatches: list[NewDispatch] = []
    decisions: list[NewCallRecord] = []
    for integration in integrations:
        records, why = _decide(call, integration, host)
        decisions.append(NewCallRecord(integration.key, why, now))
        for record in records:
            not_before = finish_at if record.kind is LifecycleKind.FINISHED else now
            dispatches.append(NewDispatch(integration.key, record, not_before))
    return Route(dispatches, decisions)


def plan(
    call: CallState,
    integrations: Iterable[Integration],
    host: PluginHost,
    *,
    now: float,
    finish_settle_seconds: float = 0.0,
) -> list[NewDispatch]:
    """The dispatches ``call`` calls for, across the account's integrations."""
    return route(
        call, integrations, host, now=now, finish_settle_seconds=finish_settle_seconds
    ).dispatches


def due(call: CallState, integration: Integration, host: PluginHost) -> list[LifecycleEvent]:
    """Lifecycle records ``integration`` should get for ``call``, in the order to run them."""
    return _decide(call, integration, host)[0]


def _decide(
    call: CallState, integration: Integration, host: PluginHost
) -> tuple[list[LifecycleEvent], Routing]:
    sees, by = host.filter_call_by(integration, call)
    scheme_filter = _filter_reason(call, integration, sees, by)
    if not sees:
        return [], Routing(sees=False, scheme_filter=scheme_filter)
    records = tracker.emitted_records(call)
    if not integration.routing.transfer_schemes:
        return records, Routing(sees=True, scheme_filter=scheme_filter)
    scheme, by = host.transfer_scheme_by(integration, call)
    why = _transfer_reason(call, integration, scheme, by)
    if scheme is None:
        return [], Routing(sees=False, scheme_filter=scheme_filter, transfer_scheme=why)
    # Transfer-scheme processing: the transfer takes the place of the start, and of the
    # entry into that scheme.
    reached = LifecycleEvent(
        kind=LifecycleKind.REACHED_TRANSFER_SCHEME, id=REACHED_TRANSFER_SCHEME_ID, scheme=scheme
    )
    due = [reached] + [
        r
        for r in records
        if r.kind is not LifecycleKind.STARTED
        and not (
            r.kind is LifecycleKind.ENTERED_SCHEME and r.scheme and r.scheme.same_scheme(scheme)
        )
    ]
    return due, Routing(sees=True, scheme_filter=scheme_filter, transfer_scheme=why)


def _scheme_name(visit: SchemeVisit) -> str:
    if visit.id and visit.name:
        return f"{visit.id} ({visit.name})"
    return visit.id or visit.name or "?"


def _path(call: CallState) -> str:
    if not call.schemes:
        return "the call has been in no scheme yet"
    return "the call's path: " + " → ".join(_scheme_name(v) for v in call.schemes)


def _filter_reason(call: CallState, integration: Integration, sees: bool, by: str | None) -> str:
    """Why the scheme filter let ``call`` through to ``integration`` or not, in words."""
    if by is None:
        return "no connector_filter_call implementation answered, so the call is hidden"
    if by != BUILTIN_ROUTING:
        verdict = "selected" if sees else "left out"
        return f"plugin '{by}' {verdict} the call (connector_filter_call)"
    schemes = integration.routing.schemes
    if schemes == "all":
        return 'schemes = "all": every call'
    if sees:
        passed = [s for s in schemes if call.in_scheme(s)]
        return f"selected by schemes: went through {', '.join(passed)}"
    return f"none of schemes ({', '.join(schemes)}) is on its path; {_path(call)}"


def _transfer_reason(
    call: CallState, integration: Integration, scheme: SchemeVisit | None, by: str | None
) -> str:
    """Why transfer-scheme processing opened ``call`` to ``integration`` or not, in words."""
    if scheme is not None and by == BUILTIN_ROUTING:
        return f"moved into transfer scheme {_scheme_name(scheme)}"
    if scheme is not None:
        return f"plugin '{by}' named transfer scheme {_scheme_name(scheme)}"
    listed = ", ".join(integration.routing.transfer_schemes)
    return (
        f"waits for a move into one of transfer_schemes ({listed}) after the entry scheme;"
        f" {_path(call)}"
    )
