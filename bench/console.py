"""The operator console with many calls in the store: server time per page.

    python -m bench.console [--quick] [--calls 10000] [--requests 30]

1. A store is filled with ``--calls`` finished calls, as the service itself would have stored
   them (each call's Sipuni events run through the real tracker; the inbox rows, the call
   states with their list columns, two integrations' dispatch rows and the calls' records,
   routing and one attempt per hook call with a CRM request and a decision, written in one
   transaction): a mix of answered, missed, outbound, scheme-transfer and internal calls over
   the 30 days before the run, 1 % of them with a dead letter, 1 % with a hook call waiting
   to be retried.
2. The service (own process) starts on that store with the console enabled; the bench signs
   in like a browser and asks each page ``--requests`` times (after 3 unmeasured requests).
3. Reported per page: the server's own time (the console's ``Server-Timing`` header: from the
   request reaching the console to the answer being ready), and the time the client waited.

The goal (issue 13): the calls page, filtered or not, within 100 ms of server time (p90).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import re
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from connector_core import tracker
from connector_core.callrecords import CrmRequest, Decision, HookCall, HookOutcome, Routing, encode
from connector_core.callstate import LifecycleEvent, LifecycleKind
from connector_core.console.auth import hash_password
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios
from connector_core.store.base import extensions_column  # the store's own

from .common import ACCOUNT, STUB_INTEGRATION, Service, latency_summary, machine, report, table

PASSWORD = "bench-console-password"
GOAL_MS = 100.0
DAYS = 30
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_DURATION = re.compile(r"app;dur=([0-9.]+)")


def scenario(i: int, count: int, now: float) -> scenarios.Scenario:
    """The i-th of ``count`` calls over the ``DAYS`` before ``now``: its kind, number,
    extensions and time all vary with i."""
    start = int(now - DAYS * 86400 + DAYS * 86400 * i / max(1, count))
    call_id = f"{start}.{i}"
    client = f"79{(i % 90) + 10:02d}{i:07d}"
    ring = (f"{101 + i % 9}", f"{102 + i % 9}")
    kind = i % 10
    if kind < 4:
        return scenarios.inbound_answered(
            ring=ring, answered_by=ring[0], client=client, call_id=call_id, start=start
        )
    if kind < 6:
        return scenarios.inbound_missed(ring=ring, client=client, call_id=call_id, start=start)
    if kind < 8:
        return scenarios.outbound_answered(
            employee=ring[0], client=client, call_id=call_id, start=start
        )
    if kind < 9:
        return scenarios.scheme_transfer(
            ring=ring, answered_by=ring[1], client=client, call_id=call_id, start=start
        )
    return scenarios.internal(call_id=call_id, start=start)


def hook_call(record: LifecycleEvent, at: float, error: str | None) -> HookCall:
    """What the dispatcher records for one attempt: a CRM request, and a decision with its
    reason (the comment's text on the call's end)."""
    finished = record.kind is LifecycleKind.FINISHED
    return HookCall(
        hook=record.kind.hook,
        record=record.id,
        attempt=1,
        started_at=at,
        seconds=0.012,
        outcome=HookOutcome.DEAD if error else HookOutcome.DONE,
        error=error,
        requests=(
            CrmRequest("create/comment" if finished else "create/ticket", "ok", 0.011, at, 200),
        ),
        decisions=(
            Decision(
                "owner 514" if finished else "ticket 5001",
                "missed call, on-duty agent" if finished else "new ticket for a new client",
                text="Входящий звонок, 3:15" if finished else None,
            ),
        ),
    )


def fill(path: Path, count: int, now: float) -> dict[str, int]:
    """Write ``count`` calls into the store at ``path`` (made by the service's own schema),
    with the columns, records and hook rows the service writes for them."""
    import asyncio

    from connector_core.store.sqlite import SQLiteStore

    async def schema() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(schema())
    db = sqlite3.connect(path)
    rows = {"inbox": 0, "dispatches": 0, "dead": 0, "retrying": 0, "records": 0}
    with db:
        for i in range(count):
            state = None
            for params in scenario(i, count, now).events:
                event = parse_event(params)
                assert isinstance(event, SipuniEvent)
                received = float(event.timestamp) + 0.2
                state, _ = tracker.apply(
                    state, event, account=ACCOUNT, region="RU", received_at=received
                )
                db.execute(
                    "INSERT INTO inbox (account, received_at, params, status, processed_at,"
                    " call_id) VALUES (?, ?, ?, 'done', ?, ?)",
                    (
                        ACCOUNT,
                        received,
                        json.dumps(params, ensure_ascii=False),
                        received,
                        event.call_id,
                    ),
                )
                rows["inbox"] += 1
            assert state is not None and state.started_at is not None
            received = state.last_received_at
            db.execute(
                "INSERT INTO calls (account, call_id, state, finished, last_received_at,"
                " started_at, client_number, extensions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ACCOUNT,
                    state.call_id,
                    state.model_dump_json(),
                    int(state.finished),
                    received,
                    state.started_at,
                    state.client_number,
                    extensions_column(state),
                ),
            )
            # The stub is configured (its rows done or dead: the dispatcher leaves both alone);
            # "usedesk" is not, so its waiting rows stay as they are while the bench runs.
            for integration in (f"{ACCOUNT}/amocrm_stub", f"{ACCOUNT}/usedesk"):
                routing = Routing(sees=True, scheme_filter='schemes = "all": every call')
                records = [(received, routing)]
                for n, record in enumerate(tracker.emitted_records(state)):
                    status, attempts, error = "done", 1, None
                    last = n == len(state.emitted) - 1
                    if last and i % 100 == 0 and integration.endswith("stub"):
                        status, error = "dead", "InvalidRequestError: the CRM refused it"
                        rows["dead"] += 1
                    elif last and i % 100 == 1 and integration.endswith("usedesk"):
                        status, attempts, error = "pending", 2, "TransientError: 503"
                        rows["retrying"] += 1
                    db.execute(
                        "INSERT INTO dispatches (account, call_id, integration, key, record,"
                        " status, attempts, not_before, last_error, created_at, done_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            ACCOUNT,
                            state.call_id,
                            integration,
                            record.id,
                            record.model_dump_json(),
                            status,
                            attempts,
                            received + 3600,
                            error,
                            received,
                            received if status == "done" else None,
                        ),
                    )
                    rows["dispatches"] += 1
                    records.append((received, hook_call(record, received, error)))
                db.executemany(
                    "INSERT INTO call_records (account, call_id, integration, kind, at, data)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (ACCOUNT, state.call_id, integration, entry.kind, at, encode(entry))
                        for at, entry in records
                    ],
                )
                rows["records"] += len(records)
    db.close()
    return rows


class Console:
    """A signed-in browser session, in urllib."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def sign_in(self) -> None:
        with self.opener.open(self.base + "/console/login", timeout=30) as response:
            token = _CSRF.search(response.read().decode())
        assert token is not None
        form = urllib.parse.urlencode({"csrf": token.group(1), "password": PASSWORD}).encode()
        with self.opener.open(self.base + "/console/login", data=form, timeout=30) as response:
            assert response.url.endswith("/console/calls"), response.url

    def get(self, path: str) -> tuple[float, float, bytes]:
        """Server ms (Server-Timing), client ms, the body."""
        started = time.perf_counter()
        with self.opener.open(self.base + path, timeout=60) as response:
            body = response.read()
            header = response.headers.get("Server-Timing", "")
        waited = (time.perf_counter() - started) * 1000
        found = _DURATION.search(header)
        assert found is not None, (path, header)
        return float(found.group(1)), waited, body


def pages(count: int, now: float) -> dict[str, tuple[str, str]]:
    """Each page measured: its path, and a text its answer must hold (it found something)."""
    # Inbound answered: a client number, and no internal call.
    middle = scenario(count // 2 + 1, count, now)
    client = middle.events[0]["src_num"]
    spelt = f"8 ({client[1:4]}) {client[4:7]}-{client[7:9]}-{client[9:]}"
    deep = urllib.parse.urlencode(
        {"before": repr(float(middle.events[0]["timestamp"])), "before_call": middle.call_id}
    )
    return {
        "calls": ("/console/calls", 'class="call '),
        "calls_rows": ("/console/calls/rows", 'class="call '),
        "calls_phone": (
            "/console/calls?" + urllib.parse.urlencode({"phone": spelt}),
            middle.call_id,
        ),
        "calls_extension": ("/console/calls?extension=105", 'class="call '),
        "calls_missed_24h": ("/console/calls?outcome=missed&period=24h", 'class="call '),
        "calls_dead": ("/console/calls?status=dead", "status-dead"),
        "calls_done_stub": (
            f"/console/calls?status=done&integration={ACCOUNT}/amocrm_stub",
            'class="call ',
        ),
        "calls_deep_page": (f"/console/calls?{deep}", 'class="call '),
        "call": (f"/console/calls/{ACCOUNT}/{middle.call_id}", 'class="crm-request"'),
        "integrations": ("/console/integrations", "the CRM refused it"),
        "setup": ("/console/setup", 'class="scheme"'),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--calls", type=int, default=10_000, help="calls in the store")
    parser.add_argument("--requests", type=int, default=30, help="measured requests per page")
    args = parser.parse_args(argv)
    count = min(args.calls, 300) if args.quick else args.calls
    requests = min(args.requests, 5) if args.quick else args.requests

    console = (
        f'[console]\nenabled = true\npassword_hash = "{hash_password(PASSWORD)}"\n'
        'timezone = "UTC"\n'
    )
    service = Service(STUB_INTEGRATION, extra=console)
    started = time.perf_counter()
    now = time.time()
    stored = fill(service.dir / "connector.db", count, now)
    fill_seconds = round(time.perf_counter() - started, 1)
    db_mib = round((service.dir / "connector.db").stat().st_size / 2**20, 1)
    results: dict[str, Any] = {}
    with service:
        session = Console(service.url)
        session.sign_in()
        for name, (path, holds) in pages(count, now).items():
            for _ in range(3):
                body = session.get(path)[2]
            assert holds.encode() in body, f"{name}: {path} does not show {holds!r}"
            samples = [session.get(path) for _ in range(requests)]
            server = latency_summary([s[0] / 1000 for s in samples])
            client = latency_summary([s[1] / 1000 for s in samples])
            results[name] = {
                "server": server,
                "client_p50_ms": client["p50_ms"],
                "bytes": len(samples[-1][2]),
            }
    calls_pages = [name for name in results if name.startswith("calls")]
    worst = max(results[name]["server"]["p90_ms"] for name in calls_pages)
    rows = [
        [
            name,
            r["server"]["p50_ms"],
            r["server"]["p90_ms"],
            r["server"]["max_ms"],
            r["client_p50_ms"],
            r["bytes"],
        ]
        for name, r in results.items()
    ]
    lines = [
        f"{count} calls in the store ({stored['inbox']} events, {stored['dispatches']} hook"
        f" calls, {stored['records']} call records, {stored['dead']} dead,"
        f" {stored['retrying']} retrying; {db_mib} MiB, written"
        f" in {fill_seconds} s); {requests} requests per page, server time from Server-Timing:",
        *table(rows, ["page", "p50 ms", "p90 ms", "max ms", "client p50 ms", "bytes"]),
        f"calls pages, worst p90: {worst} ms (goal < {GOAL_MS:g} ms)",
    ]
    result = {
        "calls": count,
        "requests_per_page": requests,
        "stored": stored,
        "db_mib": db_mib,
        "pages": results,
        "calls_pages_worst_p90_ms": worst,
        "goals": {"calls_page_under_100ms": worst < GOAL_MS},
        "machine": machine(),
    }
    report("console", args, result, lines)


if __name__ == "__main__":
    main()
