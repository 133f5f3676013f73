"""Property test: the missed-call lifecycle's outcome does not depend on the order webhooks
arrive in.

The webhooks of two missed calls and a callback (``scenarios.missed_then_called_back``) go
through the real worker, a real SQLite store and the missed-call loop, in any interleaving
with any of them repeated and loop rounds anywhere between them: every run ends with the same
links and the same dispatch rows (each record exactly once). Arriving within the settle time
is the only condition (docs/missed-calls.md); a run that lets each call settle before the
next arrives, in time order, ends the same as one that decides everything at once.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from connector_core.clock import FakeClock
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration, IntegrationType, RoutingSettings
from connector_core.missed import Rules
from connector_core.missed_calls import MissedCalls
from connector_core.simulator import scenarios
from connector_core.store.sqlite import SQLiteStore
from connector_core.worker import Worker

ACCOUNT = scenarios.ACCOUNT
SETTLE = 600.0
CALLS = scenarios.missed_then_called_back(callback_after=600)
EVENTS = [params for call in CALLS for params in call.events]
NUMBER = "+" + scenarios.CLIENT
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
LIFECYCLE_KEYS = ("missed_again", "called_back", "missed_overdue")


class NoSettings(BaseModel):
    pass


class NoEffects:
    async def get(self, key: str) -> dict[str, Any] | None:
        return None

    async def put(self, key: str, value: dict[str, Any]) -> bool:
        return True


def crm(name: str, schemes: list[str] | None = None) -> Integration:
    routing = RoutingSettings(schemes=schemes) if schemes else RoutingSettings()
    kind = IntegrationType("recorder", NoSettings)
    return Integration(ACCOUNT, name, kind, NoSettings(), routing, NoEffects())


INTEGRATIONS = [crm("all_calls"), crm("inbound_only", [scenarios.INBOUND_SCHEME[0]])]


Outcome = tuple[
    frozenset[tuple[str, str, str, str]], tuple[tuple[str, str | None, str | None], ...]
]


async def outcome(steps: list[tuple[str, Any]], settle: float) -> Outcome:
    """Run ``steps`` (("event", params) | ("round", None) | ("wait", seconds) | ("at", time)),
    then let everything settle; the dispatch rows of the lifecycle's records and each call's
    link."""
    # Memory-backed when the machine has it: many examples, each a store with full fsyncs.
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        clock = FakeClock(scenarios.START)
        store = SQLiteStore(Path(folder) / "connector.db", clock=clock)
        await store.open()
        try:
            worker = Worker(
                store,
                PluginHost(),
                {ACCOUNT: INTEGRATIONS},
                {ACCOUNT: "RU"},
                clock,
                finish_settle=0,
            )
            loop = MissedCalls(store, clock, Rules(), settle_seconds=settle)
            for kind, value in steps:
                if kind == "event":
                    await store.append_event(ACCOUNT, value, clock.now())
                    await worker.drain()
                elif kind == "wait":
                    clock.advance(value)
                elif kind == "at":
                    clock.advance(value - clock.now())
                else:
                    await loop.settle_round()
            clock.advance(settle + 1)
            await loop.settle_round()
            await loop.settle_round()
            found = [
                r
                for call in CALLS
                for r in await store.dispatches_for(ACCOUNT, call.call_id)
                if r.key in LIFECYCLE_KEYS
            ]
            rows = {
                (r.call_id, r.integration, r.key, r.record.model_dump_json() if r.record else "")
                for r in found
            }
            assert len(found) == len(rows)  # each exactly once
            links = tuple(
                (k.call.call_id, k.group, k.called_back_by)
                for k in await store.number_calls(ACCOUNT, NUMBER)
            )
        finally:
            await store.close()
    return frozenset(rows), links


def run(steps: list[tuple[str, Any]], settle: float = SETTLE) -> Outcome:
    return asyncio.run(outcome(steps, settle))


@functools.cache
def in_time_order() -> Outcome:
    return run([("event", params) for params in EVENTS])


def test_the_expected_outcome() -> None:
    """What every other run is compared with: the second call repeats the first, the
    callback answers both, for both integrations (only one of which sees the callback)."""
    rows, links = in_time_order()
    m1, m2, back = (c.call_id for c in CALLS)
    assert sorted((call, integration, key) for call, integration, key, _ in rows) == [
        (m2, f"{ACCOUNT}/all_calls", "missed_again"),
        (m2, f"{ACCOUNT}/inbound_only", "missed_again"),
        (back, f"{ACCOUNT}/all_calls", "called_back"),
        (back, f"{ACCOUNT}/inbound_only", "called_back"),
    ]
    assert links == ((m1, m1, back), (m2, m1, back), (back, m1, back))


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Every webhook, some repeated, in any order, with loop rounds and short waits (the
    whole delivery within the settle time) anywhere."""
    events = list(EVENTS) + draw(st.lists(st.sampled_from(EVENTS), max_size=6))
    order = draw(st.permutations(events))
    steps: list[tuple[str, Any]] = []
    for params in order:
        steps.append(("event", dict(params)))
        steps += draw(
            st.lists(
                st.one_of(st.just(("round", None)), st.tuples(st.just("wait"), st.integers(0, 20))),
                max_size=2,
            )
        )
    return steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_any_arrival_order_gives_the_same_records_and_links(steps: list[tuple[str, Any]]) -> None:
    assert run(steps) == in_time_order()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_calls_settling_one_by_one_give_what_deciding_at_once_gives(data: st.DataObject) -> None:
    """Each call's webhooks (shuffled, repeated) arrive when it ends, settle and are decided
    before the next call's: the records decided call by call are those decided at once."""
    steps: list[tuple[str, Any]] = []
    for call in CALLS:
        events = data.draw(st.permutations(call.events + call.events[:1]))
        steps.append(("at", max(int(p["timestamp"]) for p in call.events)))
        steps += [("event", dict(p)) for p in events]
        steps += [("wait", 6), ("round", None)]
    assert run(steps, settle=5) == in_time_order()
