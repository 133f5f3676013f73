"""Ingest: webhooks per second and time to ``{"success": true}``, service vs bare aiohttp.

    python -m bench.ingest [--quick] [--levels 1,8,32,128] [--duration 4] [--rate 2000]
                           [--worker-priority idle] [--worker-nice 10] [--generator auto]
                           [--install-wrk]
                           [--store-trace]

The server under test is the real service with the durable SQLite store and logging at
WARNING, in two layouts: ``split``, a ``connector serve --role ingest`` process with a
``--role worker`` process beside it on the same SQLite file (the worker yields the cores to
the ingest process while webhooks come in and catches up after: ``--worker-priority idle``,
the default, runs it under ``SCHED_IDLE`` as docs/deployment.md advises for one host;
``nice`` at ``--worker-nice``, default 10; ``nice`` with ``--worker-nice 0`` at the same
priority), and ``one``, a single ``--role all`` process doing
everything. The ceiling is ``bench.bare_server``, an aiohttp handler that only answers
``{"success": true}``, in the same run on the same machine. The generator is ``wrk`` (Debian
package ``wrk``; ``--generator auto`` uses it when it is installed, ``--install-wrk``
installs it with apt-get) or ``bench.loadgen`` (Python, raw HTTP on epoll).

Closed loop at each concurrency: that many requests always in flight, keep-alive
connections. Then an open loop at ``--rate`` webhooks/s (default 2000) against the bare
handler and each layout, with ``bench.loadgen`` (wrk has no fixed-rate mode); its latency
counts from when each request was due, so a stalled server is not hidden. The bare handler's
tail is the machine's own at that rate, in that run.

The requests are whole calls (rings, answer, transfer, hang-ups) with distinct call ids, as
GET query strings the way Sipuni sends them; the worker processes them as they come (its
CPU use is reported). After each run the bench waits for the inbox and the dispatch outbox
to be empty and reports how long that took (``drain_s``): every webhook acknowledged is
processed.

``--store-trace`` runs the open loop's processes under ``bench.store_trace``: how long each
SQLite write transaction of the ingest process and of the worker process took (from ``BEGIN
IMMEDIATE``, the wait for the write lock included, to the end of ``COMMIT``): while one
process's transaction runs, the other's waits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import calls, store_trace
from .common import ROOT, Service, cpu_seconds, free_port, machine, report, table, wait_http

WRK_SCRIPT = r"""
local paths = {}
local i = 0
bad = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
end
function request()
  i = i + 1
  if i > #paths then i = 1 end
  return wrk.format("GET", paths[i])
end
function response(status, headers, body)
  if status ~= 200 or body ~= '{"success": true}' then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "bad": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    b, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class Generator:
    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.script = workdir / "webhooks.lua"
        self.script.write_text(WRK_SCRIPT)
        self.runs = 0

    def paths_file(self, paths: list[str]) -> Path:
        self.runs += 1
        path = self.workdir / f"paths-{self.runs}.txt"
        path.write_text("\n".join(paths) + "\n")
        return path

    def closed(self, base: str, paths: list[str], concurrency: int, duration: float) -> dict:
        file = self.paths_file(paths)
        if self.kind == "wrk":
            seconds = max(1, round(duration))
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{concurrency}",
                    f"-d{seconds}s",
                    "--timeout",
                    "10s",
                    "-s",
                    str(self.script),
                    base,
                    "--",
                    str(file),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=seconds + 60,
            ).stdout
            line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
            raw = json.loads(line.removeprefix("WRKJSON "))
            elapsed = raw["duration_us"] / 1e6
            return {
                "count": raw["requests"],
                "failures": raw["errors"] + raw["bad"],
                "seconds": round(elapsed, 3),
                "rps": round(raw["requests"] / elapsed, 1),
                "p50_ms": raw["p50_us"] / 1000,
                "p90_ms": raw["p90_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000,
                "mode": "closed",
                "concurrency": concurrency,
            }
        return loadgen(
            [
                "--base",
                base,
                "--paths",
                str(file),
                "--concurrency",
                str(concurrency),
                "--duration",
                str(duration),
            ],
            timeout=duration + 60,
        )

    def open(self, base: str, paths: list[str], rate: float, duration: float) -> dict:
        file = self.paths_file(paths)
        return loadgen(
            [
                "--base",
                base,
                "--paths",
                str(file),
                "--rate",
                str(rate),
                "--duration",
                str(duration),
            ],
            timeout=duration + 60,
        )


def loadgen(argv: list[str], timeout: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def pick_generator(wanted: str, install: bool) -> str:
    if wanted == "python":
        return "python"
    if shutil.which("wrk") is None and install:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    if shutil.which("wrk") is None:
        if wanted == "wrk":
            raise SystemExit("wrk is not installed: apt-get install wrk (or --install-wrk)")
        print(
            "note: wrk not found (apt-get install wrk); using bench.loadgen",
            file=sys.stderr,
        )
        return "python"
    return "wrk"


class BareServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BareServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_server", "--port", str(self.port)],
            cwd=ROOT,
        )
        wait_http(self.url + "/healthz", 20, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


def estimate(concurrency: int, duration: float) -> int:
    """Enough distinct requests for a service run without reuse, at up to ~10k requests/s.

    (Past that they are sent again from the start: repeats, which Sipuni also sends.)
    """
    return int(min(10_000, 400 + 1000 * concurrency) * (duration + 0.5))


LAYOUTS = ("split", "one")


def service_for(
    layout: str, worker_nice: int, worker_idle: bool, trace: Path | None = None
) -> Service:
    """The service of ``layout``: an ingest process and a worker process, or one process;
    with ``trace``, each under ``bench.store_trace`` writing into that folder."""
    python_args = ["-m", "bench.store_trace", "--out", str(trace)] if trace else []
    if layout == "split":
        return Service(
            role="ingest", worker_nice=worker_nice, worker_idle=worker_idle, python_args=python_args
        )
    return Service(python_args=python_args)


def drained(service: Service) -> float:
    """Seconds until the inbox and the dispatch outbox are empty (everything processed)."""
    started = time.monotonic()
    service.wait_idle(timeout=600, poll=0.1)
    return round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 90 s)")
    parser.add_argument("--levels", default="1,8,32,128", help="closed-loop concurrencies")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per level")
    parser.add_argument("--rate", type=float, default=2000.0, help="open-loop webhooks/s")
    parser.add_argument("--rate-duration", type=float, default=10.0)
    parser.add_argument(
        "--worker-priority",
        choices=("idle", "nice"),
        default="idle",
        help="the split layout's worker: SCHED_IDLE, or at --worker-nice",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="niceness of the worker with --worker-priority nice",
    )
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk")
    parser.add_argument(
        "--store-trace", action="store_true", help="time the open loop's write transactions"
    )
    args = parser.parse_args(argv)
    idle = args.worker_priority == "idle"
    nice = 0 if idle else args.worker_nice
    warmup = 1.0
    if args.quick:
        args.levels, args.duration, args.rate_duration = "1,32", 1.0, 2.0
        warmup = 0.0
    levels = [int(x) for x in args.levels.split(",")]
    kind = pick_generator(args.generator, args.install_wrk)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    gen = Generator(kind, workdir)
    run_id = 1

    def paths(count: int) -> list[str]:
        nonlocal run_id
        run_id += 1
        return calls.webhook_paths(count, run_id)

    bare: dict[int, dict] = {}
    bare_paths = paths(20_000)  # the bare handler reads nothing: any request will do
    with BareServer() as server:
        if warmup:
            gen.closed(server.url, bare_paths, 8, warmup)  # warm-up, not reported
        for c in levels:
            assert server.proc is not None
            cpu0 = cpu_seconds(server.proc.pid)
            bare[c] = gen.closed(server.url, bare_paths, c, args.duration)
            used = cpu_seconds(server.proc.pid) - cpu0
            bare[c]["front_cpu_us_per_request"] = round(used / max(1, bare[c]["count"]) * 1e6)
        # The machine's own tail at the open loop's rate, in this run: what a noisy
        # neighbour (or the generator sharing the cores) adds before the service adds anything.
        bare_open = gen.open(server.url, bare_paths, args.rate, args.rate_duration)

    def warmed(service: Service) -> None:
        if warmup:
            gen.closed(service.url, paths(300), 1, warmup)
            service.wait_idle(timeout=60)

    runs: dict[str, dict[int, dict]] = {layout: {} for layout in LAYOUTS}
    open_loops: dict[str, dict] = {}
    traces: dict[str, dict[str, dict]] = {}
    for layout in LAYOUTS:
        for c in levels:
            # A fresh service per level, so no level pays for the backlog of the one before.
            with service_for(layout, nice, idle) as service:
                warmed(service)
                front0, all0 = cpu_seconds(service.pid), service.cpu_seconds()
                result = gen.closed(
                    service.url, paths(estimate(c, args.duration)), c, args.duration
                )
                front = cpu_seconds(service.pid) - front0
                result["backlog_after"] = service.stats()["inbox_pending"]
                result["drain_s"] = drained(service)
                # The process that answers webhooks, per request; and all processes' CPU
                # including the processing of everything the run sent.
                result["front_cpu_us_per_request"] = round(front / max(1, result["count"]) * 1e6)
                result["service_cpu_s"] = round(service.cpu_seconds() - all0, 2)
                runs[layout][c] = result
        trace = workdir / f"trace-{layout}" if args.store_trace else None
        if trace is not None:
            trace.mkdir()
        with service_for(layout, nice, idle, trace) as service:
            warmed(service)
            open_loop = gen.open(
                service.url,
                paths(int(args.rate * args.rate_duration) + 10),
                args.rate,
                args.rate_duration,
            )
            open_loop["backlog_after"] = service.stats()["inbox_pending"]
            open_loop["drain_s"] = drained(service)
            open_loop["rss_mib"] = round(service.rss_kib() / 1024, 1)
            open_loops[layout] = open_loop
        if trace is not None:  # written by each process as it stopped
            traces[layout] = store_trace.read(trace)

    best_bare = max(bare[c]["rps"] for c in levels)
    ratio_best = {
        layout: max(runs[layout][c]["rps"] for c in levels) / best_bare for layout in LAYOUTS
    }
    # What the rates would be if each server had a core of its own, as on a quiet machine:
    # the bare handler's CPU per request over the ingest process's (same run, same level).
    cpu_ratio = {
        c: round(
            bare[c]["front_cpu_us_per_request"]
            / max(1, runs["split"][c]["front_cpu_us_per_request"]),
            3,
        )
        for c in levels
    }
    rows = []
    for c in levels:
        b, s, o = bare[c], runs["split"][c], runs["one"][c]
        rows.append(
            [
                c,
                b["rps"],
                s["rps"],
                f"{s['rps'] / b['rps']:.2f}",
                o["rps"],
                f"{o['rps'] / b['rps']:.2f}",
                b["p99_ms"],
                s["p50_ms"],
                s["p99_ms"],
                s["failures"] + o["failures"] + b["failures"],
                b["front_cpu_us_per_request"],
                s["front_cpu_us_per_request"],
                s["drain_s"],
                o["drain_s"],
            ]
        )
    lines = [
        f"machine: {json.dumps(machine_info := machine())}",
        f"generator: {kind} (one process); split: --role ingest + --role worker"
        f" ({'SCHED_IDLE' if idle else f'nice {nice}'}) on one SQLite file; one: --role all",
        *table(
            rows,
            [
                "conc",
                "bare rps",
                "split rps",
                "ratio",
                "one rps",
                "ratio",
                "bare p99",
                "split p50",
                "split p99",
                "fail",
                "bare µs/req",
                "ingest µs/req",
                "split drain s",
                "one drain s",
            ],
        ),
        f"best service rps / best bare rps: split {ratio_best['split']:.2f} (goal ≥ 0.5),"
        f" one process {ratio_best['one']:.2f}",
        "CPU per request, bare ÷ ingest process (split): "
        + ", ".join(f"{cpu_ratio[c]:.2f} at {c}" for c in levels),
        f"open loop {args.rate:g}/s for {args.rate_duration:g} s, bare: p50"
        f" {bare_open['p50_ms']} ms, p99 {bare_open['p99_ms']} ms, max {bare_open['max_ms']} ms,"
        f" sent late {bare_open.get('sent_late')}",
        *(
            f"open loop {args.rate:g}/s for {args.rate_duration:g} s, {layout}:"
            f" p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms, max {o['max_ms']} ms,"
            f" failures {o['failures']}, sent late {o.get('sent_late')}, drained in"
            f" {o['drain_s']} s (goal p99 < 10 ms)"
            for layout, o in open_loops.items()
        ),
        *(
            f"write transactions, {layout}, {role}: {t['transactions']}"
            f" ({t['writes_per_transaction']} writes each), p50 {t['p50_ms']} ms,"
            f" p90 {t['p90_ms']} ms, p99 {t['p99_ms']} ms, max {t['max_ms']} ms,"
            f" {t['total_s']} s in all"
            for layout, by_role in traces.items()
            for role, t in by_role.items()
        ),
    ]
    split_open = open_loops["split"]
    report(
        "ingest",
        args,
        {
            "machine": machine_info,
            "generator": kind,
            "levels": levels,
            "worker_priority": "idle" if idle else f"nice {nice}",
            "bare": {str(c): bare[c] for c in levels},
            # The layout the goal is about: the worker in another process.
            "service": {str(c): runs["split"][c] for c in levels},
            "service_one_process": {str(c): runs["one"][c] for c in levels},
            "ratio": {str(c): round(runs["split"][c]["rps"] / bare[c]["rps"], 3) for c in levels},
            "ratio_one_process": {
                str(c): round(runs["one"][c]["rps"] / bare[c]["rps"], 3) for c in levels
            },
            "ratio_best": round(ratio_best["split"], 3),
            "cpu_ratio": {str(c): cpu_ratio[c] for c in levels},
            "ratio_best_one_process": round(ratio_best["one"], 3),
            "open_loop": split_open,
            "open_loop_bare": bare_open,
            "open_loop_one_process": open_loops["one"],
            "store_trace": traces,
            "goals": {
                "ingest_half_of_bare": ratio_best["split"] >= 0.5,
                "p99_under_10ms_at_rate": split_open["p99_ms"] < 10 and split_open["failures"] == 0,
            },
        },
        lines,
    )


if __name__ == "__main__":
    main()
