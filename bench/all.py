"""Run every bench in turn (each in its own process) and collect their JSON lines.

    python -m bench.all [--quick] [--out results.jsonl]

The full set takes about 15 minutes on the 2-core reference machine (docs/benchmarks.md);
``--quick`` about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .common import ROOT

RUNS: list[list[str]] = [
    ["ingest"],
    ["cpu"],
    ["parse"],
    ["hangup", "--mode", "realistic"],
    ["hangup", "--mode", "limit"],
    ["requests_per_call"],
    ["sustained", "--mode", "usedesk", "--limit", "100"],
    ["sustained", "--mode", "usedesk", "--limit", "1000"],
    ["sustained", "--mode", "core"],
    ["memory", "--config", "stub"],
    ["memory", "--config", "usedesk"],
    ["card_latency"],
    ["burst"],
    ["console"],
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="append each bench's JSON line here")
    parser.add_argument("--only", default=None, help="comma-separated bench names")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    for run in RUNS:
        if wanted and run[0] not in wanted:
            continue
        command = [sys.executable, "-m", f"bench.{run[0]}", *run[1:]]
        if args.quick:
            command.append("--quick")
        print(f"$ {' '.join(['python', *command[1:]])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
        print(f"({time.monotonic() - started:.0f} s, exit {done.returncode})\n", flush=True)
        if args.out and done.returncode == 0:
            line = done.stdout.strip().splitlines()[-1]
            record = json.loads(line)
            record["command"] = " ".join(["python", "-m", f"bench.{run[0]}", *command[3:]])
            with Path(args.out).open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
