"""The core's own routing, registered as a plugin so other plugins can extend or override it.

pluggy calls implementations registered later first, and these are registered before any
other plugin, so they answer only when no plugin has an opinion.
"""

from __future__ import annotations

from connector_core.callstate import CallState, SchemeVisit
from connector_core.hookspecs import hookimpl
from connector_core.integrations import Integration


@hookimpl
def connector_filter_call(integration: Integration, call: CallState) -> bool:
    """``schemes = "all"`` sees every call; a list sees calls that went through one of them."""
    routing = integration.routing
    if routing.selects_all():
        return True
    return any(call.in_scheme(selector) for selector in routing.schemes)


@hookimpl
def connector_transfer_scheme(integration: Integration, call: CallState) -> SchemeVisit | None:
    """The first scheme, after the one the call entered, that is a transfer scheme."""
    for visit in call.schemes[1:]:
        if any(visit.matches(s) for s in integration.routing.transfer_schemes):
            return visit
    return None
