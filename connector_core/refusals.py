"""Webhooks refused before they reach an account (a token no account has, or an address
outside an account's ``allowed_ips``), and event types ingest answers but ignores.

Such a request gets the same 404 as any other wrong URL (nothing for an outsider to learn),
so the operator must learn of it from the log and ``/metrics``: a Sipuni webhook URL typed
with a wrong token otherwise fails with no trace on our side. A scanner trying tokens could
fill the log, so each kind of refusal from one address is written at once, then at most once
a minute, the line counting the ones held back meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("connector_core.ingest")

UNKNOWN_TOKEN = "unknown_token"
ADDRESS_NOT_ALLOWED = "address_not_allowed"


@dataclass
class Refusals:
    """When each (reason, address) was last logged, and how many were held back since."""

    every_seconds: float = 60.0
    # Bounds the memory a scanner on many addresses can take: forgotten whole when full.
    max_addresses: int = 1000
    _last: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    # (account, event type) of the ignored events already logged: once each per process.
    _ignored: set[tuple[str, int]] = field(default_factory=set)

    def held_back(self, reason: str, address: str, now: float) -> int | None:
        """None when this refusal is not to be logged; otherwise how many like it were
        held back since the last line."""
        key = (reason, address)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_seconds:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= self.max_addresses:
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0

    def first_ignored(self, account: str, event: int) -> bool:
        """Whether ``account``'s ignored ``event`` type is seen here for the first time (a
        flood of made-up types stops being remembered past the bound, and is not logged)."""
        key = (account, event)
        if key in self._ignored or len(self._ignored) >= self.max_addresses:
            return False
        self._ignored.add(key)
        return True


def log_ignored_event(refusals: Refusals, account: str, event: int) -> None:
    """An event type the connector does not act on (Sipuni's 5–12): answered, not stored.
    Logged the first time per account and type, so a PBX that starts sending a new kind
    of event is seen without a line for every call."""
    if not refusals.first_ignored(account, event):
        return
    log.info(
        "event type %s ignored: the connector acts on 1 to 4 (ring, hang-up, answer, a"
        " transfer's hang-up); said once per account and type",
        event,
    )


def log_unknown_token(refusals: Refusals, address: str, token: str, now: float) -> None:
    """A webhook whose path names no account's token. The token is not logged: a typo of
    the right one would put most of the secret in the log."""
    held = refusals.held_back(UNKNOWN_TOKEN, address, now)
    if held is None:
        return
    # Nothing follows "/sipuni/" in the line: the log's redaction masks whatever does.
    log.warning(
        "webhook refused from %s: no account has the token its URL ends with (%d characters),"
        " so it got 404; if Sipuni sends it, the URL in Sipuni's settings must end with the"
        " account's token (accounts.<number>.token in the config)%s",
        address,
        len(token),
        _more(held),
    )


def log_address_not_allowed(refusals: Refusals, account: str, address: str, now: float) -> None:
    """A webhook with an account's token from outside its ``allowed_ips``."""
    held = refusals.held_back(ADDRESS_NOT_ALLOWED, address, now)
    if held is None:
        return
    log.warning(
        "webhook for account %s refused from %s: not in its allowed_ips, so it got 404%s",
        account,
        address,
        _more(held),
    )


def _more(held: int) -> str:
    return f" ({held} more like it in the last minute not logged)" if held else ""
