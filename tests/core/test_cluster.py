"""Several processes on one store, shown where one process can show it: leases another owner
holds keep this process's worker and dispatcher off a call; singleton rounds run in one of
two lease holders; plugin locks hold across lock owners; wake-ups and cards come through
the store's channels; roles choose what a process serves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from connector_core import dispatcher as dispatch
from connector_core.app import create_app
from connector_core.appkeys import BOARD, DISPATCHER, INTEGRATIONS, LEASES, STORE, WORKER
from connector_core.clock import FakeClock
from connector_core.cluster import (
    AuthMirror,
    Leases,
    Role,
    WorkerLocked,
    call_lease,
    dispatch_lease,
    exclusive_worker,
    singleton,
)
from connector_core.integrations import AuthStatus, KeyedLocks
from connector_core.notifications import CardBoard, ChannelSink
from connector_core.simulator import scenarios
from connector_core.store.base import CARD_CHANNEL, DISPATCH_CHANNEL, INBOX_CHANNEL, StoredAuth
from connector_core.store.local import LocalCoordination
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen

RECORDER = '[accounts.012345.integrations.rec]\nplugin = "recorder"\n'
OTHER = "other-host:4242:beef"  # a lease holder in another process


@pytest.fixture
async def service(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host)
    return app, await aiohttp_client(app)


async def send(client, call: scenarios.Scenario) -> None:
    for params in call.events:
        assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]


async def test_the_worker_leaves_a_call_whose_lease_another_process_holds(service) -> None:
    app, client = service
    store, worker = app[STORE], app[WORKER]
    theirs = scenarios.inbound_missed(call_id="1717171700.1")
    ours = scenarios.inbound_missed(call_id="1717171700.2")
    await send(client, theirs)
    await send(client, ours)
    await store.take_leases([call_lease(ACCOUNT, theirs.call_id)], OTHER, 10)

    assert await worker.drain() == len(ours.events)

    assert await store.load_call(ACCOUNT, theirs.call_id) is None
    assert await store.load_call(ACCOUNT, ours.call_id) is not None
    assert len(await store.pending_events(100)) == len(theirs.events)
    assert app[LEASES].held == set()  # its own leases given back after the round
    await store.release_leases(OTHER)
    assert await worker.drain() == len(theirs.events)
    assert await store.load_call(ACCOUNT, theirs.call_id) is not None


async def test_the_dispatcher_leaves_a_group_another_process_holds(service) -> None:
    app, client = service
    store, worker, dispatcher = app[STORE], app[WORKER], app[DISPATCHER]
    theirs = scenarios.inbound_missed(call_id="1717171700.1")
    ours = scenarios.inbound_missed(call_id="1717171700.2")
    await send(client, theirs)
    await send(client, ours)
    await worker.drain()
    await store.take_leases([dispatch_lease("012345/rec", ACCOUNT, theirs.call_id)], OTHER, 10)

    assert await dispatcher.dispatch_due() == 1
    await dispatcher.wait_idle()

    journal = await seen(app, "rec")
    assert journal and all(ours.call_id in key for key in journal)
    assert app[LEASES].held == set()  # given back when the group ended
    await store.release_leases(OTHER)
    assert await dispatcher.dispatch_due() == 1
    await dispatcher.wait_idle()
    assert any(theirs.call_id in key for key in await seen(app, "rec"))


async def test_a_worker_looks_past_a_page_of_calls_another_process_holds(service) -> None:
    """With several workers the oldest pending items are often another's: the worker pages
    on to calls nobody holds instead of idling until those are done."""
    app, client = service
    store, worker = app[STORE], app[WORKER]
    theirs = [scenarios.inbound_missed(call_id=f"1717171700.{i}") for i in range(3)]
    ours = scenarios.inbound_missed(call_id="1717171700.9")
    for call in [*theirs, ours]:
        await send(client, call)
    await store.take_leases([call_lease(ACCOUNT, c.call_id) for c in theirs], OTHER, 10)

    # A page of 2 items holds only calls the other process has; ours is pages later.
    processed = 0
    while done := await worker.drain(batch=2):
        processed += done
    assert processed == len(ours.events)

    assert await store.load_call(ACCOUNT, ours.call_id) is not None
    assert all([await store.load_call(ACCOUNT, c.call_id) is None for c in theirs])
    assert app[LEASES].held == set()


async def test_a_dispatcher_leases_past_the_groups_another_process_holds(service) -> None:
    """A scan's first groups (as many as the dispatcher has room for) held elsewhere: the
    next chunk of due groups is leased and run."""
    app, client = service
    store, worker, dispatcher = app[STORE], app[WORKER], app[DISPATCHER]
    calls = [scenarios.inbound_missed(call_id=f"1717171700.{i}") for i in range(4)]
    for call in calls:
        await send(client, call)
    await worker.drain()
    theirs, ours = calls[:2], calls[2:]
    held = [dispatch_lease("012345/rec", ACCOUNT, c.call_id) for c in theirs]
    await store.take_leases(held, OTHER, 10)
    dispatch.MAX_GROUPS_PER_INTEGRATION, room = 2, dispatch.MAX_GROUPS_PER_INTEGRATION
    try:
        assert await dispatcher.dispatch_due() == len(ours)
    finally:
        dispatch.MAX_GROUPS_PER_INTEGRATION = room
    await dispatcher.wait_idle()

    journal = await seen(app, "rec")
    assert {c.call_id for c in ours} == {
        c.call_id for c in calls if any(c.call_id in k for k in journal)
    }


async def test_a_singleton_round_runs_in_one_of_two_processes_until_its_lease_lapses() -> None:
    clock = FakeClock()
    store = LocalCoordination(clock)
    rounds: list[str] = []

    def counted(who: str):
        async def one_round() -> bool:
            rounds.append(who)
            return False

        return one_round

    first, second = Leases(store, "a:1:x", ttl=10), Leases(store, "b:2:y", ttl=10)
    expiry_a = singleton(first, "singleton:expiry", counted("a"))
    expiry_b = singleton(second, "singleton:expiry", counted("b"))

    for _ in range(3):
        await expiry_a()
        await expiry_b()
        clock.advance(3)
        await first.renew()  # a's leases loop
    assert rounds == ["a", "a", "a"]

    clock.advance(10)  # a died: nobody renewed
    await expiry_b()
    await expiry_a()
    assert rounds[3:] == ["b"]


async def test_every_process_shows_the_clusters_latest_auth_check(service) -> None:
    app, _ = service
    integration = app[INTEGRATIONS]["012345/rec"]
    mirror = AuthMirror(app[STORE], app[INTEGRATIONS])
    await app[STORE].save_auth(StoredAuth("012345/rec", "auth_failed", "key refused", 100.0))

    await mirror.refresh()
    assert integration.auth.status is AuthStatus.AUTH_FAILED
    assert integration.auth.reason == "key refused"

    integration.auth = integration.auth.__class__(AuthStatus.OK, "a hook got through")
    await mirror.refresh()  # the same stored check: the newer local verdict stays
    assert integration.auth.status is AuthStatus.OK


async def test_plugin_locks_hold_across_processes_sharing_a_store() -> None:
    store = LocalCoordination(FakeClock())
    # Two processes' ``integration.locks`` of one integration, as app.py builds them.
    first = KeyedLocks(lambda key: store.lock(f"012345/desk:{key}"))
    second = KeyedLocks(lambda key: store.lock(f"012345/desk:{key}"))
    inside = most = 0

    async def hold(locks: KeyedLocks) -> None:
        nonlocal inside, most
        async with locks("phone:+79001234567"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(hold(locks) for locks in (first, second, first, second)))
    assert most == 1
    assert len(first) == len(second) == 0


async def test_a_webhook_and_new_hook_calls_wake_through_the_channels(service) -> None:
    app, client = service
    worker, dispatcher = app[WORKER], app[DISPATCHER]
    worker.wakeup.clear()
    call = scenarios.inbound_missed()
    await client.get(f"/sipuni/{TOKEN}", params=call.events[0])
    await asyncio.sleep(0)
    assert worker.wakeup.is_set()

    worker.wakeup.clear()
    await app[STORE].publish(INBOX_CHANNEL, "")  # another process's ingest
    await asyncio.sleep(0)
    assert worker.wakeup.is_set()

    dispatcher.wakeup.clear()
    await app[STORE].publish(DISPATCH_CHANNEL, "")  # another process's worker
    await asyncio.sleep(0)
    assert dispatcher.wakeup.is_set()


async def test_the_card_board_takes_cards_from_the_channel(service) -> None:
    app, _ = service
    card = {"call_id": "1717171700.1", "extension": "101", "state": "ringing", "parts": []}
    message = {"account": ACCOUNT, "extension": "101", "card": card}

    await app[STORE].publish(CARD_CHANNEL, json.dumps(message))  # made by another process
    await app[STORE].publish(CARD_CHANNEL, "")  # "maybe missed some": changes nothing
    await asyncio.sleep(0)

    assert app[BOARD].cards[(ACCOUNT, "101")] == card


async def test_a_card_made_here_is_on_this_board_before_the_channel_brings_it_back() -> None:
    """Its own cards reach a process's agents at once, and the channel's echo of one (a
    database round trip later on PostgreSQL) does not put back a card that has moved on."""
    store = LocalCoordination(FakeClock())
    board = CardBoard(origin="here:1:a")
    store.subscribe(CARD_CHANNEL, board.on_message)
    sink = ChannelSink(store, board)
    ringing = {"call_id": "1717171700.1", "extension": "101", "state": "ringing", "parts": []}

    await sink.deliver(ACCOUNT, "101", ringing)
    assert board.cards[(ACCOUNT, "101")] == ringing  # no loop turn, no channel needed

    await sink.deliver(ACCOUNT, "101", {**ringing, "state": "ended"})
    await asyncio.sleep(0)  # both echoes arrive now: ringing, then ended
    assert board.cards == {}
    elsewhere = CardBoard(origin="there:2:b")
    store.subscribe(CARD_CHANNEL, elsewhere.on_message)
    await sink.deliver(ACCOUNT, "102", {**ringing, "extension": "102"})
    await asyncio.sleep(0)
    assert set(elsewhere.cards) == {(ACCOUNT, "102")}  # another process's board gets it
    assert set(board.cards) == {(ACCOUNT, "102")}
    # Its own echo is not applied again (it may be older than what the board shows now).
    echo = {"origin": board.origin, "account": ACCOUNT, "extension": "103", "card": ringing}
    board.on_message(json.dumps(echo))
    assert (ACCOUNT, "103") not in board.cards


async def test_a_worker_process_refuses_webhooks_and_says_where_to_send_them(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(tmp_path, RECORDER)
    client = await aiohttp_client(create_app(config, host=host, role=Role.WORKER))

    response = await client.post(f"/sipuni/{TOKEN}", data={"event": "1"})
    assert response.status == 503
    assert await response.json() == {
        "success": False,
        "error": "this process runs --role worker: point Sipuni at an ingest process",
    }
    ready = await (await client.get("/readyz")).json()
    assert ready["role"] == "worker"
    assert "worker" in ready["loops"]


async def test_an_ingest_process_takes_webhooks_and_runs_no_loops(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(tmp_path, RECORDER)
    app = create_app(config, host=host, role=Role.INGEST)
    client = await aiohttp_client(app)

    await send(client, scenarios.inbound_missed())
    ready = await (await client.get("/readyz")).json()
    assert ready["role"] == "ingest"
    assert ready["loops"] == {}
    assert ready["stats"]["inbox_pending"] > 0  # stored, for a worker process
    assert (await client.get("/agent/")).status == 404
    assert ready["integrations"]["012345/rec"]["auth"] == "not_checked"
    # A worker process of the cluster checked it: the ingest process shows that check.
    await app[STORE].save_auth(StoredAuth("012345/rec", "auth_failed", "key refused", 100.0))
    ready = await (await client.get("/readyz")).json()
    assert ready["integrations"]["012345/rec"] == {"auth": "auth_failed", "reason": "key refused"}


def test_a_second_worker_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "connector.db"
    with exclusive_worker(database):
        with pytest.raises(WorkerLocked) as refused, exclusive_worker(database):
            pass
    assert str(refused.value) == (
        f"another connector worker uses {database} (SQLite serves one worker process;"
        " use PostgreSQL for several)"
    )
    with exclusive_worker(database):  # given back: the next worker starts
        pass
