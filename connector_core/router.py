"""The router: which integrations see a call, and which hook calls are due for each.

Pure given the plugin host's routing hooks: it reads the call state and proposes dispatch
rows, each carrying its typed lifecycle record (kind, id, payload); the store ignores rows
it already has (same integration, call and id), so running the router again after every
event is safe and makes late events converge (an integration that starts seeing a call late
still gets every lifecycle event it is owed).
"""

from __future__ import annotations

from collections.abc import Iterable

from connector_core import tracker
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.events import EventType
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration
from connector_core.store.base import NewDispatch

# One per call, whatever the scheme and however Sipuni spelt it: the transfer is the call's
# start for the integration, and a call starts once.
REACHED_TRANSFER_SCHEME_ID = LifecycleKind.REACHED_TRANSFER_SCHEME.value


def plan(
    call: CallState,
    integrations: Iterable[Integration],
    host: PluginHost,
    *,
    now: float,
    finish_settle_seconds: float = 0.0,
) -> list[NewDispatch]:
    """The dispatches ``call`` calls for, across the account's integrations."""
    # A hang-up whose ring events have not arrived yet (out of order) waits a moment for
    # them, so the "first extension rung" is known when the call is finished.
    rings_seen = any(e.event == EventType.RING for e in call.events)
    finish_at = now if rings_seen else now + finish_settle_seconds
    result: list[NewDispatch] = []
    for integration in integrations:
        for record in due(call, integration, host):
            not_before = finish_at if record.kind is LifecycleKind.FINISHED else now
            result.append(NewDispatch(integration.key, record, not_before))
    return result


def due(call: CallState, integration: Integration, host: PluginHost) -> list[LifecycleEvent]:
    """Lifecycle records ``integration`` should get for ``call``, in the order to run them."""
    if not host.filter_call(integration, call):
        return []
    records = tracker.emitted_records(call)
    if not integration.routing.transfer_schemes:
        return records
    scheme = host.transfer_scheme(integration, call)
    if scheme is None:
        return []
    # Transfer-scheme processing: the transfer takes the place of the start, and of the
    # entry into that scheme.
    reached = LifecycleEvent(
        kind=LifecycleKind.REACHED_TRANSFER_SCHEME, id=REACHED_TRANSFER_SCHEME_ID, scheme=scheme
    )
    return [reached] + [
        r
        for r in records
        if r.kind is not LifecycleKind.STARTED
        and not (
            r.kind is LifecycleKind.ENTERED_SCHEME and r.scheme and r.scheme.same_scheme(scheme)
        )
    ]
