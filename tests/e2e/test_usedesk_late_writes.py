"""Usedesk carries out a create but answers after the connector stopped waiting.

The sandbox's ``late`` fault carries every ``/create/ticket`` and ``/create/comment`` out 20 s
after it arrived; the connector gives up on the answer after 2 s. Its retries must wait until
the write could have landed (``write_settle_seconds``), find it by its marker (the ticket's
``additional_id``, the call id in the comment) and create nothing twice. The service runs with
its own loops (dispatcher retries, backoff), as in production.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from tests.e2e.test_usedesk_phone_matching import seed_with, ticket
from tests.e2e.usedesk_world import World, call_comments, world
from tests.harness import TOKEN

pytestmark = pytest.mark.e2e

LATE_S = 20.0
SETTINGS = """
request_timeout_seconds = 2
write_settle_seconds = 25
"""
NEW = ["79160000101", "79160000102"]
KNOWN = "79160000103"  # Usedesk has this client with an open ticket: the call only comments


async def send(w: World, call: scenarios.Scenario) -> None:
    for params in call.events:
        response = await w.client.get(f"/sipuni/{TOKEN}", params=params)
        assert await response.json() == {"success": True}


async def drained(w: World, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = await w.app[STORE].stats()
        if stats["inbox_pending"] == 0 and stats["dispatches_pending"] == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not done in {within} s: {await w.app[STORE].stats()}")


async def test_creates_answered_20_s_late_are_found_not_made_twice(tmp_path: Path) -> None:
    known = {"id": 2001, "name": "Знакомый", "phones": [KNOWN]}
    seed = seed_with([known], [ticket(6001, 2001, status=1)])
    calls = [
        scenarios.inbound_answered(
            client=number, call_id=f"{scenarios.START + i}.{900 + i}", start=scenarios.START + i
        )
        for i, number in enumerate([*NEW, KNOWN])
    ]
    async with world(tmp_path, SETTINGS, seed=seed, background=True) as w:
        w.sandbox.faults.configure(
            {"mode": "late", "late_s": LATE_S, "paths": ["/create/ticket", "/create/comment"]}
        )
        for call in calls:
            await send(w, call)
        await drained(w, within=120)
        # Every create was sent once, timed out, and landed 20 s later: none was sent again.
        # A new number's ticket carries its call's comment when the call had ended by the
        # time the ticket was made; else (its hang-up came in later) the comment is a create
        # of its own, on that ticket.
        writes = w.sandbox.requests(writes_only=True)
        assert sorted({r.path for r in writes}) == ["/create/comment", "/create/ticket"]
        assert sorted(r.params["client_phone"] for r in writes if r.path == "/create/ticket") == NEW
        commented = [r.params["ticket_id"] for r in writes if r.path == "/create/comment"]
        assert 6001 in commented and len(set(commented)) == len(commented)
        assert all(r.fault == "late" for r in writes)
        for number, call in zip(NEW, calls, strict=False):
            [client] = w.clients_with(number)
            [made] = w.tickets_of(client["id"])
            assert made["additional_id"] == call.call_id
            assert len(call_comments(made)) == 1
        [kept] = [t for t in w.tickets_of(2001)]
        [comment] = call_comments(kept)
        assert calls[-1].call_id in comment["message"]
        assert await w.app[STORE].dead_dispatches() == []
