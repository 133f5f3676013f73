"""Roles as real processes on one store: an ingest process takes the webhooks, a worker
process processes them and runs the hooks; the worker process sends Sipuni to an ingest
process. On SQLite a second worker on the file is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from connector_core.simulator import scenarios
from connector_core.store.base import Store
from tests.e2e.process import ServiceProcess, free_port, get_json
from tests.e2e.test_crash_recovery import ACCOUNT, TOKEN, write_config
from tests.store_backends import StoreBackend

pytestmark = pytest.mark.e2e


def post(url: str, params: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/sipuni/{TOKEN}",
        data=urllib.parse.urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def ingest_and_worker(tmp_path: Path, plugins: Path) -> tuple[ServiceProcess, ServiceProcess]:
    """A ``--role ingest`` and a ``--role worker`` process on the store in ``tmp_path``, the
    recorder integration on (not started)."""
    ingest_port, worker_port = free_port(), free_port()
    ingest = ServiceProcess(
        write_config(tmp_path, ingest_port, "ingest"),
        pythonpath=[plugins],
        port=ingest_port,
        args=("--role", "ingest"),
    )
    worker = ServiceProcess(
        write_config(tmp_path, worker_port, "worker"),
        pythonpath=[plugins],
        port=worker_port,
        args=("--role", "worker"),
    )
    return ingest, worker


def test_an_ingest_and_a_worker_process_share_one_store(
    tmp_path: Path, test_plugins_dir: Path, store_backend: StoreBackend
) -> None:
    ingest, worker = ingest_and_worker(tmp_path, test_plugins_dir)
    calls = [
        scenarios.inbound_answered(call_id="1717171700.1"),
        scenarios.inbound_missed(call_id="1717171700.2", start=scenarios.START + 10),
    ]
    ingest.start()
    worker.start()
    try:
        for call in calls:
            for params in call.events:
                assert post(ingest.url, params) == (200, {"success": True})
        assert post(worker.url, calls[0].events[0]) == (
            503,
            {
                "success": False,
                "error": "this process runs --role worker: point Sipuni at an ingest process",
            },
        )
        worker.wait_until(
            lambda s: (
                s["inbox_pending"] == 0 and s["dispatches_pending"] == 0 and s["calls_open"] == 0
            )
        )
        assert get_json(ingest.url + "/readyz")[1]["role"] == "ingest"
        assert get_json(worker.url + "/readyz")[1]["role"] == "worker"
        assert get_json(ingest.url + "/readyz")[1]["loops"] == {}
    finally:
        worker.stop()
        ingest.stop()

    async def keys(store: Store) -> list[str]:
        return [k for k, _ in await store.effects(f"{ACCOUNT}/journal").items()]

    stored = store_backend.read(keys)
    for call in calls:
        ran = {k.split(":", 2)[2] for k in stored if k.startswith(f"seen:{call.call_id}:")}
        assert "started:" in ran and f"finished:{call.expected['outcome']}" in ran, ran


@pytest.mark.sqlite_only("one worker process per SQLite file; PostgreSQL serves several")
def test_a_second_worker_on_one_sqlite_file_is_refused(
    tmp_path: Path, test_plugins_dir: Path
) -> None:
    port = free_port()
    worker = ServiceProcess(
        write_config(tmp_path, port, "worker"),
        pythonpath=[test_plugins_dir],
        port=port,
        args=("--role", "worker"),
    )
    worker.start()
    try:
        second = subprocess.run(
            [
                *(sys.executable, "-m", "connector_core", "serve"),
                *("--config", str(write_config(tmp_path, free_port(), "second"))),
                *("--role", "worker"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=worker.env,
            timeout=60,
        )
    finally:
        worker.stop()

    assert second.returncode == 1
    database = tmp_path / "connector.db"
    assert (
        f"cannot start: another connector worker uses {database} (SQLite serves one worker"
        " process; use PostgreSQL for several)"
    ) in second.stderr
