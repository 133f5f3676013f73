"""Sending simulated calls to a running service over HTTP, with realistic timing.

Each call's requests go out in order with the pauses Sipuni would leave between them
(scaled by ``speed``); several calls run at once, as they do on a real PBX.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from connector_core.simulator.scenarios import Scenario


@dataclass(frozen=True)
class Sent:
    call_id: str
    status: int
    body: str


async def send_call(
    session: aiohttp.ClientSession,
    url: str,
    scenario: Scenario,
    *,
    method: str = "GET",
    speed: float = 1.0,
) -> list[Sent]:
    """Send one call's requests to ``url`` (``…/sipuni/<token>``); ``speed`` 10 = 10× faster.

    ``method`` is ``GET`` (query string, what Sipuni does), ``POST`` (form) or ``JSON``.
    """
    results = []
    for delay, params in zip(scenario.delays, scenario.events, strict=True):
        if delay and speed > 0:
            await asyncio.sleep(delay / speed)
        if method == "GET":
            request = session.get(url, params=params)
        elif method == "POST":
            request = session.post(url, data=params)
        else:
            request = session.post(url, json=params)
        async with request as response:
            results.append(Sent(scenario.call_id, response.status, await response.text()))
    return results


async def send_calls(
    url: str,
    scenarios: Sequence[Scenario],
    *,
    method: str = "GET",
    speed: float = 1.0,
    stagger: float = 0.0,
    rng: random.Random | None = None,
) -> list[Sent]:
    """Send several calls concurrently, each started ``stagger`` seconds after the previous.

    With ``method="mixed"`` each call picks GET, POST or JSON at random (from ``rng``).
    """
    rng = rng or random.Random(0)
    # Drawn up front, so the choice per call does not depend on task scheduling.
    methods = [
        rng.choice(["GET", "POST", "JSON"]) if method == "mixed" else method for _ in scenarios
    ]

    async def one(index: int, scenario: Scenario, session: aiohttp.ClientSession) -> list[Sent]:
        await asyncio.sleep(index * stagger)
        return await send_call(session, url, scenario, method=methods[index], speed=speed)

    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(one(i, s, session) for i, s in enumerate(scenarios)))
    return [sent for call in results for sent in call]
