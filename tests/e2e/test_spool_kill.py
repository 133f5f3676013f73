"""An ingest process and a worker process on one SQLite file, SIGKILLed at random moments
while webhooks go through the spool: every acknowledged webhook reaches the inbox once and is
processed. (A kill between a move's commit and its delete is made on purpose in
tests/core/test_spool.py; at random it is rare.)"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

import pytest

from connector_core.store.base import Store
from tests.e2e.test_crash_recovery import (
    ACCOUNT,
    HOOK_SECONDS,
    expected_hooks,
    many_calls,
    send,
)
from tests.e2e.test_roles import ingest_and_worker
from tests.store_backends import StoreBackend

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sqlite_only("the spool is the SQLite store's: PostgreSQL has no file lock"),
]


def test_sigkills_of_ingest_and_worker_lose_and_double_no_spooled_webhook(
    tmp_path: Path,
    test_plugins_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_backend: StoreBackend,
) -> None:
    monkeypatch.setenv("RECORDER_HOOK_SECONDS", HOOK_SECONDS)
    rng = random.Random(15)
    ingest, worker = ingest_and_worker(tmp_path, test_plugins_dir)
    calls = many_calls(24)
    acknowledged = 0
    kills = {"ingest": 0, "worker": 0}
    ingest.start()
    worker.start()
    try:
        for i, call in enumerate(calls):
            for params in call.events:
                assert send(ingest.url, params, "GET" if i % 2 else "POST") == {"success": True}
                acknowledged += 1
            if i % 4 == 3:
                # The worker moves and processes what came so far: killed at a random moment
                # of it (a read of the spool, the move's transaction, the delete after it).
                time.sleep(rng.uniform(0.0, 1.2))
                worker.kill()
                kills["worker"] += 1
                worker.start()
            if i == 13:  # straight after an acknowledgement: nothing in flight is lost
                ingest.kill()
                kills["ingest"] += 1
                ingest.start()
        worker.wait_until(
            lambda s: s["inbox_pending"] == 0 and s["dispatches_pending"] == 0, timeout=120
        )
    finally:
        worker.stop()
        ingest.stop()

    assert kills == {"ingest": 1, "worker": 6}
    spool = sqlite3.connect(tmp_path / "connector.spool.db")
    assert spool.execute("SELECT count(*) FROM inbox").fetchone() == (0,)  # all moved
    spool.close()

    async def stored(store: Store) -> tuple[dict[str, int], dict[str, object], list[str]]:
        states = {c.call_id: await store.load_call(ACCOUNT, c.call_id) for c in calls}
        keys = [k for k, _ in await store.effects(f"{ACCOUNT}/journal").items()]
        return await store.stats(), states, keys

    stats, states, keys = store_backend.read(stored)
    # Each acknowledged webhook is in the inbox once: no move was lost or done twice.
    assert (stats["inbox_total"], stats["inbox_pending"]) == (acknowledged, 0)
    assert stats["inbox_quarantined"] == 0
    for call in calls:
        state = states[call.call_id]
        assert state is not None, call.call_id
        assert len(state.events) == len({json.dumps(e) for e in map(dict, call.events)})  # type: ignore[attr-defined]
        seen = [k.split(":", 2)[2] for k in keys if k.startswith(f"seen:{call.call_id}:")]
        assert sorted(seen) == sorted(expected_hooks(call)), call.name
