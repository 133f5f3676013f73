"""Ingest: webhooks per second and time to ``{"success": true}``, service vs bare aiohttp.

    python -m bench.ingest [--quick] [--levels 1,8,32,128] [--duration 4] [--generator auto]

Three processes: the server under test (the real service, ``python -m connector_core serve``
with the durable SQLite store and logging at WARNING; or ``bench.bare_server``, an aiohttp
handler that only answers ``{"success": true}``: the ceiling on this machine), and the load
generator. The generator is ``wrk`` (Debian package ``wrk``; ``--generator auto`` uses it when
it is installed, ``--install-wrk`` installs it with apt-get) or ``bench.loadgen`` (aiohttp).
Closed loop at each concurrency: that many requests always in flight, keep-alive connections.
Then an open loop at a fixed rate (``--rate``, default 500/s) against the service, with the
aiohttp generator (wrk has no fixed-rate mode); its latency counts from when each request was
due.

The requests are whole calls (rings, answer, transfer, hang-ups) with distinct call ids, as
GET query strings the way Sipuni sends them; the service's worker processes them as they come
(its CPU use is part of the service's cost). Between runs the bench waits for the service's
inbox to drain and reports how fast it drained.
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

from . import calls
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
            "note: wrk not found (apt-get install wrk); using the aiohttp generator",
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--levels", default="1,8,32,128", help="closed-loop concurrencies")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per level")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop webhooks/s")
    parser.add_argument("--rate-duration", type=float, default=10.0)
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk")
    args = parser.parse_args(argv)
    warmup, drain_window = 1.0, 2.0
    if args.quick:
        args.levels, args.duration, args.rate_duration = "1,32", 1.0, 2.0
        warmup, drain_window = 0.0, 0.5
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
            bare[c] = gen.closed(server.url, bare_paths, c, args.duration)

    service_runs: dict[int, dict] = {}
    for c in levels:
        # A fresh service per level, so no level pays for the backlog of the one before.
        with Service() as service:
            if warmup:
                gen.closed(service.url, paths(300), 1, warmup)
                service.wait_idle(timeout=60)
            cpu0 = cpu_seconds(service.pid)
            result = gen.closed(service.url, paths(estimate(c, args.duration)), c, args.duration)
            used = cpu_seconds(service.pid) - cpu0
            result["service_cpu_s"] = round(used, 2)
            result["service_cpu_us_per_request"] = round(used / max(1, result["count"]) * 1e6)
            # The worker's pace on the backlog the run left (no webhooks coming in).
            backlog = service.stats()["inbox_pending"]
            time.sleep(drain_window)
            left = service.stats()["inbox_pending"]
            result["backlog_after"] = backlog
            # None: the worker had caught up within the window (the pace is then unknown).
            result["drain_events_per_s"] = (
                round((backlog - left) / drain_window, 1) if left else None
            )
            service_runs[c] = result
    with Service() as service:
        if warmup:
            gen.closed(service.url, paths(300), 1, warmup)
            service.wait_idle(timeout=60)
        open_loop = gen.open(
            service.url,
            paths(int(args.rate * args.rate_duration) + 10),
            args.rate,
            args.rate_duration,
        )
        open_loop["backlog_after"] = service.stats()["inbox_pending"]
        rss = service.rss_kib()

    rows = []
    for c in levels:
        s, b = service_runs[c], bare[c]
        rows.append(
            [
                c,
                b["rps"],
                s["rps"],
                f"{s['rps'] / b['rps']:.2f}",
                b["p50_ms"],
                b["p99_ms"],
                s["p50_ms"],
                s["p99_ms"],
                s["failures"] + b["failures"],
                s["backlog_after"],
                s["drain_events_per_s"] or "caught up",
            ]
        )
    ratio_best = max(service_runs[c]["rps"] for c in levels) / max(bare[c]["rps"] for c in levels)
    lines = [
        f"machine: {json.dumps(machine_info := machine())}",
        f"generator: {kind} (one process), servers: each its own process",
        *table(
            rows,
            [
                "conc",
                "bare rps",
                "svc rps",
                "ratio",
                "bare p50",
                "bare p99",
                "svc p50",
                "svc p99",
                "fail",
                "backlog",
                "drain ev/s",
            ],
        ),
        f"best service rps / best bare rps: {ratio_best:.2f} (goal ≥ 0.5)",
        f"open loop {args.rate:g}/s for {args.rate_duration:g} s: p50 {open_loop['p50_ms']} ms,"
        f" p99 {open_loop['p99_ms']} ms, max {open_loop['max_ms']} ms,"
        f" failures {open_loop['failures']} (goal p99 < 10 ms)",
        f"service RSS after the run: {rss / 1024:.1f} MiB",
    ]
    report(
        "ingest",
        args,
        {
            "machine": machine_info,
            "generator": kind,
            "levels": levels,
            "bare": {str(c): bare[c] for c in levels},
            "service": {str(c): service_runs[c] for c in levels},
            "ratio": {str(c): round(service_runs[c]["rps"] / bare[c]["rps"], 3) for c in levels},
            "ratio_best": round(ratio_best, 3),
            "open_loop": open_loop,
            "goals": {
                "ingest_half_of_bare": ratio_best >= 0.5,
                "p99_under_10ms_at_rate": open_loop["p99_ms"] < 10 and open_loop["failures"] == 0,
            },
        },
        lines,
    )


if __name__ == "__main__":
    main()
