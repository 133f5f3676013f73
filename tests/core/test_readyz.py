"""``/readyz``: a real write probe, stalled loops by name, details for the operator only."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from unittest import mock

from aiohttp.test_utils import make_mocked_request
from pydantic import SecretStr

from connector_core.app import create_app
from connector_core.appkeys import STORE, SUPERVISOR, WORKER
from connector_core.clock import FakeClock
from connector_core.cluster import Role
from connector_core.health import may_see_details
from connector_core.simulator import scenarios
from connector_core.store.sqlite import SQLiteStore
from connector_core.testing.faults import faulty_store_factory
from tests.harness import ACCOUNT, TOKEN, app_for, make_config

RECORDER = f'[accounts.{ACCOUNT}.integrations.rec]\nplugin = "recorder"\n'
READYZ_TOKEN = "readyz-token-0123456789"
PROXIED = {"X-Forwarded-For": "203.0.113.5"}  # as a proxy in front of the service sends it


async def eventually(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def test_readyz_is_503_while_a_real_write_fails_and_200_once_it_succeeds(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    made, factory = faulty_store_factory()
    config, host = make_config(tmp_path, RECORDER)
    client = await aiohttp_client(app_for(config, host, store_factory=factory))
    made[0].fail_writes()  # a full disk: reads work, no write does
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["ready"] is False and body["store"] == "not writable"
    assert body["problems"] == ["the store cannot write: a real write to it failed"]
    assert body["stats"]["inbox_pending"] == 0  # the counts can still be read: shown
    assert (await client.get("/readyz", headers=PROXIED)).status == 503
    made[0].heal()
    response = await client.get("/readyz")
    assert response.status == 200 and (await response.json())["problems"] == []


async def test_readyz_names_a_loop_with_work_that_completed_no_round_and_it_recovers(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    made, factory = faulty_store_factory()
    clock = FakeClock()
    config, host = make_config(tmp_path, RECORDER)
    app = create_app(config, host=host, clock=clock, store_factory=factory)  # real loops
    client = await aiohttp_client(app)
    worker = app[SUPERVISOR].loops["worker"]
    # The worker's commits fail (the probe still writes: the store is not what is down).
    made[0].fail_writes(only={"commit_event"})
    call = scenarios.inbound_missed()
    for params in call.events:
        assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]
    await eventually(lambda: worker.errors >= 1)
    assert (await client.get("/readyz")).status == 200  # not for long enough yet
    clock.advance(config.server.loop_stall_seconds + 60)

    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["store"] == "writable"
    assert body["problems"] == [
        "loop worker has completed no round for over 120 s while it has work waiting"
    ]
    assert body["loops"]["worker"]["failing"] is True
    assert body["loops"]["worker"]["last_error"] == "OperationalError: database or disk is full"
    assert body["loops"]["dispatcher"]["failing"] is False
    metrics = await (await client.get("/metrics")).text()
    counted = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("connector_loop_errors_total{")
    }
    assert counted == {
        "leases": 0,
        "worker": worker.errors,
        "dispatcher": 0,
        "expiry": 0,
        "missed_calls": 0,
        "auth": 0,
        "prune": 0,
    }

    made[0].heal()  # no restart: the loop's next round gets through
    await eventually(lambda: worker.failures_in_a_row == 0 and worker.rounds > 1, timeout=60)
    stats = await app[STORE].stats()
    assert stats["inbox_pending"] == 0 and stats["inbox_quarantined"] == 0
    response = await client.get("/readyz")
    assert response.status == 200 and (await response.json())["problems"] == []


async def test_readyz_is_503_while_the_spools_webhooks_cannot_be_moved_and_200_after(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    """A worker beside an ingest process (SQLite): its rounds go on when the spooled webhooks
    cannot be moved into the inbox, so no loop looks stalled; /readyz says so itself."""
    clock = FakeClock()
    config, host = make_config(tmp_path, RECORDER)
    app = create_app(config, host=host, clock=clock, role=Role.WORKER)  # real loops
    client = await aiohttp_client(app)
    ingest = SQLiteStore(config.storage.path, clock=clock)
    ingest.spools = True
    await ingest.open()
    db = sqlite3.connect(config.storage.path)
    try:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON inbox"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        db.commit()
        for params in scenarios.inbound_missed().events:
            await ingest.append_event(ACCOUNT, params, clock.now())
        app[WORKER].notify()

        async def failing() -> int:
            return (await app[STORE].stats())["spool_failing_seconds"]

        deadline = time.monotonic() + 20
        while await failing() == 0:
            assert time.monotonic() < deadline, "the worker never tried to move them"
            await asyncio.sleep(0.05)
        assert (await client.get("/readyz")).status == 200  # not for long enough yet
        clock.advance(config.server.loop_stall_seconds + 60)
        worker = app[SUPERVISOR].loops["worker"]
        rounds = worker.rounds
        app[WORKER].notify()
        await eventually(lambda: worker.rounds > rounds)  # its rounds go on, failing to move
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["problems"] == [
            "webhooks in the spool could not be moved into the inbox for 180 s: they are kept"
            " there, not processed; the worker's log says why"
        ]
        assert body["stats"]["spool_failing_seconds"] == 180
        assert body["stats"]["inbox_pending"] == len(scenarios.inbound_missed().events)
        assert body["loops"]["worker"]["failing"] is False
        metrics = await (await client.get("/metrics")).text()
        assert "connector_spool_failing_seconds 180.0" in metrics.splitlines()

        db.execute("DROP TRIGGER refuse")
        db.commit()
        app[WORKER].notify()

        async def settled() -> bool:
            stats = await app[STORE].stats()
            # Until the moved webhooks are processed, a loop with work may look stalled: the
            # clock was moved on.
            return stats["spool_failing_seconds"] == 0 and not any(
                stats[k] for k in ("inbox_pending", "dispatches_pending")
            )

        deadline = time.monotonic() + 20
        while not await settled():
            assert time.monotonic() < deadline, "the moves never succeeded again"
            await asyncio.sleep(0.05)
        response = await client.get("/readyz")
        assert response.status == 200 and (await response.json())["problems"] == []
    finally:
        db.close()
        await ingest.close()


async def test_readyz_details_need_loopback_or_the_token(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(
        tmp_path, RECORDER, extra=f'[server]\nreadyz_token = "{READYZ_TOKEN}"'
    )
    client = await aiohttp_client(app_for(config, host))
    local = await (await client.get("/readyz")).json()
    assert local["ready"] is True and "stats" in local and "integrations" in local

    proxied = await client.get("/readyz", headers=PROXIED)
    assert proxied.status == 200 and await proxied.json() == {"ready": True}
    wrong = await client.get("/readyz", headers={**PROXIED, "Authorization": "Bearer nope"})
    assert await wrong.json() == {"ready": True}
    right = await client.get(
        "/readyz", headers={**PROXIED, "Authorization": f"Bearer {READYZ_TOKEN}"}
    )
    assert set(await right.json()) == set(local)


def request_from(address: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (address, 40000) if name == "peername" else default
    )
    return make_mocked_request("GET", "/readyz", headers=headers or {}, transport=transport)


def test_only_loopback_or_the_token_sees_the_details() -> None:
    token = SecretStr(READYZ_TOKEN)
    assert may_see_details(request_from("127.0.0.1"), None)
    assert may_see_details(request_from("::1"), None)
    assert not may_see_details(request_from("203.0.113.5"), None)
    assert not may_see_details(request_from("10.1.2.3"), token)
    bearer = {"Authorization": f"Bearer {READYZ_TOKEN}"}
    assert may_see_details(request_from("203.0.113.5", bearer), token)
    assert not may_see_details(request_from("203.0.113.5", bearer), None)  # none configured
    assert not may_see_details(request_from("127.0.0.1", PROXIED), None)  # a proxy's client
