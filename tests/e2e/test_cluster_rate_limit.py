"""Three worker processes share one Usedesk rate limit through PostgreSQL.

One ingest process takes the webhooks of ``CALLS`` new callers at once; three worker processes
(``--role worker``) on the same database process them, each with the Usedesk integration at
``rate_limit_per_minute = 100``. Each process's own limiter would let 100 a minute through,
300 together: the shared windows (``Store.take_rate_slot``, named by the API token) must keep
the total at 100 in any 60 s, as the sandbox counts the requests it received. The calls need
more than a minute's budget, so the test takes a little over a minute.

Rerun: ``.venv/bin/pytest tests/e2e/test_cluster_rate_limit.py -s``.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from connector_core.simulator import scenarios
from tests.e2e.process import ServiceProcess, free_port
from tests.e2e.test_cluster_kill import write_config
from tests.e2e.test_kill_loop import (
    SandboxProcess,
    check_usedesk,
    drained,
    send,
    shut_down,
)
from tests.store_backends import StoreBackend

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.postgresql_only("three worker processes share one rate window"),
]

PER_MINUTE = 100
CALLS = 50  # new callers, 2-3 requests each: more than a minute's budget in all
WORKERS = 3
USEDESK = f"""
rate_limit_per_minute = {PER_MINUTE}
burst_per_second = 20
request_timeout_seconds = 5
"""


def crm_requests(process: ServiceProcess) -> int:
    """How many Usedesk requests this process made, from its /metrics."""
    with urllib.request.urlopen(process.url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    counts = re.findall(r"^connector_crm_request_seconds_count\{[^}]*\} (\S+)$", text, re.M)
    return int(sum(float(c) for c in counts))


def test_postgresql_three_workers_never_exceed_the_shared_limit(
    tmp_path: Path, on_store_backend: StoreBackend
) -> None:
    # The database every process's CONNECTOR_STORAGE_URL names (tests/backends.py).
    pg_url = on_store_backend.where
    calls = [
        scenarios.inbound_answered(
            client=f"7926{5550000 + i:07d}",
            call_id=f"{scenarios.START + 600 * i}.{40000 + i}",
            start=scenarios.START + 600 * i,
        )
        for i in range(CALLS)
    ]
    sandbox = SandboxProcess(tmp_path / "sandbox.log")
    sandbox.start()
    seed_clients = {c["id"] for c in sandbox.state()["clients"]}
    processes: dict[str, ServiceProcess] = {}
    for name, role in [("ingest", "ingest")] + [(f"worker{i}", "worker") for i in range(WORKERS)]:
        port = free_port()
        config = write_config(tmp_path, name, port, sandbox.url, pg_url, usedesk=USEDESK)
        processes[name] = ServiceProcess(config, port=port, args=("--role", role))
    started = time.monotonic()
    try:
        for process in processes.values():
            process.start()
        for call in calls:
            for params in call.events:
                assert send(processes["ingest"].url, params) == {"success": True}
        stats = processes["worker0"].wait_until(drained, timeout=240)
        assert stats["dispatches_dead"] == 0
        counts = check_usedesk(sandbox.state(), calls, seed_clients)
        peak = sandbox.get("/_sandbox/rate", {"window": "60"})
        per_worker = {n: crm_requests(p) for n, p in processes.items() if n != "ingest"}
        arrivals = sorted(r["t"] for r in sandbox.requests())
    finally:
        for process in processes.values():
            shut_down(process)
        sandbox.stop()

    assert counts == {"clients": CALLS, "tickets": CALLS, "comments": CALLS}
    # The work needed more than one minute's budget, so the limit was really reached ...
    assert peak["total"] > PER_MINUTE, peak
    # ... and the three processes together never went past it.
    assert peak["max"] <= PER_MINUTE, peak
    # Every worker did part of it: the limit held across processes, not inside one.
    assert all(n > 0 for n in per_worker.values()), per_worker
    # How close it came: the shortest time in which the sandbox saw PER_MINUTE + 1 arrive.
    tightest = min(b - a for a, b in zip(arrivals, arrivals[PER_MINUTE:], strict=False))
    print(
        f"\nshared limit: {CALLS} calls, {peak['total']} requests by {WORKERS} workers"
        f" {per_worker}, at most {peak['max']} in any 60 s (limit {PER_MINUTE}; the fastest"
        f" {PER_MINUTE + 1} arrived within {tightest:.2f} s),"
        f" {time.monotonic() - started:.1f} s"
    )
