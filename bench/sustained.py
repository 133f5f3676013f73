"""Sustained calls per second end to end, under the configured Usedesk limit.

    python -m bench.sustained [--quick] [--mode usedesk|core] [--limit 100] [--seconds 80]

``usedesk``: the service (own process) with the Usedesk integration at ``--limit`` requests
per minute (burst: the plugin's default 5/s at 100/min, 100/s at 1000/min), the sandbox in
this process with 30 ms latency. Calls of the realistic mix are offered at 1.25× what the
limit allows (limit / 60 / requests per call, measured by a calibration run first) for
``--seconds``; a call is done when its comment is written. Sustained = comments written
per second over the last 60 s of the offered period (the limiter is saturated by then). The
sandbox's own count checks that no 60 s window saw more than the limit, no 1 s window
more than the burst. The backlog left at the end is reported, not waited for.

``core``: no CRM in the way: the ``amocrm_stub`` plugin (no network), offered calls/s in
steps (``--steps``, 8 s each); after each step the bench measures how long the service needs
to finish everything (inbox and dispatch outbox empty). A step is sustained if the service is
done within 2 s of the last webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from . import calls as calls_mod
from .common import STUB_INTEGRATION, Service, machine, report, table
from .crm import attribute, requests_by_kind, stats, usedesk_service, wait_for
from .hangup import calibrate


async def usedesk(limit: int, seconds: float, overload: float, latency_ms: float) -> dict:
    burst = 5 if limit <= 100 else 100
    calibration = await calibrate()
    per_call = calibration["usedesk_requests"]["all"]["mean"]
    capacity = limit / 60 / per_call
    rate = capacity * overload
    n = max(1, int(rate * seconds))
    mix = calls_mod.mix(n, run=11)
    async with usedesk_service(mix, per_minute=limit, burst=burst, latency_ms=latency_ms) as (
        sandbox,
        service,
    ):
        began = time.monotonic()
        await calls_mod.send_at_rate(service.webhook, mix, rate, ring_seconds=0.3, talk_seconds=1.5)
        ended = time.monotonic()
        async with aiohttp.ClientSession() as session:
            left = await stats(session, service.url)
    attribution = attribute(sandbox, mix)
    done = sorted(
        sandbox.done_at[e.seq]
        for entries in attribution.by_call.values()
        for e in entries
        if e.path == "/create/comment" and e.seq in sandbox.done_at
    )
    window = min(60.0, ended - began)
    in_window = [t for t in done if ended - window <= t <= ended]
    sustained = len(in_window) / window
    return {
        "limit_per_minute": limit,
        "burst_per_second": burst,
        "latency_ms": latency_ms,
        "requests_per_call": per_call,
        "limit_allows_calls_per_s": round(capacity, 3),
        "offered_calls_per_s": round(rate, 3),
        "offered_seconds": round(ended - began, 1),
        "calls_offered": n,
        "calls_done_in_period": len([t for t in done if t <= ended]),
        "sustained_calls_per_s": round(sustained, 3),
        "sustained_calls_per_minute": round(sustained * 60, 1),
        "window_s": round(window, 1),
        "sandbox_max_per_60s": sandbox.max_requests_in_window(60.0),
        "sandbox_max_per_1s": sandbox.max_requests_in_window(1.0),
        "within_limit": sandbox.max_requests_in_window(60.0) <= limit
        and sandbox.max_requests_in_window(1.0) <= burst,
        "backlog_at_end": {k: left.get(k) for k in ("inbox_pending", "dispatches_pending")},
        "usedesk_requests_mean": requests_by_kind(mix, attribution)["all"]["mean"],
    }


async def core(steps: list[float], seconds: float) -> dict:
    service = Service(STUB_INTEGRATION)
    await asyncio.to_thread(service.start)
    results = []
    try:
        async with aiohttp.ClientSession() as session:
            for k, rate in enumerate(steps):
                batch = calls_mod.of_kind("new_inbound", int(rate * seconds), run=20 + k)
                cpu0 = _cpu(service.pid)
                began = time.monotonic()
                sent = await calls_mod.send_at_rate(
                    service.webhook, batch, rate, ring_seconds=0.2, talk_seconds=0.5
                )
                last = max(s.hangup_acked for s in sent)
                at_end = await stats(session, service.url)
                await wait_for(
                    session,
                    service.url,
                    lambda s: s.get("inbox_pending") == 0 and s.get("dispatches_pending") == 0,
                    120,
                )
                idle = time.monotonic()
                elapsed = idle - began
                results.append(
                    {
                        "offered_calls_per_s": rate,
                        "calls": len(batch),
                        "webhooks_per_s": round(
                            sum(len(c.scenario.events) for c in batch) / (last - began), 1
                        ),
                        "failures": sum(s.failures for s in sent),
                        "backlog_at_last_webhook": at_end.get("inbox_pending", 0)
                        + at_end.get("dispatches_pending", 0),
                        "done_after_last_webhook_s": round(idle - last, 2),
                        "calls_per_s_end_to_end": round(len(batch) / elapsed, 1),
                        "service_cpu_share": round((_cpu(service.pid) - cpu0) / elapsed, 2),
                        "sustained": idle - last <= 2.0,
                    }
                )
    finally:
        await asyncio.to_thread(service.stop)
    best = max((r["offered_calls_per_s"] for r in results if r["sustained"]), default=0)
    return {"steps": results, "sustained_calls_per_s": best}


def _cpu(pid: int) -> float:
    from .common import cpu_seconds

    return cpu_seconds(pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sustained",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--mode", choices=("usedesk", "core"), default="usedesk")
    parser.add_argument("--limit", type=int, default=100, help="Usedesk requests per minute")
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--overload", type=float, default=1.25)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--steps", default="20,40,80,120,160", help="core mode: calls per second")
    args = parser.parse_args(argv)
    if args.mode == "usedesk":
        seconds = 6.0 if args.quick else args.seconds
        result = asyncio.run(usedesk(args.limit, seconds, args.overload, args.latency_ms))
        lines = [
            f"Usedesk limit {result['limit_per_minute']}/min, burst {result['burst_per_second']}/s,"
            f" {result['requests_per_call']} requests per call of the mix"
            f" -> the limit allows {result['limit_allows_calls_per_s']} calls/s",
            f"offered {result['offered_calls_per_s']} calls/s for {result['offered_seconds']} s"
            f" ({result['calls_offered']} calls)",
            f"sustained: {result['sustained_calls_per_s']} calls/s"
            f" ({result['sustained_calls_per_minute']}/min) over the last {result['window_s']} s",
            f"sandbox max {result['sandbox_max_per_60s']} requests in any 60 s,"
            f" {result['sandbox_max_per_1s']} in any 1 s: within the limit: "
            f"{result['within_limit']}",
            f"backlog left when the offer stopped: {result['backlog_at_end']}",
        ]
    else:
        steps = [5.0, 20.0] if args.quick else [float(x) for x in args.steps.split(",")]
        result = asyncio.run(core(steps, 3.0 if args.quick else 8.0))
        rows = [
            [
                r["offered_calls_per_s"],
                r["calls"],
                r["webhooks_per_s"],
                r["failures"],
                r["backlog_at_last_webhook"],
                r["done_after_last_webhook_s"],
                r["service_cpu_share"],
                r["sustained"],
            ]
            for r in result["steps"]
        ]
        lines = [
            "core only (amocrm_stub, no network): calls of 4 webhooks each",
            *table(
                rows,
                [
                    "calls/s",
                    "calls",
                    "webhooks/s",
                    "fail",
                    "backlog",
                    "done after s",
                    "cpu",
                    "sustained",
                ],
            ),
            f"sustained end to end: {result['sustained_calls_per_s']} calls/s",
        ]
    result["machine"] = machine()
    result["mode"] = args.mode
    report("sustained", args, result, lines)


if __name__ == "__main__":
    main()
