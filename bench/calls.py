"""Calls for the benches: unique call ids and numbers, a realistic mix, and a timed sender.

Built on ``connector_core.simulator.scenarios``; only the call ids, the numbers and the timing
are the bench's own. A call's events are sent in order; everything before the final hang-up
is spread over ``ring_seconds``, the hang-up comes ``talk_seconds`` after the last of them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from connector_core.simulator import scenarios
from connector_core.simulator.scenarios import Scenario

from .common import ACCOUNT, TOKEN

# Kinds of the realistic mix, with their share of calls. "repeat" callers are known to Usedesk
# and have an open ticket (seeded); everyone else calls from a number Usedesk has never seen.
MIX: dict[str, float] = {
    "new_inbound": 0.30,
    "repeat_open_ticket": 0.30,
    "missed": 0.15,
    "transfer": 0.10,
    "outbound": 0.15,
}
REPEAT_CLIENT_BASE = 20_000  # sandbox client ids of the seeded repeat callers
REPEAT_TICKET_BASE = 60_000


def call_id(run: int, i: int) -> str:
    return f"{scenarios.START + i}.{run}{i:06d}"


def new_number(run: int, i: int) -> str:
    """A mobile number nobody has used: 7 9xx, unique per (run, i)."""
    return f"79{(run % 90) + 10:02d}{i:07d}"


def repeat_number(i: int) -> str:
    return f"7903{i:07d}"


@dataclass(frozen=True)
class BenchCall:
    kind: str
    scenario: Scenario

    @property
    def call_id(self) -> str:
        return self.scenario.call_id


def build(kind: str, run: int, i: int) -> BenchCall:
    cid, start = call_id(run, i), scenarios.START + 10 * i
    if kind == "new_inbound":
        s = scenarios.inbound_answered(
            ring=("101", "102"),
            answered_by="101",
            client=new_number(run, i),
            call_id=cid,
            start=start,
        )
    elif kind == "repeat_open_ticket":
        s = scenarios.inbound_answered(
            ring=("101", "102"),
            answered_by="102",
            client=repeat_number(i),
            call_id=cid,
            start=start,
        )
    elif kind == "missed":
        s = scenarios.inbound_missed(
            ring=("101", "102"), client=new_number(run, i), call_id=cid, start=start
        )
    elif kind == "transfer":
        s = scenarios.inbound_transferred(
            "101", "102", client=new_number(run, i), call_id=cid, start=start
        )
    elif kind == "outbound":
        s = scenarios.outbound_answered("103", client=new_number(run, i), call_id=cid, start=start)
    else:
        raise ValueError(kind)
    return BenchCall(kind, s)


def again(first: BenchCall, run: int, i: int) -> BenchCall:
    """The same caller calls again (answered by 101), after ``first`` is over."""
    s = scenarios.inbound_answered(
        ring=("101", "102"),
        answered_by="101",
        client=first.scenario.expected["client_number"].lstrip("+"),
        call_id=call_id(run, i),
        start=scenarios.START + 10 * i,
    )
    return BenchCall("repeat_known", s)


def mix(count: int, run: int, seed: int = 7) -> list[BenchCall]:
    """``count`` calls of the realistic mix, in a shuffled but reproducible order."""
    rng = random.Random(seed)
    kinds = [k for k, share in MIX.items() for _ in range(round(share * count))]
    while len(kinds) < count:
        kinds.append("new_inbound")
    kinds = kinds[:count]
    rng.shuffle(kinds)
    return [build(kind, run, i) for i, kind in enumerate(kinds)]


def of_kind(kind: str, count: int, run: int) -> list[BenchCall]:
    return [build(kind, run, i) for i in range(count)]


def usedesk_seed(calls: list[BenchCall]) -> dict:
    """The sandbox's default seed plus, for each repeat caller, a client with an open ticket."""
    from plugins.usedesk.sandbox import DEFAULT_SEED

    seed = {
        **DEFAULT_SEED,
        "clients": list(DEFAULT_SEED["clients"]),
        "tickets": list(DEFAULT_SEED["tickets"]),
    }
    repeat = [c for c in calls if c.kind == "repeat_open_ticket"]
    for n, c in enumerate(repeat):
        number = c.scenario.expected["client_number"].lstrip("+")
        cid, tid = REPEAT_CLIENT_BASE + n, REPEAT_TICKET_BASE + n
        seed["clients"].append(
            {
                "id": cid,
                "name": f"Постоянный клиент {n}",
                "phones": [number],
                "created_at": "2024-01-10 09:00:00",
            }
        )
        seed["tickets"].append(
            {
                "id": tid,
                "subject": "Вопрос по заказу",
                "client_id": cid,
                "status_id": 1,
                "assignee_id": 2,
                "group_id": 1,
                "channel_id": 102,
                "published_at": "2024-04-01 10:00:00",
                "comments": [{"message": "Перезвоните мне", "type": "public", "from": "client"}],
            }
        )
    return seed


# --- ingest: request paths -----------------------------------------------------------------------


def webhook_paths(count: int, run: int) -> list[str]:
    """``count`` GET paths of whole calls in order (the catalogue's kinds, unique ids)."""
    builders: list[Callable[..., Scenario]] = [
        scenarios.inbound_answered,
        scenarios.inbound_missed,
        scenarios.inbound_transferred,
        scenarios.outbound_answered,
    ]
    paths: list[str] = []
    i = 0
    while len(paths) < count:
        s = builders[i % len(builders)](
            call_id=call_id(run, i),
            start=scenarios.START + 10 * i,
            client=new_number(run, i % 10_000_000),
        )
        paths.extend(f"/sipuni/{TOKEN}?{urlencode(p)}" for p in s.events)
        i += 1
    return paths[:count]


def ring_paths(count: int, run: int, extensions: int = 1) -> list[str]:
    """Only the ring events (event 1) of ``count`` distinct inbound calls: calls left open."""
    paths = []
    for i in range(count):
        s = scenarios.inbound_answered(
            ring=[str(101 + k) for k in range(extensions)],
            answered_by="101",
            call_id=call_id(run, i),
            client=new_number(run, i),
            start=scenarios.START + 10 * i,
        )
        paths.extend(f"/sipuni/{TOKEN}?{urlencode(p)}" for p in s.events if p["event"] == "1")
    return paths


# --- sending calls with timing --------------------------------------------------------------------


@dataclass
class Sent:
    call: BenchCall
    started: float = 0.0  # time.monotonic() when the first event was sent
    hangup_sent: float = 0.0  # just before the final hang-up request went out
    hangup_acked: float = 0.0
    failures: int = 0


async def send_call(
    session: aiohttp.ClientSession,
    webhook: str,
    call: BenchCall,
    *,
    ring_seconds: float,
    talk_seconds: float,
) -> Sent:
    """Send a call's events in order: the non-final ones spread over ``ring_seconds``, the
    final hang-up (the last event 2) ``talk_seconds`` after them."""
    events = call.scenario.events
    final = max(i for i, e in enumerate(events) if e.get("event") == "2")
    before = [e for i, e in enumerate(events) if i != final]
    gap = ring_seconds / max(1, len(before) - 1) if len(before) > 1 else 0.0
    sent = Sent(call, started=time.monotonic())
    for n, params in enumerate(before):
        if n:
            await asyncio.sleep(gap)
        sent.failures += not await _send(session, webhook, params)
    await asyncio.sleep(talk_seconds)
    sent.hangup_sent = time.monotonic()
    sent.failures += not await _send(session, webhook, events[final])
    sent.hangup_acked = time.monotonic()
    return sent


async def _send(session: aiohttp.ClientSession, webhook: str, params: dict[str, str]) -> bool:
    async with session.get(webhook, params=params) as response:
        return response.status == 200 and await response.json() == {"success": True}


async def send_at_rate(
    webhook: str,
    calls: list[BenchCall],
    calls_per_second: float,
    *,
    ring_seconds: float = 0.3,
    talk_seconds: float = 1.5,
) -> list[Sent]:
    """Start one call every ``1 / calls_per_second`` seconds (open loop); wait for all."""
    async with aiohttp.ClientSession() as session:
        tasks = []
        begin = time.monotonic()
        for i, call in enumerate(calls):
            delay = begin + i / calls_per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(
                    send_call(
                        session, webhook, call, ring_seconds=ring_seconds, talk_seconds=talk_seconds
                    )
                )
            )
        return list(await asyncio.gather(*tasks))


__all__ = ["ACCOUNT", "MIX", "BenchCall", "Sent", "mix", "send_at_rate", "usedesk_seed"]
