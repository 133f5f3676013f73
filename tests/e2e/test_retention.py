"""Ingest keeps answering while retention deletes a big backlog.

The real service on loopback; the store holds thousands of processed webhooks older than
``inbox_days``. Between every two of the prune's batches a webhook is sent and its answer
awaited, so each webhook arrives while the prune is under way (a behaviour, not a timing):
every one is accepted, every call is processed, and the backlog is gone.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector_core import pruner
from connector_core.appkeys import METRICS, STORE
from connector_core.retention import DAY
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle

pytestmark = [pytest.mark.e2e]

OLD_ROWS = 1500
BATCH = 50
STUB = f"""
[accounts.{ACCOUNT}.integrations.amocrm_stub]
subdomain = "acme"
users = {{ "101" = 5001 }}
default_responsible = 5999
"""


async def test_webhooks_sent_during_a_big_prune_are_all_accepted_and_processed(
    tmp_path: Path,
) -> None:
    config, host = make_config(
        tmp_path,
        STUB,
        extra=f"[retention]\nbatch_size = {BATCH}\nbatch_pause_seconds = 0",
    )
    app = app_for(config, host)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        store = app[STORE]
        now = time.time()
        old = now - 8 * DAY
        for n in range(OLD_ROWS):
            item = await store.append_event(ACCOUNT, {"call_id": f"1.{n}"}, old)
            await store.commit_event(item, None, [])
        calls = [scenarios.inbound_missed(call_id=f"{int(now)}.{n}", seq=n) for n in range(8)]
        waiting = [params for call in calls for params in call.events]
        answers: list[tuple[int, object]] = []

        async def send_one(_pause: float) -> None:
            if waiting:
                response = await client.get(f"/sipuni/{TOKEN}", params=waiting.pop(0))
                answers.append((response.status, await response.json()))

        pruned = app[METRICS].pruned_rows
        report = await pruner.prune(
            store,
            config.retention,
            now,
            sleep=send_one,
            on_batch=lambda table, rows: pruned.labels(table).inc(rows),
        )
        await settle(app)

        assert report.counts["inbox"] == OLD_ROWS  # the webhooks sent meanwhile are new
        assert len(answers) == sum(len(call.events) for call in calls)  # all sent mid-prune
        assert all(answer == (200, {"success": True}) for answer in answers)
        for call in calls:
            state = await store.load_call(ACCOUNT, call.call_id)
            assert state is not None and state.finished
        assert (await store.stats())["inbox_pending"] == 0
        assert [e for e in await store.inbox_items(limit=OLD_ROWS) if e.received_at == old] == []
        metrics = await (await client.get("/metrics")).text()
        assert (
            f'connector_pruned_rows_total{{table="inbox"}} {float(report.counts["inbox"])}'
            in metrics
        )
    finally:
        await client.close()
