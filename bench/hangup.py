"""Hang-up to done: from the final hang-up webhook to the ticket assigned and commented.

    python -m bench.hangup [--quick] [--mode realistic|limit] [--calls N] [--rate R]

The service runs as its own process with the Usedesk integration pointed at the sandbox,
which runs in this process with ``latency_ms`` (default 30) added to every API request.
Calls of the realistic mix (``bench.calls.MIX``) start at a fixed rate (open loop); each
sends its rings and answer over 0.3 s, talks 1.5 s, then hangs up. For each call the
bench reads two times on one monotonic clock: just before the hang-up request was sent, and
when the sandbox had written the call's comment (the last step; the owner is set before it).

Modes:
  realistic  2 calls/s, 200 calls (100 s), rate limit raised to 1000/min, burst 100, so the
             limiter is not what is measured.
  limit      the plugin's default limit (100 requests/min, 5/s) and calls offered at exactly
             that limit: calls/s = 100 / 60 / (requests per call of the mix, measured by a
             short calibration run first, plus the one-off requests of a service start -
             the agent list, the search probe - spread over the run's calls, so the run as
             a whole offers the limit, not 5 % more). 40 calls (~100 s).

Also reported: Usedesk requests per call of the run, by kind (see ``bench.requests_per_call``).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from . import calls as calls_mod
from .common import latency_summary, machine, ms, report, table
from .crm import attribute, comment_done, requests_by_kind, usedesk_service, wait_drained


async def calibrate() -> dict:
    """A quick run of the mix without limits: how many Usedesk requests a call costs."""
    return await run_calls(
        10,
        10.0,
        per_minute=1000,
        burst=100,
        latency_ms=0,
        run=8,
        ring_seconds=0.1,
        talk_seconds=0.5,
    )


async def run_calls(
    n: int,
    rate: float,
    *,
    per_minute: int,
    burst: int,
    latency_ms: float,
    run: int,
    ring_seconds: float = 0.3,
    talk_seconds: float = 1.5,
    settle_timeout: float = 120.0,
) -> dict:
    mix = calls_mod.mix(n, run)
    async with usedesk_service(mix, per_minute=per_minute, burst=burst, latency_ms=latency_ms) as (
        sandbox,
        service,
    ):
        began = time.monotonic()
        sent = await calls_mod.send_at_rate(
            service.webhook, mix, rate, ring_seconds=ring_seconds, talk_seconds=talk_seconds
        )
        sending = time.monotonic() - began
        await wait_drained(service.url, settle_timeout)
        finished = time.monotonic() - began
        rss = service.rss_kib()
    attribution = attribute(sandbox, mix)
    latencies: dict[str, list[float]] = {}
    missing = 0
    for s in sent:
        done = comment_done(sandbox, attribution, s.call.call_id)
        if done is None:
            missing += 1
            continue
        latencies.setdefault(s.call.kind, []).append(done - s.hangup_sent)
    every = [x for v in latencies.values() for x in v]
    ack = [s.hangup_acked - s.hangup_sent for s in sent]
    return {
        "calls": n,
        "rate_calls_per_s": round(rate, 3),
        "per_minute": per_minute,
        "burst": burst,
        "latency_ms": latency_ms,
        "send_seconds": round(sending, 1),
        "total_seconds": round(finished, 1),
        "webhook_failures": sum(s.failures for s in sent),
        "calls_without_comment": missing,
        "hangup_to_done": latency_summary(every),
        "hangup_to_done_by_kind": {k: latency_summary(v) for k, v in sorted(latencies.items())},
        "hangup_ack_p99_ms": ms(sorted(ack)[int(0.99 * (len(ack) - 1))]) if ack else 0.0,
        "usedesk_requests": requests_by_kind(mix, attribution),
        "sandbox_max_per_60s": sandbox.max_requests_in_window(60.0),
        "sandbox_max_per_1s": sandbox.max_requests_in_window(1.0),
        "service_rss_mib": round(rss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hangup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--mode", choices=("realistic", "limit"), default="realistic")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="calls per second")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.mode == "realistic":
        per_minute, burst = 1000, 100
        n = args.calls or (10 if args.quick else 200)
        rate = args.rate or 2.0
        calibration = None
    else:
        per_minute, burst = 100, 5
        n = args.calls or (6 if args.quick else 40)
        calibration = None
        if args.rate:
            rate = args.rate
        else:
            calibration = asyncio.run(calibrate())
            measured = calibration["usedesk_requests"]["all"]
            per_call = measured["mean"] + measured["shared_requests"] / n
            rate = per_minute / 60 / per_call
    result = asyncio.run(
        run_calls(
            n,
            rate,
            per_minute=per_minute,
            burst=burst,
            latency_ms=args.latency_ms,
            run=9 if args.mode == "limit" else 7,
        )
    )
    if calibration is not None:
        result["calibration_requests_per_call"] = calibration["usedesk_requests"]["all"]["mean"]
    h = result["hangup_to_done"]
    rows = [
        [kind, v["n"], v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"]]
        for kind, v in result["hangup_to_done_by_kind"].items()
    ]
    rows.append(["all", h["n"], h["p50_ms"], h["p90_ms"], h["p99_ms"], h["max_ms"]])
    req = result["usedesk_requests"]
    lines = [
        f"mode {args.mode}: {n} calls at {rate:.3f} calls/s, Usedesk limit {per_minute}/min,"
        f" burst {burst}/s, sandbox latency {args.latency_ms:g} ms per request",
        "hang-up sent -> ticket assigned and comment written (ms):",
        *table(rows, ["kind", "n", "p50", "p90", "p99", "max"]),
        f"calls without a comment: {result['calls_without_comment']},"
        f" webhook failures: {result['webhook_failures']}",
        f"Usedesk requests per call (mean): {req['all']['mean']}"
        + "".join(f", {k} {v['mean']}" for k, v in req.items() if k != "all"),
        f"sandbox saw at most {result['sandbox_max_per_60s']} requests in 60 s and"
        f" {result['sandbox_max_per_1s']} in 1 s (limit {per_minute}/min, {burst}/s)",
        f"run took {result['total_seconds']} s; goal: p99 < 500 ms at 30 ms CRM latency",
    ]
    result["machine"] = machine()
    result["mode"] = args.mode
    result["goals"] = {"hangup_p99_under_500ms": h["p99_ms"] < 500 and h["n"] == n}
    report("hangup", args, result, lines)


if __name__ == "__main__":
    main()
