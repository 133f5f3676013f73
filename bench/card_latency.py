"""Card latency: from a ring webhook to the caller's card on the ringing agent's event stream.

    python -m bench.card_latency [--quick] [--calls 25] [--latency-ms 300]

The service (own process) runs on the embedded defaults' core settings (logging INFO,
``finish_settle_seconds = 3``), with agent 101's token in ``agents`` and the Usedesk
integration, ``notifications = true``, at its default limit (100/min, 5/s), against the
sandbox (this process) answering every request ``--latency-ms`` late: a slow CRM. This
process also holds the agent page's stream open (``GET /agent/events``, server-sent
events) for extension 101, as the browser would.

Each call: a new number rings 101 (one event 1); the bench notes when the webhook was sent,
when the first card for that call arrived on the stream (what the tracker knows: number,
direction, state), and when the complete card arrived (with Usedesk's part: client and
ticket, which needs the CRM). Then the caller hangs up and the bench waits for the card to
clear before the next call. Goal: the first card under 300 ms, not waiting for the CRM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from . import calls as calls_mod
from .common import ACCOUNT, Service, latency_summary, machine, report, usedesk_integration
from .crm import TimedSandbox

AGENT_TOKEN = "bench-agent-101-token-000"
GOAL_MS = 300.0


class Stream:
    """Cards of one extension as they arrive: (monotonic time, card or None for clear)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict | None]] = []
        self.changed = asyncio.Event()

    async def follow(self, session: aiohttp.ClientSession, url: str) -> None:
        params = {"account": ACCOUNT, "extension": "101", "token": AGENT_TOKEN}
        async with session.get(
            url + "/agent/events", params=params, timeout=aiohttp.ClientTimeout(total=None)
        ) as response:
            response.raise_for_status()
            kind, buffer = None, b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    message, buffer = buffer.split(b"\n\n", 1)
                    now = time.monotonic()
                    kind, data = None, None
                    for line in message.decode().splitlines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                    if kind == "card" and data:
                        self.events.append((now, json.loads(data)))
                    elif kind == "clear":
                        self.events.append((now, None))
                    self.changed.set()

    async def wait(self, predicate, within: float) -> float | None:  # type: ignore[no-untyped-def]
        """Monotonic arrival time of the first event matching ``predicate``, or None."""
        deadline = time.monotonic() + within
        seen = 0
        while True:
            for at, card in self.events[seen:]:
                if predicate(card):
                    return at
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return None


async def measure(n: int, latency_ms: float) -> dict:
    sandbox = TimedSandbox()
    first: list[float] = []
    complete: list[float] = []
    missing_first = missing_complete = 0
    async with sandbox.serve() as base_url:
        service = Service(
            usedesk_integration(base_url, sandbox.token, notifications=True),
            account_extra=f'agents = {{ "101" = "{AGENT_TOKEN}" }}',
            finish_settle=3,
            level="INFO",
        )
        await asyncio.to_thread(service.start)
        sandbox.set_faults(latency_ms=latency_ms)
        stream = Stream()
        try:
            async with aiohttp.ClientSession() as session:
                follower = asyncio.create_task(stream.follow(session, service.url))
                await stream.wait(lambda card: card is None, 10)  # connected: "clear"
                for i in range(n):
                    call = calls_mod.build("missed", 41, i)
                    ring = dict(
                        call.scenario.events[0], short_dst_num="101", dst_num=ACCOUNT + "101"
                    )
                    hangup = call.scenario.events[-1]
                    mark = len(stream.events)
                    sent = time.monotonic()
                    async with session.get(service.webhook, params=ring) as response:
                        assert response.status == 200
                    cid = call.call_id

                    def is_ours(card: dict | None, *, done: bool = False, cid: str = cid) -> bool:
                        return (
                            card is not None
                            and card["call_id"] == cid
                            and (card.get("complete", False) or not done)
                        )

                    got = await stream.wait(is_ours, 5)
                    if got is None:
                        missing_first += 1
                    else:
                        first.append(got - sent)
                    got = await stream.wait(lambda c: is_ours(c, done=True), 10)
                    if got is None:
                        missing_complete += 1
                    else:
                        complete.append(got - sent)
                    async with session.get(service.webhook, params=hangup) as response:
                        assert response.status == 200
                    await stream.wait(lambda c: c is None, 10)
                    del stream.events[:mark]
                follower.cancel()
        finally:
            await asyncio.to_thread(service.stop)
    return {
        "calls": n,
        "latency_ms": latency_ms,
        "first_card": latency_summary(first),
        "complete_card": latency_summary(complete),
        "first_card_missing": missing_first,
        "complete_card_missing": missing_complete,
        "usedesk_requests": len(sandbox.log),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.card_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (≤ 15 s)")
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    args = parser.parse_args(argv)
    n = 4 if args.quick else args.calls
    result = asyncio.run(measure(n, args.latency_ms))
    f, c = result["first_card"], result["complete_card"]
    lines = [
        f"{n} calls ringing extension 101, Usedesk answering {args.latency_ms:g} ms late",
        f"ring webhook -> first card on /agent/events: p50 {f['p50_ms']} ms,"
        f" p99 {f['p99_ms']} ms, max {f['max_ms']} ms (goal < {GOAL_MS:g} ms);"
        f" missing {result['first_card_missing']}",
        f"ring webhook -> card with Usedesk's part: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms;"
        f" missing {result['complete_card_missing']}",
    ]
    result["goals"] = {
        "first_card_under_300ms": f["p99_ms"] < GOAL_MS and result["first_card_missing"] == 0
    }
    result["machine"] = machine()
    report("card_latency", args, result, lines)


if __name__ == "__main__":
    main()
