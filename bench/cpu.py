"""CPU per event, end to end: webhook in → call state → dispatch rows → hook calls done.

    python -m bench.cpu [--quick] [--events 4000] [--long-calls 20] [--events-per-call 40]
                        [--concurrency 8] [--profile] [--top 25]

The service (``connector serve``, durable SQLite store, the ``amocrm_stub`` integration, which
journals each hook call into the store) runs as its own process; ``bench.loadgen`` sends
each request path once (closed loop). The figure is the CPU time the service's process used
(user + system, every thread: ``/proc/<pid>/stat``), from just before the first webhook to
when the inbox and the dispatch outbox are both empty, divided by the events sent. Wall time
is not used: on a shared machine it measures the neighbours.

Two runs, each on a fresh service: ``mixed`` (whole calls of the ingest bench's kinds, 3 to 6
events each) and ``long`` (calls of ``--events-per-call`` events: rings to that many phones,
an answer, the hang-up), which shows per-event work that grows with the call's events.

``--profile`` runs the mixed run again with the service under ``cProfile`` (its main thread:
the event loop; the SQLite writer thread is not in it) and prints the top functions by
own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import pstats
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from connector_core.simulator import scenarios

from . import calls
from .common import ROOT, TOKEN, Service, machine, report, table
from .ingest import loadgen


def long_call_paths(count: int, events_per_call: int, run: int) -> list[str]:
    """``count`` inbound calls of ``events_per_call`` events each (rings, answer, hang-up)."""
    rings = max(1, events_per_call - 2)
    paths: list[str] = []
    for i in range(count):
        s = scenarios.inbound_answered(
            ring=[str(1000 + k) for k in range(rings)],
            answered_by="1000",
            call_id=calls.call_id(run, i),
            client=calls.new_number(run, i),
            start=scenarios.START + 10 * i,
            ring_gap=1,
        )
        paths.extend(f"/sipuni/{TOKEN}?{urlencode(p)}" for p in s.events)
    return paths


def send(service: Service, paths: list[str], concurrency: int, workdir: Path) -> dict:
    """Send every path once (closed loop); return the loadgen's summary."""
    file = workdir / f"paths-{len(list(workdir.iterdir()))}.txt"
    file.write_text("\n".join(paths) + "\n")
    argv = ["--base", service.url, "--paths", str(file), "--concurrency", str(concurrency)]
    return loadgen([*argv, "--duration", "3600", "--warmup", "0", "--once"], timeout=1800)


def measure(paths: list[str], concurrency: int, workdir: Path, repeat: int) -> dict:
    """CPU per event for ``paths``, the least of ``repeat`` runs (each on a fresh service):
    on a shared machine, the run least slowed by the neighbours' use of the caches."""
    runs = [measure_once(paths, concurrency, workdir) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["us_per_event"])
    return {**best, "runs_us_per_event": [r["us_per_event"] for r in runs]}


def measure_once(paths: list[str], concurrency: int, workdir: Path) -> dict:
    """One fresh service: CPU per event for ``paths``, sent once each and fully processed."""
    with Service() as service:
        # Warm-up (imports, first queries, the JIT-less interpreter's caches): not counted.
        send(service, long_call_paths(2, 4, run=99), 2, workdir)
        service.wait_idle(timeout=60)
        cpu0 = service.cpu_seconds()
        sent = send(service, paths, concurrency, workdir)
        service.wait_idle(timeout=600, poll=0.05)
        used = service.cpu_seconds() - cpu0
        # The readiness polls of wait_idle are counted too: a few hundred µs each, at most
        # 20 a second: small beside thousands of events, and the same before and after.
    events = len(paths)
    return {
        "events": events,
        "failures": sent["failures"],
        "cpu_s": round(used, 3),
        "us_per_event": round(used / events * 1e6),
    }


# Not the events' cost: start-up (imports, compiling) and the loop waiting for I/O.
_NOT_WORK = ("select.epoll", "builtins.compile", "marshal.loads", "builtins.exec", "<frozen")


def profile(paths: list[str], concurrency: int, workdir: Path, top: int) -> dict:
    """The mixed run under cProfile: the top functions by own and by cumulative time."""
    out = workdir / "service.prof"
    with Service(python_args=["-m", "cProfile", "-o", str(out)]) as service:
        send(service, paths, concurrency, workdir)
        service.wait_idle(timeout=600, poll=0.1)
    # The service wrote the profile as it exited (SIGTERM: a graceful stop).
    raw = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, calls_, own, cumulative, _) in raw.items():
        where = f"{file.replace(str(ROOT) + '/', '')}:{line}({name})"
        if file == "~":
            where = name
        if any(skip in where for skip in _NOT_WORK):
            continue
        rows.append((own, cumulative, calls_, where))
    events = len(paths)
    total = sum(r[0] for r in rows)

    def lines(key: int) -> list[str]:
        ordered = sorted(rows, key=lambda r: r[key], reverse=True)[:top]
        return [
            f"{r[0] / events * 1e6:8.1f} {r[1] / events * 1e6:9.1f} {r[2] / events:7.2f}  {r[3]}"
            for r in ordered
        ]

    header = "  own µs    cum µs  calls  (per event)  function"
    return {
        "events": events,
        "profiled_us_per_event": round(total / events * 1e6),
        "tottime": [header, *lines(0)],
        "cumulative": [header, *lines(1)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 30 s)")
    parser.add_argument("--events", type=int, default=4000, help="events of the mixed run")
    parser.add_argument("--long-calls", type=int, default=20, help="calls of the long run")
    parser.add_argument("--events-per-call", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the least counts")
    parser.add_argument("--profile", action="store_true", help="also profile the mixed run")
    parser.add_argument("--top", type=int, default=25, help="profile lines per ordering")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.long_calls, args.events_per_call, args.repeat = 200, 3, 10, 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-"))

    mixed = measure(calls.webhook_paths(args.events, run=1), args.concurrency, workdir, args.repeat)
    long = measure(
        long_call_paths(args.long_calls, args.events_per_call, run=2),
        args.concurrency,
        workdir,
        args.repeat,
    )
    prof = (
        profile(calls.webhook_paths(args.events, run=3), args.concurrency, workdir, args.top)
        if args.profile
        else None
    )
    rows = [
        ["mixed (3-6 events a call)", mixed["events"], mixed["cpu_s"], mixed["us_per_event"]],
        [
            f"long ({args.events_per_call} events a call)",
            long["events"],
            long["cpu_s"],
            long["us_per_event"],
        ],
    ]
    lines = [
        f"machine: {(machine_info := machine())}",
        *table(rows, ["run", "events", "service CPU s", "µs CPU per event"]),
    ]
    if prof is not None:
        lines += ["", "profile (service main thread), by own time:", *prof["tottime"]]
        lines += ["", "by cumulative time:", *prof["cumulative"]]
    report(
        "cpu",
        args,
        {
            "machine": machine_info,
            "mixed": mixed,
            "long": {**long, "events_per_call": args.events_per_call},
            "profile": prof,
        },
        lines,
    )


if __name__ == "__main__":
    main()
