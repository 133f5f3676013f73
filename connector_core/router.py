"""The router: which integrations see a call, and which hook calls are due for each.

Pure given the plugin host's routing hooks: it reads the call state and proposes dispatch
rows; the store ignores rows it already has, so running the router again after every event
is safe and makes late events converge (an integration that starts seeing a call late
still gets every lifecycle event it is owed).
"""

from __future__ import annotations

from collections.abc import Iterable

from connector_core.callstate import CallState
from connector_core.events import EventType
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration
from connector_core.store.base import NewDispatch

TRANSFER_SCHEME_PREFIX = "transfer_scheme:"


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
        for key in due_keys(call, integration, host):
            not_before = finish_at if key == "finished" else now
            result.append(NewDispatch(integration.key, key, not_before))
    return result


def due_keys(call: CallState, integration: Integration, host: PluginHost) -> list[str]:
    """Lifecycle keys ``integration`` should get for ``call``, in the order to run them."""
    if not host.decide("connector_filter_call", integration, call=call):
        return []
    if not integration.routing.transfer_schemes:
        return list(call.emitted)
    scheme = host.decide("connector_transfer_scheme", integration, call=call)
    if scheme is None:
        return []
    # Transfer-scheme processing: the transfer takes the place of the start.
    skipped = {"started", f"entered_scheme:{scheme.key}"}
    return [TRANSFER_SCHEME_PREFIX + scheme.key] + [k for k in call.emitted if k not in skipped]
