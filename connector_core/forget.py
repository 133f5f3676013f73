"""``connector forget``: drop what plugins remember about a phone number or a call.

Plugins cache links to CRM records in their effect store (``integration.effects``) so a repeat
caller costs no search. When such a link goes wrong in a way the plugin cannot see, an
operator drops it and the next call looks the record up again. The core does not know what a
plugin stores; it relies on one key convention:

- a link of a phone number is stored under ``phone:<E.164>`` or a key starting
  ``phone:<E.164>:`` (the Usedesk plugin: ``phone:+79161234567:client@<account>``);
- a link of a call under ``call:<call_id>`` or a key starting ``call:<call_id>:``.

Keys that record a finished step (a comment written) do not follow it and are kept, so a
call retried after ``forget`` does not repeat what it already did in the CRM.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector_core.config import Config
from connector_core.phones import normalize
from connector_core.store.base import Store


class ForgetError(ValueError):
    """The request names nothing that can be forgotten; the message says what to type."""


@dataclass(frozen=True)
class ForgetRequest:
    """What to drop: effect-key subjects, in the named integrations (``None``: every one)."""

    what: str  # as the output names it: "+79161234567", "call 1717.1"
    subjects: tuple[str, ...]
    integrations: tuple[str, ...] | None


def request(
    config: Config, *, phone: str | None, call_id: str | None, integration: str | None
) -> ForgetRequest:
    """The keys ``connector forget`` drops for these arguments (exactly one of phone/call)."""
    scope = _integrations(config, integration)
    if call_id is not None:
        if not call_id.strip():
            raise ForgetError("--call needs a call id (as `connector dlq show` prints it)")
        return ForgetRequest(f"call {call_id.strip()}", (f"call:{call_id.strip()}",), scope)
    raw = phone or ""
    accounts = [
        a
        for a in config.accounts.values()
        if scope is None or any(k.split("/", 1)[0] == a.number for k in scope)
    ]
    regions = sorted({a.default_region for a in accounts} or {"RU"})
    numbers = sorted({n for region in regions if (n := normalize(raw, region)) is not None})
    if not numbers:
        raise ForgetError(
            f"cannot read {raw!r} as a phone number (region {', '.join(regions)});"
            " give it as the caller's number, e.g. +79161234567"
        )
    return ForgetRequest(", ".join(numbers), tuple(f"phone:{n}" for n in numbers), scope)


def _integrations(config: Config, given: str | None) -> tuple[str, ...] | None:
    """``ACCOUNT/NAME`` as given (a removed integration's links can be dropped too), or every
    configured integration called ``NAME``."""
    if given is None:
        return None
    keys = tuple(config.integrations_named(given))
    if not keys:
        raise ForgetError(
            f"no integration named {given!r} in the config; give it as ACCOUNT/NAME"
            f" ({config.integrations_listed()})"
        )
    return keys


async def forget(store: Store, req: ForgetRequest) -> list[tuple[str, str]]:
    """Drop the request's keys; the (integration, key) pairs that were dropped."""
    dropped: list[tuple[str, str]] = []
    for subject in req.subjects:
        for integration in req.integrations or (None,):
            dropped += await store.forget_links(subject, integration)
    return dropped
