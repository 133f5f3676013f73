"""SIGTERM while calls are in flight: stop taking webhooks, finish what runs, exit 0.

The service runs as a real process (``python -m connector_core serve``), the Usedesk sandbox
as another, with 300 ms added to every request so that each call's Usedesk work takes a few
seconds. Calls are sent, and once their work is in flight the service gets SIGTERM, as a
process manager sends it. From then on the PBX keeps sending: the listener is closed at once
(connections are refused while the process is still finishing its hook calls), the process
exits 0 well within its shutdown timeout, and it leaves no create half done (no intent
without its recorded result). After the restart the PBX resends what was refused, and every
call ends with its one comment, every number with one client and one ticket.

Rerun: ``.venv/bin/pytest tests/e2e/test_graceful_shutdown.py -s`` (``-s`` prints figures).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from connector_core.appkeys import DISPATCHER, WORKER
from connector_core.clock import SystemClock
from connector_core.supervisor import Supervisor
from tests.e2e.process import ServiceProcess, free_port
from tests.e2e.test_kill_loop import (
    SandboxProcess,
    check_usedesk,
    dangling_intents,
    digits,
    drained,
    generate_calls,
    send,
    shut_down,
    write_config,
)
from tests.harness import app_for, make_config
from tests.store_backends import StoreBackend

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LATENCY_MS = 300
SHUTDOWN_TIMEOUT = 30.0  # connector_core.app.run: web.run_app(shutdown_timeout=30.0)
CALLS = 10
LATE_CALLS = 2  # sent after the SIGTERM: refused, then resent after the restart


HANG = (
    "SIGTERM did not end the process: a supervised loop (connector_core.supervisor) or a hook "
    "call kept running after the shutdown cancelled it; see "
    "test_background_loops_stop_when_cancelled_as_they_are_woken"
)


def test_sigterm_mid_work_exits_0_and_a_restart_completes_everything_once(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    calls = generate_calls(CALLS + LATE_CALLS, 1, random.Random(11))
    early, late = calls[:CALLS], calls[CALLS:]
    sandbox = SandboxProcess(tmp_path / "sandbox.log")
    sandbox.start()
    seed_clients = {c["id"] for c in sandbox.state()["clients"]}
    sandbox.set_faults(latency_ms=LATENCY_MS)
    port = free_port()
    service = ServiceProcess(write_config(tmp_path, port, sandbox.url), port=port)
    acknowledged = 0
    late_events = [params for call in late for params in call.events]
    late_acked: list[dict[str, str]] = []
    refused_while_alive = 0
    hung = False
    try:
        service.start()
        for call in early:
            for params in call.events:
                assert send(service.url, params) == {"success": True}
                acknowledged += 1
        # Work in flight: the sandbox has requests it has not answered yet.
        deadline = time.monotonic() + 10
        while sandbox.get("/_sandbox/rate", {"window": "1"})["total"] < 3:
            assert time.monotonic() < deadline, "no Usedesk work started"
            time.sleep(0.02)
        requests_before = len(sandbox.requests())

        assert service.proc is not None
        sigterm_at = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        pending = list(late_events)
        while service.proc.poll() is None and time.monotonic() < sigterm_at + SHUTDOWN_TIMEOUT:
            if not pending:
                time.sleep(0.02)
                continue
            try:
                reply = send(service.url, pending[0], timeout=2)
            except (OSError, ConnectionError):
                if service.proc.poll() is None:
                    refused_while_alive += 1
                time.sleep(0.02)
                continue
            assert reply == {"success": True}
            late_acked.append(pending.pop(0))  # answered before the listener closed
        took = time.monotonic() - sigterm_at
        requests_during_shutdown = len(sandbox.requests()) - requests_before
        assert refused_while_alive > 0  # it stopped taking webhooks, then finished its work
        # Hook calls in flight were let finish: they went on to their next request (a search
        # after the wildcard question, a create after a search) instead of being cancelled.
        assert requests_during_shutdown > 0
        if service.proc.poll() is None:
            hung = True  # what a process manager does after its stop timeout:
            service.kill()
        else:
            assert service.proc.returncode == 0
            assert took < SHUTDOWN_TIMEOUT
            log = service.log_path.read_text(errors="replace")
            assert "Traceback" not in log and "Task was destroyed" not in log, log[-3000:]
            # Nothing left half done: every create begun was let finish and its result
            # recorded (a SIGKILL leaves such intents behind; see test_kill_loop).
            assert dangling_intents(store_backend) == set()
        # Everything acknowledged is on disk.
        stats = store_backend.read(lambda store: store.stats())
        assert stats["inbox_total"] == acknowledged + len(late_acked)

        service.start()
        for params in pending:  # the PBX resends what was refused
            assert send(service.url, params) == {"success": True}
        stats = service.wait_until(drained, timeout=60)
        assert stats["dispatches_dead"] == 0
        counts = check_usedesk(sandbox.state(), calls, seed_clients)
    finally:
        shut_down(service)
        sandbox.stop()

    numbers = Counter(digits(c) for c in calls)
    assert counts == {"clients": len(numbers), "tickets": len(numbers), "comments": len(calls)}
    assert not hung, HANG  # everything else held; the exit did not
    print(
        f"\nSIGTERM: {len(calls)} calls, {acknowledged} webhooks acknowledged before it; exit "
        f"0 after {took:.1f} s (timeout {SHUTDOWN_TIMEOUT:.0f} s), {requests_during_shutdown} "
        f"Usedesk requests made meanwhile, {refused_while_alive} webhooks refused while "
        f"the process was still finishing, {len(late_acked)} accepted before the listener "
        f"closed"
    )


@pytest.mark.parametrize("loop", ["dispatcher", "worker"])
async def test_background_loops_stop_when_cancelled_as_they_are_woken(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client, loop: str
) -> None:
    """Shutdown cancels the worker and dispatcher loops; new work may wake them that instant.

    ``_background_ctx`` stops the supervisor, which cancels each loop and awaits it. Here the
    loop is woken (new inbox items, a hook call done) in the same moment: Python 3.11's
    ``asyncio.wait_for`` then returns the wake-up and drops the cancellation, the loop goes
    round again, and the shutdown waits for it forever. In the real process this is a SIGTERM
    that never ends the service (seen about once in 20 runs of the test above).
    """
    config, host = make_config(tmp_path, '[accounts.012345.integrations.rec]\nplugin = "recorder"')
    app = app_for(config, host)
    await aiohttp_client(app)
    background = app[DISPATCHER] if loop == "dispatcher" else app[WORKER]
    one_round = app[DISPATCHER].scan_round if loop == "dispatcher" else app[WORKER].drain_round
    supervisor = Supervisor(SystemClock())
    supervisor.add(loop, one_round, interval=30, wakeup=background.wakeup)
    supervisor.start()
    await asyncio.sleep(0.05)  # waiting for work
    background.notify()  # work arrives...
    stopping = asyncio.create_task(supervisor.stop())  # ...as the shutdown begins
    done, _ = await asyncio.wait({stopping}, timeout=2)
    if not done:  # it went round again; stop it for good before failing
        for task in asyncio.all_tasks():
            if task.get_name() == loop:
                task.cancel()
        await asyncio.wait({stopping}, timeout=2)
    assert done, f"the {loop} loop kept running after it was cancelled"
