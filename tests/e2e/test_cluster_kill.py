"""Three processes on one PostgreSQL database, SIGKILLed at random while calls stream in.

The cluster: ``A`` runs ``--role all`` (webhooks and work), ``B`` ``--role ingest``, ``C``
``--role worker``; the Usedesk sandbox runs as its own process and outlives every kill. A PBX
thread sends the webhooks of ``CALLS`` calls to A and B in turn, as a load balancer would,
and sends a webhook again (to the other one) when it got no answer. At ``KILLS`` positions
drawn from a seeded RNG (the PBX waits there) one of the three is SIGKILLed, alternately:

* straight after an acknowledgement: each process once, then drawn from the RNG;
* while Usedesk holds a create it has already carried out (the sandbox's ``hang`` with
  ``apply`` on the next ``/create/ticket`` or ``/create/comment``): the worker whose create it
  is (the owner of the call's dispatch lease) is the one killed.

The victim is started again at once. A killed worker's calls and hook calls
are held by leases it no longer renews: another worker takes them over when they expire.

Then every call must be in Usedesk exactly once: one client per new number, one ticket per
number, one call comment per call — whichever process took each webhook and did each part.

Rerun: ``.venv/bin/pytest tests/e2e/test_cluster_kill.py -s`` (``-s`` prints the figures).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.process import ServiceProcess, free_port
from tests.e2e.test_kill_loop import (
    ACCOUNT,
    CREATES,
    LATENCY_MS,
    TOKEN,
    Pbx,
    SandboxProcess,
    check_usedesk,
    digits,
    drained,
    generate_calls,
    interleave,
    shut_down,
)
from tests.store_backends import StoreBackend

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.postgresql_only("three processes share one database"),
]

CALLS = 40
KILLS = 9
REPEAT_CALLERS = 4
SEED = 20261130
LEASE_SECONDS = 3  # a killed worker's work is taken over this long after its last renewal
ROLES = {"A": "all", "B": "ingest", "C": "worker"}
PBX_DEADLINE = 180.0
INGEST = ("A", "B")
USEDESK = """
rate_limit_per_minute = 1000
burst_per_second = 50
request_timeout_seconds = 3
write_settle_seconds = 3
"""


def write_config(
    tmp_path: Path, name: str, port: int, sandbox_url: str, db_url: str, *, usedesk: str = ""
) -> Path:
    """Process ``name``'s config on the database ``db_url``; ``usedesk``: the integration's
    limits and timeouts (this test's by default)."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[server]
port = {port}
[storage]
url = "{db_url}"
[cluster]
lease_seconds = {LEASE_SECONDS}
[tracker]
finish_settle_seconds = 0
[accounts.{ACCOUNT}]
token = "{TOKEN}"
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "sandbox-token"
base_url = "{sandbox_url}"
users = [{{extension = "101", agent = 2}}, {{extension = "102", agent = 3}}]
on_duty_user = 4
{usedesk or USEDESK}
""")
    return path


def test_postgresql_cluster_of_three_killed_at_random_loses_and_doubles_nothing(
    tmp_path: Path, on_store_backend: StoreBackend
) -> None:
    # The database every process's CONNECTOR_STORAGE_URL names (tests/backends.py).
    pg_url = on_store_backend.where
    rng = random.Random(SEED)
    calls = generate_calls(CALLS, REPEAT_CALLERS, rng)
    stream = interleave(calls)
    positions = sorted(rng.sample(range(10, len(stream) - 10), KILLS))
    # Right after an acknowledgement: each process once, then drawn; mid-create: whichever
    # worker holds the create Usedesk has carried out.
    at_ack = rng.sample(sorted(ROLES), len(ROLES))
    at_ack += [rng.choice(sorted(ROLES)) for _ in range((KILLS + 1) // 2 - len(ROLES))]

    sandbox = SandboxProcess(tmp_path / "sandbox.log")
    sandbox.start()
    seed_clients = {c["id"] for c in sandbox.state()["clients"]}
    sandbox.set_faults(latency_ms=LATENCY_MS)
    processes: dict[str, ServiceProcess] = {}
    for name, role in ROLES.items():
        port = free_port()
        config = write_config(tmp_path, name, port, sandbox.url, pg_url)
        processes[name] = ServiceProcess(config, port=port, args=("--role", role))
    kills: list[tuple[int, str, str]] = []
    started = time.monotonic()
    pbx = Pbx([processes[n].url for n in INGEST], stream, set(positions), deadline=PBX_DEADLINE)
    try:
        for process in processes.values():
            process.start()
        pbx.start()
        for n, position in enumerate(positions):
            pbx.at(position)
            if n % 2 == 0:
                victim = at_ack[n // 2]
                processes[victim].kill()
                landed = "right after an acknowledgement"
                pbx.go_on(position)
            else:
                pbx.go_on(position)  # webhooks keep coming while the kill waits its moment
                victim, landed = kill_mid_create(processes, sandbox, pg_url, rng)
            kills.append((position, victim, landed))
            processes[victim].start()
        pbx.join(PBX_DEADLINE)
        assert pbx.error is None, pbx.error
        assert not pbx.is_alive()
        stats = processes["C"].wait_until(drained, timeout=90)
        assert stats["dispatches_dead"] == 0
        assert stats["inbox_total"] >= len(stream)
        counts = check_usedesk(sandbox.state(), calls, seed_clients)
    finally:
        for position in positions:
            pbx.go_on(position)
        for process in processes.values():
            shut_down(process)
        # What Usedesk was sent, and when each kill landed: what a doubled client is read from.
        record = {"kills": kills, "requests": sandbox.requests(), "state": sandbox.state()}
        (tmp_path / "sandbox-record.json").write_text(json.dumps(record, ensure_ascii=False))
        sandbox.stop()

    per_number = Counter(digits(c) for c in calls)
    assert counts == {"clients": len(per_number), "tickets": len(per_number), "comments": CALLS}
    assert len(kills) == KILLS
    # Every process was killed at least once, ingest and workers alike ...
    assert {victim for _, victim, _ in kills} == set(ROLES), kills
    # ... and the kills hit the hard case: a worker died holding a create Usedesk carried out,
    # whose result only a look-up by another worker (or itself, restarted) could find.
    assert sum("carried out" in landed for _, _, landed in kills) >= 2, kills
    elapsed = time.monotonic() - started
    print(
        f"\ncluster kill: {CALLS} calls ({len(per_number)} numbers), {len(stream)} webhooks to"
        f" {len(INGEST)} ingest processes (acknowledged: {sorted(pbx.acknowledged.values())}),"
        f" {KILLS} SIGKILLs ({dict(Counter(v for _, v, _ in kills))}), {pbx.failed_sends} sends"
        f" failed and were resent, {elapsed:.1f} s"
    )
    for position, victim, landed in kills:
        print(f"  kill {victim} ({ROLES[victim]}) at webhook {position:>3}: {landed}")


def kill_mid_create(
    processes: dict[str, ServiceProcess], sandbox: SandboxProcess, pg_url: str, rng: random.Random
) -> tuple[str, str]:
    """SIGKILL the worker whose create Usedesk has carried out and holds unanswered.

    The sandbox applies the next create and hangs (``hang`` with ``apply``); the call id in
    the request names the call, and the owner of its dispatch lease (``host:pid:…``) names
    the process. Returns the victim and where the kill landed.
    """
    sandbox.set_faults(
        mode="hang", apply=True, count=1, paths=list(CREATES), hang_max_s=30, latency_ms=LATENCY_MS
    )
    stop_at = time.monotonic() + 10
    while not sandbox.fault_taken():
        if time.monotonic() > stop_at:  # no create came: disarm, kill a worker anyway
            sandbox.set_faults(mode="none", latency_ms=LATENCY_MS)
            victim = rng.choice([n for n, role in ROLES.items() if role != "ingest"])
            processes[victim].kill()
            return victim, "with no create in flight"
        time.sleep(0.02)
    hung = [r for r in sandbox.requests() if r["fault"] == "hang"][-1]
    call_id = hung["params"].get("additional_id") or re.findall(r"ID: ([\d.]+)<", str(hung))[0]
    owner = asyncio.run(lease_owner(pg_url, call_id))
    assert owner is not None, f"no worker holds the dispatch lease of call {call_id}"
    pid = int(owner.split(":")[1])
    [victim] = [n for n, p in processes.items() if p.proc is not None and p.proc.pid == pid]
    processes[victim].kill()
    return victim, f"after Usedesk carried out its {hung['path']}, before its answer"


async def lease_owner(pg_url: str, call_id: str) -> str | None:
    """Who holds the dispatch lease of ``call_id`` (``host:pid:random``), if anyone."""
    conn = await asyncpg.connect(pg_url)
    try:
        owner: str | None = await conn.fetchval(
            "SELECT owner FROM leases WHERE name LIKE 'dispatch:%' AND name LIKE '%/' || $1",
            call_id,
        )
        return owner
    finally:
        await conn.close()
