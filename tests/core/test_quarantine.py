"""Poison inbox items: retried a few times, then quarantined, without holding up other calls.

A poison item here is real: a SQLite trigger refuses to store one call's state, as a
constraint would, so the worker's commit for that call's events raises ``IntegrityError``
while every other call is stored normally. Dropping the trigger is "the fix".
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from connector_core.appkeys import DISPATCHER, STORE, WORKER
from connector_core.cli import main
from connector_core.clock import FakeClock
from connector_core.simulator import scenarios
from connector_core.testing.faults import faulty_store_factory
from connector_core.worker import MAX_ATTEMPTS
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen, settle

RECORDER = f'[accounts.{ACCOUNT}.integrations.rec]\nplugin = "recorder"\n'
BAD, WORSE, GOOD = "1700000000.1", "1700000000.2", "1700000000.3"


def poison(db_path: Path, call_id: str) -> None:
    """From now on the store refuses ``call_id``'s call state, as a failing constraint does."""
    db = sqlite3.connect(db_path)
    with db:
        for when in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER poison_{when}_{call_id.replace('.', '_')} BEFORE {when} ON calls"
                f" WHEN NEW.call_id = '{call_id}' BEGIN SELECT RAISE(ABORT, 'poisoned call');"
                " END"
            )
    db.close()


def cure(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    with db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            db.execute(f"DROP TRIGGER {name}")
    db.close()


def write_config_file(tmp_path: Path) -> Path:
    """The same service as ``make_config`` builds, as a file for the CLI."""
    path = tmp_path / "connector.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "connector.db"}"
[accounts.{ACCOUNT}]
token = "{TOKEN}"
{RECORDER}
""")
    return path


async def cli(*args: str) -> int:
    # The CLI runs its own event loop, as it does from a shell.
    return await asyncio.to_thread(main, list(args))


async def dispatch(app) -> None:  # type: ignore[no-untyped-def]
    """Run every due hook call, without draining the inbox."""
    while await app[DISPATCHER].dispatch_due():
        await app[DISPATCHER].wait_idle()


async def test_a_poison_item_is_retried_then_quarantined_while_other_calls_go_through(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client, caplog, capsys
) -> None:
    caplog.set_level(logging.WARNING)
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host, clock=FakeClock())
    client = await aiohttp_client(app)
    db_path = tmp_path / "connector.db"
    bad = scenarios.inbound_missed(call_id=BAD, client="79261111111")
    worse = scenarios.inbound_missed(call_id=WORSE, client="79263333333")
    good = scenarios.inbound_answered(call_id=GOOD, client="79262222222")
    poison(db_path, BAD)
    poison(db_path, WORSE)
    for events in itertools.zip_longest(bad.events, good.events, worse.events):
        for params in filter(None, events):
            response = await client.get(f"/sipuni/{TOKEN}", params=params)
            assert await response.json() == {"success": True}
    store, worker = app[STORE], app[WORKER]
    [first_bad, *_] = [i for i in await store.pending_events(100) if i.params["call_id"] == BAD]

    # Round 1: the bad call's first event fails; the good call is processed all the same.
    assert await worker.drain() == len(good.events)
    await dispatch(app)
    assert [k for k in await seen(app, "rec") if BAD in k] == []
    assert {k.split(":")[2] for k in await seen(app, "rec") if GOOD in k} == {
        "started",
        "answered",
        "finished",
    }
    item = await store.get_event(first_bad.id)
    assert item is not None
    assert (item.status, item.attempts, item.last_error) == (
        "pending",
        1,
        "IntegrityError: poisoned call",
    )
    # The bad call's later events wait behind its first, so its events stay in order.
    behind = [i for i in await store.pending_events(100) if i.params["call_id"] == BAD]
    assert len(behind) == len(bad.events) and all(i.attempts == 0 for i in behind[1:])

    # A failed attempt is not progress: the loop waits for its next wake-up or poll before
    # the next one. Here the rounds are run by hand until nothing is pending.
    for _ in range(MAX_ATTEMPTS * (len(bad.events) + len(worse.events))):
        await worker.drain()
    await settle(app)
    quarantined = await store.quarantined_events()
    assert len(quarantined) == len(bad.events) + len(worse.events)
    assert {i.attempts for i in quarantined} == {MAX_ATTEMPTS}
    assert (await store.stats())["inbox_pending"] == 0
    assert (await store.stats())["inbox_quarantined"] == len(quarantined)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].getMessage() == (
        f"inbox item {first_bad.id} quarantined after {MAX_ATTEMPTS} failed attempt(s):"
        f" IntegrityError: poisoned call; see `connector quarantine show {first_bad.id}`,"
        f" then `connector quarantine retry {first_bad.id}`"
    )
    assert errors[0].exc_info is not None  # with its traceback

    # What the operator sees, and does.
    config_file = write_config_file(tmp_path)
    assert await cli("quarantine", "list", "--config", str(config_file)) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(quarantined)
    assert listed[0] == (
        f"{first_bad.id:>6}  2023-11-14 22:13:20 UTC  {ACCOUNT}  {BAD}  event=1  attempts=3  "
        "IntegrityError: poisoned call"
    )
    # A replay of the stored events leaves them aside: retrying them is the quarantine's job.
    assert await cli("replay", "--since", "2023-11-14", "--config", str(config_file)) == 0
    assert capsys.readouterr().out.endswith(
        f"; {len(quarantined)} quarantined or dropped, not replayed\n"
    )
    assert len(await store.quarantined_events()) == len(quarantined)
    assert await cli("quarantine", "show", str(first_bad.id), "--config", str(config_file)) == 0
    shown = json.loads(capsys.readouterr().out)["item"]
    assert shown["status"] == "quarantined" and shown["params"]["call_id"] == BAD
    assert shown["last_error"] == "IntegrityError: poisoned call"
    assert await cli("quarantine", "retry", "999999", "--config", str(config_file)) == 1
    assert capsys.readouterr().err == "999999: not in the quarantine\n"
    assert await cli("quarantine", "retry", "--config", str(config_file)) == 1
    assert capsys.readouterr().err == (
        "name the quarantined ids (see `connector quarantine list`), or --all\n"
    )
    worse_ids = [str(i.id) for i in quarantined if i.params["call_id"] == WORSE]
    assert await cli("quarantine", "drop", *worse_ids, "--config", str(config_file)) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{worse_ids[0]}: dropped (call {WORSE})"

    cure(db_path)  # the fix is deployed
    assert await cli("quarantine", "retry", "--all", "--config", str(config_file)) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{first_bad.id}: queued again (call {BAD}); a running service takes it up"
    )
    await settle(app)
    assert await cli("quarantine", "list", "--config", str(config_file)) == 0
    assert capsys.readouterr().out == "the quarantine is empty\n"
    # Nothing left to retry is not a failure: a cron job may run this every hour.
    assert await cli("quarantine", "retry", "--all", "--config", str(config_file)) == 0
    assert capsys.readouterr().out == "the quarantine is empty: nothing to retry\n"
    keys = await seen(app, "rec")
    assert sorted(k.split(":")[2] for k in keys if BAD in k) == ["finished", "started"]
    assert [k for k in keys if WORSE in k] == []  # dropped: given up on
    assert not [k for k in keys if k.startswith("dup")]  # every hook exactly once


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        # The error says it: SQLite's OperationalError (full disk, I/O error).
        ({"commit_event"}, None),
        # The error does not say it, but the store cannot write anything: the probe fails.
        ({"commit_event", "writable"}, lambda: RuntimeError("the disk controller is on fire")),
    ],
    ids=["disk-full-error", "probe-fails"],
)
async def test_a_failing_store_does_not_quarantine_anything(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client, failing, error
) -> None:
    made, factory = faulty_store_factory()
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host, store_factory=factory)
    client = await aiohttp_client(app)
    call = scenarios.inbound_answered(call_id=GOOD)
    for params in call.events:
        assert await (await client.get(f"/sipuni/{TOKEN}", params=params)).json() == {
            "success": True
        }
    store = made[0]
    store.fail_writes(only=failing, error=error)
    for _ in range(MAX_ATTEMPTS + 2):
        with pytest.raises((sqlite3.OperationalError, RuntimeError)):
            await app[WORKER].drain()
    pending = await store.pending_events(100)
    assert len(pending) == len(call.events)
    assert {(i.status, i.attempts) for i in pending} == {("pending", 0)}
    store.heal()
    await settle(app)
    assert await store.quarantined_events() == []
    assert {k.split(":")[2] for k in await seen(app, "rec")} == {"started", "answered", "finished"}
