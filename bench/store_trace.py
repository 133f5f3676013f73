"""Run the service with its SQLite write transactions timed, from ``BEGIN IMMEDIATE`` (the
wait for the file's write lock included) to the end of ``COMMIT``: for the benches that put an
ingest process and a worker process on one file, where one's transaction is the other's wait.

    python -m bench.store_trace --out DIR -m connector_core serve --config FILE --role ROLE

(``bench.common.Service(python_args=["-m", "bench.store_trace", "--out", DIR])`` puts it in
front of ``-m connector_core``.) Each process writes ``DIR/store-<pid>.json`` as it exits
(SIGTERM is a graceful stop): its role, how many transactions and writes, and the time from
``BEGIN IMMEDIATE`` (waiting for the lock included) to the end of ``COMMIT`` of each, as
percentiles. The service's code is not changed; only the store module's batch function is
wrapped, in this process.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import runpy
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import latency_summary

Batch = Callable[..., list[Any]]


def timed(batch: Batch, took: list[float], writes: list[int]) -> Batch:
    def run(
        db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]], **kwargs: Any
    ) -> list[Any]:
        started = time.perf_counter()
        try:
            return batch(db, fns, **kwargs)
        finally:
            took.append(time.perf_counter() - started)
            writes.append(len(fns))

    return run


def summary(role: str, took: list[float], writes: list[int]) -> dict[str, Any]:
    return {
        "role": role,
        "transactions": len(took),
        "writes": sum(writes),
        "writes_per_transaction": round(sum(writes) / len(took), 1) if took else 0.0,
        "total_s": round(sum(took), 2),
        **latency_summary(took),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_trace")
    parser.add_argument("--out", type=Path, required=True, help="folder for store-<pid>.json")
    parser.add_argument("-m", dest="module", required=True, help="connector_core")
    args, rest = parser.parse_known_args()
    from connector_core.store import sqlite_commit as store_module

    took: list[float] = []
    writes: list[int] = []
    store_module._commit_batch = timed(store_module._commit_batch, took, writes)
    role = rest[rest.index("--role") + 1] if "--role" in rest else "all"

    def write() -> None:
        out = args.out / f"store-{os.getpid()}.json"
        out.write_text(json.dumps(summary(role, took, writes)), encoding="utf-8")

    atexit.register(write)
    sys.argv = [args.module, *rest]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


def read(folder: Path) -> dict[str, dict[str, Any]]:
    """The summaries written into ``folder``, by role."""
    found = {}
    for path in sorted(folder.glob("store-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        found[data["role"]] = data
    return found


if __name__ == "__main__":
    main()
