"""Simulated Sipuni traffic: believable webhook sequences for tests, demos and load.

``scenarios`` builds the events of one call as pure data; whatever sends them (the tests call
the tracker directly, an HTTP simulator replays them against a running service) lives elsewhere.
"""

from connector_core.simulator.scenarios import (
    Scenario,
    catalogue,
    duplicated,
    inbound_answered,
    inbound_missed,
    inbound_transferred,
    internal,
    outbound_answered,
    outbound_unanswered,
    scheme_transfer,
    shuffled,
    with_number_spelling,
    without_final_hangup,
)

__all__ = [
    "Scenario",
    "catalogue",
    "duplicated",
    "inbound_answered",
    "inbound_missed",
    "inbound_transferred",
    "internal",
    "outbound_answered",
    "outbound_unanswered",
    "scheme_transfer",
    "shuffled",
    "with_number_spelling",
    "without_final_hangup",
]
