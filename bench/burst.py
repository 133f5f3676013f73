"""A burst of new calls at the Usedesk rate limit: time to drain, hook timeouts, requests.

    python -m bench.burst [--quick] [--calls 40] [--limit 100] [--outage SECONDS]

The service runs as its own process with the Usedesk integration at ``--limit`` requests per
minute (burst 5/s, the plugin's defaults) pointed at the sandbox, which runs in this process
with ``--latency-ms`` (default 30) added to every API request. ``--calls`` calls from numbers
Usedesk has never seen (5 requests each: search, create client, create ticket, set the owner,
comment) all start within a second; each rings 0.3 s, talks 1.5 s, hangs up.

Reported: seconds from the first webhook until the last call's comment was written, next to
what the limit needs for the requests made (an idle limiter granting them as fast as its
windows allow); hook timeouts, other failed hook calls and breaker trips (from the service's
log); Usedesk requests by kind (each call's exactly once when nothing was repeated); the
sandbox's busiest 60 s. Goal (issue 11): 40 calls at 100/min drain within 180 s with zero hook
timeouts (after an outage: within 180 s of Usedesk coming back).

``--outage S``: Usedesk answers every request with HTTP 503 for the first S seconds, then is
healthy again; the drain is then also timed from the moment it came back.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from connector_core.clock import FakeClock
from plugins.usedesk.ratelimit import SlidingWindowLimiter

from . import calls as calls_mod
from .common import machine, report
from .crm import attribute, comment_done, requests_by_kind, usedesk_service, wait_drained

BURST = 5
MARGIN = 0.25  # the Usedesk runtime's window margin (plugins/usedesk/flow.py)


async def limit_needs(requests: int, per_minute: int) -> float:
    """Seconds an idle limiter takes to grant ``requests`` (first grant to last)."""
    clock = FakeClock(0.0)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    limiter = SlidingWindowLimiter(
        per_minute, burst_per_second=BURST, clock=clock, sleep=sleep, margin=MARGIN
    )
    for _ in range(requests):
        await limiter.acquire()
    return clock.now()


def log_counts(text: str) -> dict[str, int]:
    """Failed hook calls and breaker trips, from the service's WARNING log."""
    lines = text.splitlines()
    failed = [line for line in lines if " failed (attempt " in line]
    return {
        "hook_timeouts": sum("hook timeout" in line for line in failed),
        "other_failures": sum("hook timeout" not in line for line in failed),
        "breaker_trips": sum("circuit open for" in line for line in lines),
    }


async def run_burst(
    n: int, per_minute: int, latency_ms: float, outage: float, settle_timeout: float
) -> dict:
    burst = calls_mod.of_kind("new_inbound", n, run=31)
    async with usedesk_service(
        burst, per_minute=per_minute, burst=BURST, latency_ms=latency_ms
    ) as (sandbox, service):
        await asyncio.sleep(1.0)  # the start-up authorisation check
        sandbox.log.clear()
        sandbox.rate.clear()
        if outage:
            sandbox.set_faults(mode="500", status=503, latency_ms=latency_ms)
        began = time.monotonic()
        up = began
        sending = asyncio.create_task(
            calls_mod.send_at_rate(
                service.webhook, burst, n / 1.0, ring_seconds=0.3, talk_seconds=1.5
            )
        )
        if outage:
            await asyncio.sleep(outage)
            sandbox.set_faults(mode="none", latency_ms=latency_ms)
            up = time.monotonic()
        sent = await sending
        await wait_drained(service.url, settle_timeout)
        logged = log_counts(service.log_path.read_text(errors="replace"))
    attribution = attribute(sandbox, burst)
    done = [comment_done(sandbox, attribution, c.call_id) for c in burst]
    finished = [t for t in done if t is not None]
    last = max(finished) if finished else time.monotonic()
    answered = [r for r in sandbox.requests() if r.fault is None]
    kinds = Counter(r.path for r in answered)
    searches = Counter(r.params.get("query") for r in answered if r.path == "/clients")
    needs = await limit_needs(len(answered), per_minute)
    return {
        "calls": n,
        "per_minute": per_minute,
        "burst_per_second": BURST,
        "latency_ms": latency_ms,
        "outage_seconds": outage,
        "drain_seconds": round(last - began, 1),
        "drain_after_outage_seconds": round(last - up, 1),
        "limit_needs_seconds": round(needs, 1),
        "drain_over_limit_needs": round((last - up) / needs, 2) if needs else 0.0,
        "calls_without_comment": len(done) - len(finished),
        "webhook_failures": sum(s.failures for s in sent),
        **logged,
        "usedesk_requests": len(answered),
        "requests_refused_in_outage": len(sandbox.requests()) - len(answered),
        "requests_by_path": dict(sorted(kinds.items())),
        "numbers_searched_twice": sum(1 for v in searches.values() if v > 1),
        "usedesk_requests_per_call": requests_by_kind(burst, attribution)["all"]["mean"],
        "sandbox_max_per_60s": sandbox.max_requests_in_window(60.0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.burst",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 20 s)")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--limit", type=int, default=100, help="Usedesk requests per minute")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=0.0, help="seconds Usedesk is down")
    args = parser.parse_args(argv)
    n = args.calls or (6 if args.quick else 40)
    result = asyncio.run(run_burst(n, args.limit, args.latency_ms, args.outage, 900.0))
    after = f" ({result['drain_after_outage_seconds']} s after Usedesk came back)"
    lines = [
        f"{n} new calls at once, Usedesk limit {args.limit}/min, burst {BURST}/s,"
        f" sandbox latency {args.latency_ms:g} ms"
        + (f", Usedesk down (503) for the first {args.outage:g} s" if args.outage else ""),
        f"drained in {result['drain_seconds']} s"
        + (after if args.outage else "")
        + f"; the limit needs {result['limit_needs_seconds']} s for the"
        f" {result['usedesk_requests']} requests made ({result['drain_over_limit_needs']}x)",
        f"hook timeouts: {result['hook_timeouts']}, other failed hook calls:"
        f" {result['other_failures']}, breaker trips: {result['breaker_trips']}",
        f"Usedesk requests: {result['requests_by_path']};"
        f" numbers searched twice: {result['numbers_searched_twice']};"
        f" refused during the outage: {result['requests_refused_in_outage']}",
        f"calls without a comment: {result['calls_without_comment']};"
        f" sandbox's busiest 60 s: {result['sandbox_max_per_60s']} (limit {args.limit})",
        "goal: 40 calls at 100/min drain within 180 s (of Usedesk being up) with zero hook"
        " timeouts",
    ]
    result["machine"] = machine()
    # After an outage the goal holds from the moment Usedesk is back.
    result["goals"] = {
        "drain_within_180s_no_hook_timeouts": result["drain_after_outage_seconds"] <= 180
        and result["hook_timeouts"] == 0
        and result["calls_without_comment"] == 0
    }
    report("burst", args, result, lines)


if __name__ == "__main__":
    main()
