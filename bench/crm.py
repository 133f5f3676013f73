"""The Usedesk side of the end-to-end benches: the sandbox in the bench's process, and what
its request log says about each call.

The service (its own process) talks to the sandbox over loopback HTTP exactly as it would to
Usedesk. The sandbox records when each API request arrived (``t``, ``time.monotonic()``) and,
here, when its handler had run (``done_at``: the moment the ticket was changed or the comment
written, before the answer travels back), on the same clock the bench reads when it sends
webhooks, so "hang-up sent → comment written" is a difference of two readings of one clock.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from connector_core.phones import search_pattern, search_queries
from plugins.usedesk.sandbox import LoggedRequest, UsedeskSandbox

from .calls import BenchCall, usedesk_seed
from .common import Service, usedesk_integration

_CALL_ID_IN_COMMENT = re.compile(r"ID: ([0-9A-Za-z._:-]+)")


@dataclass(eq=False)
class TimedSandbox(UsedeskSandbox):
    """The sandbox, plus when each request's handler finished (by request ``seq``)."""

    done_at: dict[int, float] = field(default_factory=dict, init=False, repr=False)

    def dispatch(self, entry: LoggedRequest, params: Mapping[str, Any]) -> tuple[int, Any]:
        try:
            return super().dispatch(entry, params)
        finally:
            self.done_at[entry.seq] = time.monotonic()


def _last10(value: Any) -> str:
    digits = re.sub(r"\D", "", str(value or ""))
    return digits[-10:]


@dataclass
class Attribution:
    """Each API request assigned to the call it was made for (or to none: ``/users``)."""

    by_call: dict[str, list[LoggedRequest]]
    shared: list[LoggedRequest]
    unknown: list[LoggedRequest]


def attribute(
    sandbox: UsedeskSandbox, calls: list[BenchCall], entries: list[LoggedRequest] | None = None
) -> Attribution:
    """Match requests (``entries``, default: the whole log) to calls through the phone,
    client, ticket and call id they carry.

    Within ``calls`` every call has its own client number, so the phone identifies the call;
    clients and tickets are traced from the sandbox's state and the replies that made them.
    """
    by_phone = {_last10(c.scenario.expected["client_number"]): c.call_id for c in calls}
    # A phone search sends the number's tail in several spellings (phones.search_queries),
    # or as one LIKE pattern (phones.search_pattern) when the account's search takes it.
    by_query = {
        query: c.call_id
        for c in calls
        for query in [
            *search_queries(c.scenario.expected["client_number"]),
            search_pattern(c.scenario.expected["client_number"]),
        ]
    }
    call_ids = {c.call_id for c in calls}
    by_client: dict[int, str] = {}
    by_ticket: dict[int, str] = {}
    # Seeded clients and tickets of repeat callers.
    for client in sandbox.state.clients.values():
        for phone in client.phones:
            if (cid := by_phone.get(_last10(phone.phone))) is not None:
                by_client[client.id] = cid
    for ticket in sandbox.state.tickets.values():
        if ticket.additional_id in call_ids:
            by_ticket[ticket.id] = ticket.additional_id
        elif ticket.client_id in by_client:
            by_ticket.setdefault(ticket.id, by_client[ticket.client_id])
    result = Attribution(defaultdict(list), [], [])
    for entry in sandbox.log if entries is None else entries:
        p, owner = entry.params, None
        # The agents' list, and the one question whether the search takes wildcards ("%",
        # then the list without a query): the account's, no call's own.
        if entry.path == "/users" or (entry.path == "/clients" and p.get("query") in ("%", None)):
            result.shared.append(entry)
            continue
        if entry.path == "/clients":
            owner = by_query.get(str(p.get("query")))
        elif entry.path == "/create/client":
            owner = by_phone.get(_last10(p.get("phone")))
            response = entry.response if isinstance(entry.response, dict) else {}
            if owner and response.get("client_id"):
                by_client[int(response["client_id"])] = owner
        elif entry.path == "/tickets":
            owner = by_client.get(int(p.get("client_id", 0) or 0))
        elif entry.path == "/create/ticket":
            owner = p.get("additional_id")
            response = entry.response if isinstance(entry.response, dict) else {}
            if owner and response.get("ticket_id"):
                by_ticket[int(response["ticket_id"])] = owner
        elif entry.path in ("/update/ticket", "/ticket"):
            owner = by_ticket.get(int(p.get("ticket_id", 0) or 0))
        elif entry.path == "/create/comment":
            found = _CALL_ID_IN_COMMENT.search(str(p.get("message", "")))
            owner = found.group(1) if found else by_ticket.get(int(p.get("ticket_id", 0) or 0))
        if owner in call_ids:
            result.by_call[owner].append(entry)
        else:
            result.unknown.append(entry)
    return result


def requests_by_kind(calls: list[BenchCall], attribution: Attribution) -> dict[str, Any]:
    """Per kind of call: mean, min and max API requests per call, and which endpoints."""
    per_kind: dict[str, list[int]] = defaultdict(list)
    paths: dict[str, Counter[str]] = defaultdict(Counter)
    for call in calls:
        entries = attribution.by_call.get(call.call_id, [])
        per_kind[call.kind].append(len(entries))
        paths[call.kind].update(e.path for e in entries)
    out: dict[str, Any] = {}
    for kind, counts in per_kind.items():
        out[kind] = {
            "calls": len(counts),
            "mean": round(sum(counts) / len(counts), 2),
            "min": min(counts),
            "max": max(counts),
            "per_call": {p: round(n / len(counts), 2) for p, n in sorted(paths[kind].items())},
        }
    total = sum(sum(v) for v in per_kind.values())
    out["all"] = {
        "calls": len(calls),
        "mean": round(total / len(calls), 2) if calls else 0.0,
        "shared_requests": len(attribution.shared),
        "unattributed": len(attribution.unknown),
    }
    return out


def comment_done(sandbox: TimedSandbox, attribution: Attribution, call_id: str) -> float | None:
    """When the call's comment was written (monotonic), or None if it never was: a comment of
    its own, or the first message of a ticket made at the call's end (it names the call)."""
    for entry in attribution.by_call.get(call_id, []):
        if entry.status != 200 or entry.error:
            continue
        own = entry.path == "/create/comment"
        in_ticket = entry.path == "/create/ticket" and f"ID: {call_id}<" in str(
            entry.params.get("message", "")
        )
        if own or in_ticket:
            return sandbox.done_at.get(entry.seq)
    return None


async def stats(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    async with session.get(url + "/readyz") as response:
        return (await response.json()).get("stats", {})


async def wait_for(
    session: aiohttp.ClientSession, url: str, predicate: Any, within: float
) -> dict[str, int]:
    deadline = time.monotonic() + within
    current: dict[str, int] = {}
    while time.monotonic() < deadline:
        current = await stats(session, url)
        if predicate(current):
            return current
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the service did not finish in {within} s: {current}")


@asynccontextmanager
async def usedesk_service(
    calls: list[BenchCall], *, per_minute: int, burst: int, latency_ms: float
) -> AsyncIterator[tuple[TimedSandbox, Service]]:
    """The sandbox (seeded for ``calls``, ``latency_ms`` per request) and the service as a
    process with a Usedesk integration pointed at it; the service is stopped on the way out."""
    sandbox = TimedSandbox(seed=usedesk_seed(calls))
    async with sandbox.serve() as base_url:
        service = Service(
            usedesk_integration(base_url, sandbox.token, per_minute=per_minute, burst=burst)
        )
        await asyncio.to_thread(service.start)
        try:
            sandbox.set_faults(latency_ms=latency_ms)
            yield sandbox, service
        finally:
            await asyncio.to_thread(service.stop)


async def wait_drained(url: str, within: float) -> dict[str, int]:
    """Until the service's inbox and dispatch outbox are empty; returns its last stats."""
    async with aiohttp.ClientSession() as session:
        return await wait_for(
            session,
            url,
            lambda s: s.get("inbox_pending") == 0 and s.get("dispatches_pending") == 0,
            within,
        )
