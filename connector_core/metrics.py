"""What ``/metrics`` reports, in the Prometheus text format.

Each app has its own registry (not the library's global one), so two services in one
process — as in tests — keep separate counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from connector_core.missed import Emission, NumberCall


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "connector_events_received",
            "Webhooks accepted and stored, by event type",
            ["account", "event"],
            registry=r,
        )
        self.events_rejected = Counter(
            "connector_events_rejected", "Webhooks refused as malformed", ["account"], registry=r
        )
        self.webhooks_refused = Counter(
            "connector_webhooks_refused",
            "Webhooks refused before reaching an account: unknown_token (no account has the"
            " token in the URL) or address_not_allowed (outside the account's allowed_ips)",
            ["reason"],
            registry=r,
        )
        self.events_processed = Counter(
            "connector_events_processed", "Stored events merged into call states", registry=r
        )
        self.hook_calls = Counter(
            "connector_hook_calls",
            "Hook calls by outcome (done, retry, dead)",
            ["integration", "hook", "outcome"],
            registry=r,
        )
        self._hook_calls: dict[tuple[str, str, str], Any] = {}
        self.crm_requests = Histogram(
            "connector_crm_request_seconds",
            "CRM API requests by method and outcome",
            ["integration", "method", "outcome"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.store_writes = Histogram(
            "connector_store_write_seconds",
            "SQLite write transactions (one group commit each), from BEGIN IMMEDIATE, the wait"
            " for the file's write lock included, to the end of COMMIT",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.gauges = {
            name: Gauge(f"connector_{name}", help_text, registry=r)
            for name, help_text in {
                "inbox_pending": "Stored webhooks not yet processed",
                "dispatches_pending": "Hook calls waiting to run or to be retried",
                "dispatches_dead": "Hook calls in the dead-letter queue",
                "inbox_quarantined": "Stored webhooks set aside after failing repeatedly",
                "calls_open": "Calls not finished yet",
                "spool_failing_seconds": "Seconds every move of spooled webhooks into the inbox"
                " has failed (0: they move)",
            }.items()
        }
        self.http_errors = Counter(
            "connector_http_errors",
            "Requests that failed in the HTTP layer: bad_request (malformed, or the client went"
            " away) or server_error (an unhandled exception)",
            ["kind"],
            registry=r,
        )
        self.loop_errors = Counter(
            "connector_loop_errors",
            "Rounds of a background loop that raised (each logged with its traceback)",
            ["loop"],
            registry=r,
        )
        self.routing_hook_errors = Counter(
            "connector_routing_hook_errors",
            "Routing hook implementations that raised and were skipped (each logged)",
            ["plugin", "hook"],
            registry=r,
        )
        self.pruned_rows = Counter(
            "connector_pruned_rows",
            "Rows deleted by retention, by kind (docs/retention.md)",
            ["table"],
            registry=r,
        )
        self.reconciled_calls = Counter(
            "connector_reconciled_calls",
            "Calls recorded from Sipuni's call history because their webhooks (missing=call)"
            " or their final hang-up (missing=end) never arrived: should stay at 0"
            " (docs/sipuni.md)",
            ["account", "missing"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "connector_circuit_open",
            "1 while an integration's circuit breaker is open",
            ["integration"],
            registry=r,
        )

        self.missed_calls = Counter(
            "connector_missed_calls",
            "Missed calls (inbound, nobody answered) decided by the missed-call lifecycle",
            ["account"],
            registry=r,
        )
        self.called_back = Counter(
            "connector_called_back",
            "Callbacks that answered a number's missed calls",
            ["account"],
            registry=r,
        )
        self.time_to_callback = Histogram(
            "connector_time_to_callback_seconds",
            "From a number's first missed call to the callback that reached the client",
            ["account"],
            registry=r,
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400),
        )

    def missed_call_observer(self) -> Callable[[str, list[NumberCall], list[Emission]], None]:
        """A callback for the missed-call loop's ``on_settled(account, decided, records)``."""

        def observe(account: str, decided: list[NumberCall], emissions: list[Emission]) -> None:
            missed = sum(1 for call in decided if call.missed)
            if missed:
                self.missed_calls.labels(account).inc(missed)
            for e in emissions:
                if e.record.callback is not None:
                    self.called_back.labels(account).inc()
                    self.time_to_callback.labels(account).observe(e.record.callback.after_seconds)

        return observe

    def hook_call(self, integration: str, kind: str, outcome: str) -> None:
        """Count one hook call's result (a label lookup per hook call is not free: cached)."""
        key = (integration, kind, outcome)
        child = self._hook_calls.get(key)
        if child is None:
            child = self._hook_calls[key] = self.hook_calls.labels(integration, kind, outcome)
        child.inc()

    def crm_request_observer(self, integration: str) -> Callable[[str, float, str], None]:
        """A callback for a CRM client's ``on_request(method, seconds, outcome)``."""

        children: dict[tuple[str, str], Any] = {}  # a label lookup per request is not free

        def observe(method: str, seconds: float, outcome: str) -> None:
            child = children.get((method, outcome))
            if child is None:
                child = children[method, outcome] = self.crm_requests.labels(
                    integration, method, outcome
                )
            child.observe(seconds)

        return observe

    def render(self, stats: dict[str, int]) -> bytes:
        for name, gauge in self.gauges.items():
            gauge.set(stats.get(name, 0))
        return generate_latest(self.registry)
