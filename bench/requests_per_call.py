"""Usedesk API requests per call, by kind of call and on average over a realistic mix.

    python -m bench.requests_per_call [--quick] [--calls N]

The service (its own process) works against the sandbox (in this process); every API request
the sandbox logs is assigned to the call it was made for, through the phone number, client,
ticket or call id it carries (``bench.crm.attribute``). Two phases:

1. the mix (``bench.calls.MIX``): new callers answered, repeat callers whom Usedesk knows
   with an open ticket (seeded; the connector has not seen them), missed calls from new
   numbers, transfers, outbound calls to new numbers;
2. every answered inbound caller of phase 1 calls again (``repeat_known``): Usedesk has the
   client and the open ticket phase 1 made, and the connector remembers the client.

``/users`` (the agent list, read for assignments and cached ten minutes, and read by the
authorisation check every five) and the one ``/clients`` search for ``%`` that asks whether
the search takes wildcards belong to no call: they are reported apart. The limiter is
set out of the way (1000/min) and the sandbox answers at once; neither changes the counts.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from . import calls as calls_mod
from .common import Service, machine, report, table, usedesk_integration
from .crm import TimedSandbox, attribute, requests_by_kind, wait_for

GOAL_MEAN, GOAL_REPEAT = 3.0, 2.0


async def measure(n: int, rate: float) -> dict:
    first = calls_mod.mix(n, run=5)
    second = [
        calls_mod.again(c, run=6, i=i)
        for i, c in enumerate(x for x in first if x.kind in ("new_inbound", "repeat_open_ticket"))
    ]
    sandbox = TimedSandbox(seed=calls_mod.usedesk_seed(first))
    async with sandbox.serve() as base_url:
        service = Service(usedesk_integration(base_url, sandbox.token, per_minute=1000, burst=100))
        await asyncio.to_thread(service.start)
        try:
            async with aiohttp.ClientSession() as session:

                def idle(s: dict) -> bool:
                    return s.get("inbox_pending") == 0 and s.get("dispatches_pending") == 0

                await calls_mod.send_at_rate(
                    service.webhook, first, rate, ring_seconds=0.1, talk_seconds=0.3
                )
                await wait_for(session, service.url, idle, 60)
                split = len(sandbox.log)
                await calls_mod.send_at_rate(
                    service.webhook, second, rate, ring_seconds=0.1, talk_seconds=0.3
                )
                await wait_for(session, service.url, idle, 60)
        finally:
            await asyncio.to_thread(service.stop)
    one = attribute(sandbox, first, sandbox.log[:split])
    two = attribute(sandbox, second, sandbox.log[split:])
    by_kind = requests_by_kind(first, one)
    again = requests_by_kind(second, two)
    by_kind["repeat_known"] = again["repeat_known"]
    mean_mix = by_kind.pop("all")
    # The same mix, had its repeat callers already called through the connector once.
    kinds = {c.kind for c in first}
    shares = {k: sum(c.kind == k for c in first) / len(first) for k in kinds}
    known_mean = sum(
        shares[k] * by_kind["repeat_known" if k == "repeat_open_ticket" else k]["mean"]
        for k in kinds
    )
    return {
        "calls": len(first) + len(second),
        "by_kind": by_kind,
        "mix_mean": mean_mix["mean"],
        "mix_mean_repeat_known": round(known_mean, 2),
        "shared_requests": mean_mix["shared_requests"] + again["all"]["shared_requests"],
        "unattributed": mean_mix["unattributed"] + again["all"]["unattributed"],
        "mix_shares": {k: round(v, 2) for k, v in sorted(shares.items())},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.requests_per_call",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--calls", type=int, default=None, help="calls in the mix (phase 1)")
    parser.add_argument("--rate", type=float, default=5.0, help="calls per second")
    args = parser.parse_args(argv)
    n = args.calls or (20 if args.quick else 100)
    result = asyncio.run(measure(n, args.rate))
    rows = [
        [
            kind,
            v["calls"],
            v["mean"],
            v["min"],
            v["max"],
            " ".join(f"{p}×{c:g}" for p, c in v["per_call"].items()),
        ]
        for kind, v in result["by_kind"].items()
    ]
    repeat = max(
        result["by_kind"]["repeat_open_ticket"]["mean"], result["by_kind"]["repeat_known"]["mean"]
    )
    result["goals"] = {
        "mean_at_most_3": result["mix_mean"] <= GOAL_MEAN,
        "repeat_open_ticket_at_most_2": repeat <= GOAL_REPEAT,
    }
    lines = [
        *table(rows, ["kind", "calls", "mean", "min", "max", "requests per call"]),
        f"mix mean: {result['mix_mean']} requests/call (goal ≤ {GOAL_MEAN:g});"
        f" with repeat callers already known to the connector: {result['mix_mean_repeat_known']}",
        f"repeat caller with an open ticket: first seen"
        f" {result['by_kind']['repeat_open_ticket']['mean']}, known"
        f" {result['by_kind']['repeat_known']['mean']} (goal ≤ {GOAL_REPEAT:g})",
        f"/users and the wildcard question (no call's own): {result['shared_requests']};"
        f" unattributed: {result['unattributed']}",
    ]
    result["machine"] = machine()
    report("requests_per_call", args, result, lines)


if __name__ == "__main__":
    main()
