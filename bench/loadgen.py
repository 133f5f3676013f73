"""A webhook load generator in its own process: an aiohttp client, closed or open loop.

    python -m bench.loadgen --base http://127.0.0.1:8080 --paths paths.txt \
        --concurrency 32 --duration 5            # closed loop: 32 requests always in flight
    python -m bench.loadgen ... --rate 500 --duration 10   # open loop: 500 requests/s

``paths.txt`` holds one request path (``/sipuni/<token>?event=1&…``) per line; they are sent
in order and reused from the start if the run needs more. Every answer must be HTTP 200 with
the body ``{"success": true}``; anything else counts as a failure.

Open loop: request *i* is due at ``start + i / rate`` and is sent then whatever happened to
the ones before; its latency counts from when it was due, so a stalled server is not hidden
by a generator that politely waited (no coordinated omission).

Prints one JSON line: count, failures, requests/s, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

OK_BODY = b'{"success": true}'


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[rank] * 1000, 3)


def _summary(latencies: list[float], elapsed: float, failures: int, **extra: object) -> dict:
    return {
        "count": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": _pct(latencies, 50),
        "p90_ms": _pct(latencies, 90),
        "p99_ms": _pct(latencies, 99),
        "max_ms": round(max(latencies) * 1000, 3) if latencies else 0.0,
        **extra,
    }


async def _acknowledged(session: aiohttp.ClientSession, path: str) -> bool:
    """One webhook; ``True`` when the service answered exactly ``{"success": true}``."""
    try:
        async with session.get(path) as response:
            return response.status == 200 and await response.read() == OK_BODY
    except aiohttp.ClientError:
        return False


async def closed_loop(
    base: str,
    paths: list[str],
    concurrency: int,
    duration: float,
    warmup: float,
    once: bool = False,
) -> dict:
    latencies: list[float] = []
    failures = 0
    index = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        started = time.perf_counter()
        measure_from = started + warmup
        stop_at = measure_from + duration

        async def one_worker() -> None:
            nonlocal index, failures
            while True:
                now = time.perf_counter()
                if now >= stop_at or (once and index >= len(paths)):
                    return
                path = paths[index % len(paths)]
                index += 1
                sent = time.perf_counter()
                ok = await _acknowledged(session, path)
                done = time.perf_counter()
                if sent >= measure_from:
                    if ok:
                        latencies.append(done - sent)
                    else:
                        failures += 1

        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - measure_from
    return _summary(latencies, elapsed, failures, mode="closed", concurrency=concurrency)


async def open_loop(base: str, paths: list[str], rate: float, duration: float) -> dict:
    latencies: list[float] = []
    service_times: list[float] = []
    failures = 0
    total = int(rate * duration)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def one(path: str, due: float) -> None:
            nonlocal failures
            sent = time.perf_counter()
            ok = await _acknowledged(session, path)
            done = time.perf_counter()
            if ok:
                latencies.append(done - due)
                service_times.append(done - sent)
            else:
                failures += 1

        tasks = []
        started = time.perf_counter()
        late = 0
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                late += 1
            tasks.append(asyncio.create_task(one(paths[i % len(paths)], due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    result = _summary(latencies, elapsed, failures, mode="open", rate=rate, sent_late=late)
    result["send_to_answer_p99_ms"] = _pct(service_times, 99)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--base", required=True, help="http://127.0.0.1:<port>")
    parser.add_argument("--paths", required=True, help="file with one request path per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--once", action="store_true", help="send each path once, then stop")
    args = parser.parse_args(argv)
    with open(args.paths, encoding="utf-8") as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    if args.rate > 0:
        result = asyncio.run(open_loop(args.base, paths, args.rate, args.duration))
    else:
        result = asyncio.run(
            closed_loop(args.base, paths, args.concurrency, args.duration, args.warmup, args.once)
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
