"""Memory: resident memory with many calls open at once, and over a steady run.

    python -m bench.memory [--quick] [--config stub|usedesk] [--open 10000] [--steady-seconds 90]

``--config stub`` (default): the embedded defaults' ``amocrm_stub`` integration (no network),
notifications off.
``--config usedesk``: the Usedesk integration against the sandbox (in this process) at its
default limit (100/min) with agent notifications on: the realistic worst case, where every
ringing call waits for the CRM. (No steady run: the limit allows ~0.4 calls/s.)

1. Open calls. The service (own process) gets the ring event of ``--open`` distinct inbound
   calls (by ``bench.loadgen``, another process, 32 in flight) and no hang-ups; once its
   inbox is drained, its RSS is read (VmRSS) and compared with the RSS before.
2. Steady run (stub), the soak. Whole calls (rings, answer, hang-up) at ``--rate`` calls/s
   for ``--steady-seconds`` with retention ON and set short (``--retention-seconds``: calls
   kept that long, processed webhooks two thirds of it, pruned every sixth of it), so that
   pruning really runs within the run; RSS and the database's size (file and WAL) read every
   5 s. Reported for both: start, middle, end, and the slope of a least-squares line through
   the samples of the second half (per minute): flat after warm-up is near 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import calls as calls_mod
from .common import (
    ACCOUNT,
    ROOT,
    STUB_INTEGRATION,
    Service,
    machine,
    report,
    rss_kib,
    usedesk_integration,
)
from .crm import TimedSandbox

GOAL_BYTES_PER_CALL = 2048
DAY = 86_400.0


def retention_table(seconds: float) -> str:
    """A ``[retention]`` table that keeps calls ``seconds`` and prunes every sixth of it."""
    return (
        "[retention]\n"
        f"calls_days = {seconds / DAY!r}\n"
        f"inbox_days = {seconds * 2 / 3 / DAY!r}\n"
        f"interval_minutes = {seconds / 6 / 60!r}\n"
    )


def db_bytes(folder: Path) -> int:
    """The SQLite store's size on disk: the file and its write-ahead log."""
    return sum(
        (folder / name).stat().st_size
        for name in ("connector.db", "connector.db-wal")
        if (folder / name).exists()
    )


def send_paths(base: str, paths: list[str], concurrency: int = 32) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(paths) + "\n")
    # Closed loop for exactly as long as it takes: each path once (loadgen stops on time, so
    # give it a generous duration and enough distinct paths; a repeat would be a duplicate).
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--base",
            base,
            "--paths",
            f.name,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(len(paths) / 400 + 5),
            "--warmup",
            "0",
            "--once",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=600,
    ).stdout
    Path(f.name).unlink()
    return json.loads(out.strip().splitlines()[-1])


def open_calls(service: Service, count: int) -> dict:
    service.wait_idle(timeout=60)
    time.sleep(1.0)
    before = service.rss_kib()
    began = time.monotonic()
    sent = send_paths(service.url, calls_mod.ring_paths(count, run=31))
    sending = time.monotonic() - began
    stats = service.wait_until(lambda s: s.get("inbox_pending") == 0, timeout=300)
    processed = time.monotonic() - began
    time.sleep(2.0)
    after = service.rss_kib()
    return {
        "send_seconds": round(sending, 1),
        "processed_seconds": round(processed, 1),
        "open_calls": stats.get("calls_open"),
        "webhooks_sent": sent["count"],
        "failures": sent["failures"],
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "growth_mib": round((after - before) / 1024, 1),
        "bytes_per_open_call": round((after - before) * 1024 / max(1, count)),
        "dispatches_pending": stats.get("dispatches_pending"),
    }


def open_calls_usedesk(count: int) -> dict:
    async def body() -> dict:
        sandbox = TimedSandbox()
        async with sandbox.serve() as base_url:
            service = Service(
                usedesk_integration(base_url, sandbox.token, notifications=True),
                account_extra='agents = { "101" = "bench-agent-101-token-000" }',
            )
            await asyncio.to_thread(service.start)
            try:
                result = await asyncio.to_thread(open_calls, service, count)
                result["usedesk_requests_meanwhile"] = len(sandbox.log)
                return result
            finally:
                await asyncio.to_thread(service.stop)

    return asyncio.run(body())


def steady(seconds: float, rate: float, retention_seconds: float) -> dict:
    samples: list[tuple[float, int]] = []
    sizes: list[tuple[float, int]] = []
    with Service(STUB_INTEGRATION, extra=retention_table(retention_seconds)) as service:

        async def sample_while_sending() -> int:
            pending = calls_mod.of_kind("new_inbound", int(rate * seconds), run=33)
            sender = asyncio.create_task(
                calls_mod.send_at_rate(
                    service.webhook, pending, rate, ring_seconds=0.3, talk_seconds=1.0
                )
            )
            began = time.monotonic()
            while not sender.done():
                samples.append((time.monotonic() - began, rss_kib(service.pid)))
                sizes.append((samples[-1][0], db_bytes(service.dir) // 1024))
                await asyncio.wait([sender], timeout=5.0)
            sent = await sender
            samples.append((time.monotonic() - began, rss_kib(service.pid)))
            sizes.append((samples[-1][0], db_bytes(service.dir) // 1024))
            return sum(s.failures for s in sent)

        failures = asyncio.run(sample_while_sending())
        stats = service.wait_idle(timeout=60)
    mid, size_mid = samples[len(samples) // 2], sizes[len(sizes) // 2]
    return {
        "seconds": round(samples[-1][0], 1),
        "calls_per_s": rate,
        "retention_seconds": retention_seconds,
        "calls_sent": int(rate * seconds),
        "calls_kept": stats.get("calls_total"),
        "failures": failures,
        "rss_start_mib": round(samples[0][1] / 1024, 1),
        "rss_middle_mib": round(mid[1] / 1024, 1),
        "rss_end_mib": round(samples[-1][1] / 1024, 1),
        "second_half_slope_kib_per_min": round(_second_half_slope(samples), 1),
        "db_start_mib": round(sizes[0][1] / 1024, 1),
        "db_middle_mib": round(size_mid[1] / 1024, 1),
        "db_end_mib": round(sizes[-1][1] / 1024, 1),
        "db_second_half_slope_kib_per_min": round(_second_half_slope(sizes), 1),
        "samples": [(round(t, 1), round(r / 1024, 1)) for t, r in samples],
        "db_samples": [(round(t, 1), round(k / 1024, 1)) for t, k in sizes],
    }


def _second_half_slope(points: list[tuple[float, int]]) -> float:
    """Per minute, through the samples of the run's second half (after warm-up)."""
    half = [p for p in points if p[0] >= points[-1][0] / 2]
    return _slope(half) * 60 if len(half) >= 2 else 0.0


def _slope(points: list[tuple[float, int]]) -> float:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--open", type=int, default=10_000, help="calls left open")
    parser.add_argument("--steady-seconds", type=float, default=90.0)
    parser.add_argument("--rate", type=float, default=10.0, help="steady run: calls/s")
    parser.add_argument(
        "--retention-seconds",
        type=float,
        default=180.0,
        help="steady run: keep finished calls this long (short, so pruning runs in the run)",
    )
    parser.add_argument("--config", choices=("stub", "usedesk"), default="stub")
    args = parser.parse_args(argv)
    count = min(args.open, 500) if args.quick else args.open
    lines = [f"{count} calls open (ring events only, account {ACCOUNT}):"]
    result: dict = {"config": args.config, "open_calls": count}
    if args.config == "usedesk":
        usedesk = open_calls_usedesk(count)
        lines.append(
            f"  usedesk + notifications: RSS {usedesk['rss_before_mib']} ->"
            f" {usedesk['rss_after_mib']} MiB, {usedesk['bytes_per_open_call']} bytes per open"
            f" call (goal < {GOAL_BYTES_PER_CALL}); {usedesk['dispatches_pending']} hook calls"
            f" still waiting for the CRM; the ring events took {usedesk['processed_seconds']} s"
            " to process"
        )
        result["open"] = usedesk
        result["goals"] = {
            "under_2kb_per_open_call": usedesk["bytes_per_open_call"] < GOAL_BYTES_PER_CALL
        }
    else:
        with Service(STUB_INTEGRATION) as service:
            stub = open_calls(service, count)
        run = steady(4.0 if args.quick else args.steady_seconds, args.rate, args.retention_seconds)
        lines += [
            f"  stub (defaults): RSS {stub['rss_before_mib']} -> {stub['rss_after_mib']} MiB,"
            f" {stub['bytes_per_open_call']} bytes per open call (goal < {GOAL_BYTES_PER_CALL})",
            f"steady {run['calls_per_s']} calls/s for {run['seconds']} s"
            f" ({run['calls_sent']} calls sent, {run['calls_kept']} kept), retention ON and short"
            f" for the soak: calls kept {run['retention_seconds']:g} s, pruned every"
            f" {run['retention_seconds'] / 6:g} s",
            f"  RSS start {run['rss_start_mib']}, middle {run['rss_middle_mib']},"
            f" end {run['rss_end_mib']} MiB; second-half slope"
            f" {run['second_half_slope_kib_per_min']} KiB/min",
            f"  database start {run['db_start_mib']}, middle {run['db_middle_mib']},"
            f" end {run['db_end_mib']} MiB; second-half slope"
            f" {run['db_second_half_slope_kib_per_min']} KiB/min",
        ]
        result["open"] = stub
        result["steady"] = run
        result["goals"] = {
            "under_2kb_per_open_call": stub["bytes_per_open_call"] < GOAL_BYTES_PER_CALL,
            "flat_steady": abs(run["second_half_slope_kib_per_min"]) < 512,
            "flat_database": abs(run["db_second_half_slope_kib_per_min"]) < 512,
        }
    result["machine"] = machine()
    report("memory", args, result, lines)


if __name__ == "__main__":
    main()
