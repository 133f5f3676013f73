"""Scale-out: a backlog drained by 1, 2 and 4 worker processes, and one ingest process's rate.

    python -m bench.scale [--quick] [--events N] [--workers 1,2,4] [--concurrency 32]
                          [--duration 5] [--generator auto|wrk|python] [--install-wrk]

PostgreSQL: a throwaway cluster of Debian's binaries (``connector_core.testing.pgcluster``)
with fsync ON, unlike the tests' cluster: a commit costs what it costs in production. Each
run gets a fresh database; SQLite runs get a fresh file.

Drain: K ``connector serve --role worker`` processes (one config each, differing only in the
port) are started on an empty store and waited for (``/healthz``). Then N events (whole calls
of the ingest bench's kinds, distinct call ids) are put into the inbox directly in the database,
in ONE transaction, so they appear at once while the workers already run; the clock starts at
that commit (PostgreSQL: a NOTIFY on the inbox channel wakes the workers, as an ingest process
would; SQLite: the worker finds them at its next poll, up to 1 s later: the SQLite figures
include that). It stops when ``/readyz`` (loopback) shows ``inbox_pending`` and
``dispatches_pending`` both 0. The integration is ``amocrm_stub`` (instant, journals into the
store), so the figure is the connector's own cost, not a CRM's. SQLite serves one worker
process per file by design: its comparison is 1 ``--role worker`` and 1 ``--role all``.

Ingest: one ``--role ingest`` process (no worker beside it: the inbox only grows) against
``bench.bare_server``, closed loop at ``--concurrency`` for ``--duration`` s each, with
``bench.ingest``'s generator (wrk when installed, else ``bench.loadgen``), on PostgreSQL and
on SQLite.

Every process of a run (generator, connector processes, PostgreSQL) shares this machine's
cores (``nproc``): the report says what limits each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import asyncpg

from connector_core.store.base import INBOX_CHANNEL, call_id_of
from connector_core.store.postgres import CHANNEL_PREFIX
from connector_core.testing import pgcluster

from . import calls
from .common import (
    ACCOUNT,
    ROOT,
    STUB_INTEGRATION,
    TOKEN,
    cpu_seconds,
    free_port,
    get_json,
    machine,
    report,
    stop_process,
    table,
    wait_http,
)
from .ingest import BareServer, Generator, estimate, pick_generator

SERVE = [sys.executable, "-m", "connector_core", "serve"]
INSERT = "INSERT INTO inbox (account, call_id, received_at, params) VALUES "


@dataclass
class Storage:
    """Where a run's store is: a PostgreSQL URL, or a SQLite file."""

    backend: str
    url: str | None = None
    path: Path | None = None

    def toml(self) -> str:
        if self.url is not None:
            return f'[storage]\nurl = "{self.url}"\n'
        return f'[storage]\npath = "{self.path}"\n'


@dataclass
class Node:
    """One ``connector serve --role …`` process with a config of its own (its own port)."""

    storage: Storage
    role: str
    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / f"{self.role}-{self.port}.log"

    def start(self) -> Node:
        config = self.dir / f"{self.role}-{self.port}.toml"
        config.write_text(
            f"""
[server]
host = "127.0.0.1"
port = {self.port}
{self.storage.toml()}
[tracker]
finish_settle_seconds = 0
[logging]
level = "WARNING"
[accounts.{ACCOUNT}]
token = "{TOKEN}"
{STUB_INTEGRATION}
""",
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("CONNECTOR_STORAGE_URL", None)  # the config names the store
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*SERVE, "--config", str(config), "--role", self.role],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        return self

    def ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        wait_http(self.url + "/healthz", timeout, self.proc, self.log)

    def stats(self) -> dict[str, int]:
        return get_json(self.url + "/readyz", timeout=30)[1].get("stats", {})

    def stop(self) -> None:
        stop_process(self.proc)


def machine_busy() -> tuple[float, float]:
    """Busy and total CPU time of the whole machine so far (``/proc/stat``), in ticks."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of all cores' time that was busy between two ``machine_busy`` readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 2) if total else 0.0


def postgres_cpu(cluster: pgcluster.PgCluster) -> dict[int, float]:
    """CPU seconds used so far by each of the cluster's processes (postmaster's children)."""
    pid_file = cluster.data / "postmaster.pid"
    postmaster = int(pid_file.read_text().split("\n", 1)[0])
    used = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:  # its parent
                used[int(stat.parent.name)] = cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return used


def postgres_cpu_since(cluster: pgcluster.PgCluster | None, before: dict[int, float]) -> float:
    """CPU seconds the cluster's processes used since ``before`` (new backends from 0)."""
    if cluster is None:
        return 0.0
    return sum(t - before.get(pid, 0.0) for pid, t in postgres_cpu(cluster).items())


def backlog(count: int, run: int) -> list[tuple[str, str | None, float, str]]:
    """``count`` inbox rows of whole calls, in order, as ``append_event`` would store them."""
    now = time.time()
    rows = []
    for path in calls.webhook_paths(count, run):
        params = dict(parse_qsl(path.split("?", 1)[1], keep_blank_values=True))
        rows.append((ACCOUNT, call_id_of(params), now, json.dumps(params, ensure_ascii=False)))
    return rows


async def fill_postgres(url: str, rows: list[tuple[str, str | None, float, str]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.executemany(INSERT + "($1, $2, $3, $4)", rows)
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL_PREFIX + INBOX_CHANNEL)
    finally:
        await conn.close()


def fill_sqlite(path: Path, rows: list[tuple[str, str | None, float, str]]) -> None:
    db = sqlite3.connect(path, timeout=30)
    try:
        with db:
            db.executemany(INSERT + "(?, ?, ?, ?)", rows)
    finally:
        db.close()


def drain(
    storage: Storage,
    roles: list[str],
    events: int,
    run: int,
    workdir: Path,
    cluster: pgcluster.PgCluster | None = None,
) -> dict:
    """Start the processes, wait for them, put ``events`` in the inbox, time until empty."""
    rows = backlog(events, run)
    nodes = [Node(storage, role, workdir) for role in roles]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.ready()
        # The schema exists once a process is up: the rows can go in now.
        cpu0 = {n.port: cpu_seconds(n.proc.pid) for n in nodes if n.proc}
        pg0 = postgres_cpu(cluster) if cluster is not None else {}
        busy0 = machine_busy()
        began = time.monotonic()
        if storage.url is not None:
            asyncio.run(fill_postgres(storage.url, rows))
        else:
            assert storage.path is not None
            fill_sqlite(storage.path, rows)
        filled = time.monotonic()
        stats: dict[str, int] = {}
        deadline = filled + max(120.0, events / 20)
        while time.monotonic() < deadline:
            stats = nodes[0].stats()
            if stats.get("inbox_pending") == 0 and stats.get("dispatches_pending") == 0:
                break
            time.sleep(0.25)  # each /readyz counts the tables: not too often
        else:
            raise TimeoutError(f"not drained: {stats}; log: {nodes[0].log}")
        seconds = time.monotonic() - filled
        cpu = sum(cpu_seconds(n.proc.pid) - cpu0[n.port] for n in nodes if n.proc)
        pg_cpu = postgres_cpu_since(cluster, pg0)
        busy = busy_share(busy0, machine_busy())
    finally:
        for node in nodes:
            node.stop()
    return {
        "backend": storage.backend,
        "processes": len(roles),
        "role": roles[0],
        "events": events,
        "fill_seconds": round(filled - began, 2),
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "connector_cpu_s": round(cpu, 1),
        "postgres_cpu_s": round(pg_cpu, 1),
        # Other processes of the machine count too: the share says whether cores were free.
        "machine_busy": busy,
        "quarantined": stats.get("inbox_quarantined"),
        "dead": stats.get("dispatches_dead"),
    }


def ingest(storage: Storage, gen: Generator, concurrency: int, duration: float, run: int) -> dict:
    node = Node(storage, "ingest", Path(tempfile.mkdtemp(prefix="bench-scale-ingest-")))
    try:
        node.start().ready()
        assert node.proc is not None
        paths = calls.webhook_paths(estimate(concurrency, duration), run)
        cpu0 = cpu_seconds(node.proc.pid)
        result = gen.closed(node.url, paths, concurrency, duration)
        result["service_cpu_s"] = round(cpu_seconds(node.proc.pid) - cpu0, 2)
        result["inbox_pending_after"] = node.stats().get("inbox_pending")
    finally:
        node.stop()
    return result


LIMITS = {
    "drain_postgres": (
        "connector workers and PostgreSQL share {nproc} cores: past {nproc} busy processes"
        " (workers + the database's backends) more workers only take turns; each event is"
        " several round trips and commits (fsync on)"
    ),
    "drain_sqlite": (
        "one worker process by design (one file, one writer); a single Python process uses"
        " one core at most; the first poll adds up to 1 s"
    ),
    "ingest": (
        "the generator ({generator}, one process) and the ingest process share {nproc} cores;"
        " on PostgreSQL the database's backend takes CPU for every commit too; bare aiohttp is"
        " the ceiling of one Python process answering with the same generator"
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 60 s)")
    parser.add_argument("--events", type=int, default=6000, help="backlog per drain run")
    parser.add_argument("--workers", default="1,2,4", help="worker processes on PostgreSQL")
    parser.add_argument("--concurrency", type=int, default=32, help="ingest closed loop")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per ingest run")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.workers, args.duration, args.concurrency = 300, "1,2", 1.0, 8
    workers = [int(x) for x in args.workers.split(",")]
    kind = pick_generator(args.generator, args.install_wrk)
    machine_info = machine()
    nproc = machine_info["nproc"]
    try:
        cluster = pgcluster.start(fsync=True)
    except FileNotFoundError as exc:
        raise SystemExit(f"bench.scale needs PostgreSQL: {exc}") from None
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    runs = iter(range(30, 90))
    try:
        pg_drain = []
        for k in workers:
            url = cluster.create_database(f"drain_{k}")
            pg_drain.append(
                drain(
                    Storage("postgresql", url=url),
                    ["worker"] * k,
                    args.events,
                    next(runs),
                    workdir,
                    cluster,
                )
            )
        sqlite_drain = [
            drain(
                Storage("sqlite", path=workdir / f"drain-{role}.db"),
                [role],
                args.events,
                next(runs),
                workdir,
            )
            for role in ("worker", "all")
        ]
        gen = Generator(kind, workdir)
        with BareServer() as bare_server:
            bare = gen.closed(
                bare_server.url, calls.webhook_paths(20_000, next(runs)), args.concurrency,
                args.duration,
            )  # fmt: skip
        ingest_stores = {
            "postgresql": Storage("postgresql", url=cluster.create_database("ingest")),
            "sqlite": Storage("sqlite", path=workdir / "ingest.db"),
        }
        ingest_runs = {
            backend: ingest(storage, gen, args.concurrency, args.duration, next(runs))
            for backend, storage in ingest_stores.items()
        }
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    one = pg_drain[0]["events_per_s"]
    for r in pg_drain:
        r["ratio_to_1"] = round(r["events_per_s"] / one, 2)
    rows = [
        [r["backend"], f"{r['processes']} × --role {r['role']}", r["events"], r["seconds"],
         r["events_per_s"], r.get("ratio_to_1", ""), r["connector_cpu_s"],
         r["postgres_cpu_s"] if r["backend"] == "postgresql" else "",
         f"{r['machine_busy']:.0%}"]
        for r in [*pg_drain, *sqlite_drain]
    ]  # fmt: skip
    ingest_rows = [["bare aiohttp", bare["rps"], "1.00", bare["p50_ms"], bare["p99_ms"],
                    bare["failures"]]]  # fmt: skip
    for backend, r in ingest_runs.items():
        ingest_rows.append(
            [f"--role ingest, {backend}", r["rps"], f"{r['rps'] / bare['rps']:.2f}",
             r["p50_ms"], r["p99_ms"], r["failures"]]
        )  # fmt: skip
    limits = {k: v.format(nproc=nproc, generator=kind) for k, v in LIMITS.items()}
    lines = [
        f"machine: {json.dumps(machine_info)}",
        f"PostgreSQL {cluster.bindir.parent.name}, throwaway cluster, fsync on;"
        " integration amocrm_stub; backlog put in the inbox directly, in one transaction",
        f"drain of {args.events} events:",
        *table(
            rows,
            [
                "store",
                "processes",
                "events",
                "s",
                "events/s",
                "× 1",
                "connector cpu s",
                "postgres cpu s",
                "machine busy",
            ],
        ),
        f"ingest, closed loop, {args.concurrency} in flight, {args.duration:g} s,"
        f" generator {kind}:",
        *table(ingest_rows, ["server", "webhooks/s", "ratio", "p50 ms", "p99 ms", "fail"]),
        "what limits each figure:",
        *(f"  {name}: {text}" for name, text in limits.items()),
    ]
    report(
        "scale",
        args,
        {
            "machine": machine_info,
            "postgresql": cluster.bindir.parent.name,
            "fsync": True,
            "fill": "directly in the database, one transaction",
            "integration": "amocrm_stub",
            "generator": kind,
            "events": args.events,
            "drain_postgresql": pg_drain,
            "drain_sqlite": sqlite_drain,
            "ingest": {
                "concurrency": args.concurrency,
                "duration": args.duration,
                "bare": bare,
                **ingest_runs,
                "ratio": {b: round(r["rps"] / bare["rps"], 3) for b, r in ingest_runs.items()},
            },
            "limits": limits,
        },
        lines,
    )


if __name__ == "__main__":
    main()
