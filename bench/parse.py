"""CPU per call of ``parse_event``, alone: the parsing every webhook pays in the ingest process.

    python -m bench.parse [--quick] [--webhooks 4000] [--runs 5]

The webhooks are the ingest bench's (``bench.calls.webhook_paths``: whole calls of the
catalogue's kinds), each path's query decoded once, before timing, into the dict the service
hands to ``parse_event``. One run parses every webhook once, in this process, with no server
or store; the best of ``--runs`` runs counts (the others measure the neighbours on a shared
machine). The figure is wall time per call, so run it on an otherwise idle core.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector_core.events import parse_event

from . import calls
from .common import machine, report, table


def webhook_params(count: int) -> list[dict[str, Any]]:
    """The query of each of ``count`` webhook paths, decoded as the service does (a dict)."""
    return [
        dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        for path in calls.webhook_paths(count, run=1)
    ]


def run_once(webhooks: list[dict[str, Any]]) -> float:
    """Seconds to parse every webhook once."""
    started = time.perf_counter()
    for params in webhooks:
        parse_event(params)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.parse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 5 s)")
    parser.add_argument("--webhooks", type=int, default=4000, help="webhooks parsed per run")
    parser.add_argument("--runs", type=int, default=5, help="runs; the fastest counts")
    args = parser.parse_args(argv)
    if args.quick:
        args.webhooks, args.runs = 400, 2
    webhooks = webhook_params(args.webhooks)
    # Every webhook must parse into an event: a refused one would time the error path.
    kinds = Counter(type(parse_event(params)).__name__ for params in webhooks)
    if set(kinds) != {"SipuniEvent"}:
        raise SystemExit(f"not every webhook parsed into an event: {dict(kinds)}")
    seconds = [run_once(webhooks) for _ in range(args.runs)]
    per_call = [round(s / len(webhooks) * 1e6, 2) for s in seconds]
    best = min(per_call)
    lines = [
        f"machine: {(machine_info := machine())}",
        *table(
            [[len(webhooks), args.runs, best, max(per_call)]],
            ["webhooks", "runs", "µs per call (best)", "µs per call (worst)"],
        ),
    ]
    report(
        "parse",
        args,
        {
            "machine": machine_info,
            "webhooks": len(webhooks),
            "runs": args.runs,
            "us_per_call": best,
            "us_per_call_runs": per_call,
        },
        lines,
    )


if __name__ == "__main__":
    main()
