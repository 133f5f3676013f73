"""Property tests: Sipuni's delivery order and repetitions must not matter to the tracker.

For every kind of call the simulator builds (with drawn extensions, numbers, schemes and
timings), any permutation of its requests with any of them repeated must end in the same
``CallState`` and emit the same set of lifecycle events, each exactly once over the whole run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core import tracker
from connector_core.callstate import CallState, LifecycleEvent
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from connector_core.simulator.scenarios import Scenario
from tests.core.test_tracker import summary

REGION = "RU"
TIMEOUT = 3 * 3600.0
# What the tracker keeps besides derived fields; ``timed_out_at`` is the service's clock when
# the timeout fired, which depends on how many requests came before it, not on the call.
NOT_DERIVED = {"events", "emitted", "last_received_at", "timed_out_at"}

extension = st.from_regex(r"[1-9][0-9]{2}", fullmatch=True)
clients = st.builds(
    lambda national, spelling: sc.spell("+7" + national, spelling),
    st.from_regex(r"9[0-9]{9}", fullmatch=True),
    st.sampled_from(["8", "7", "+7"]),
)
starts = st.integers(1_600_000_000, 1_900_000_000)
seqs = st.integers(1, 999_999)
gaps = st.integers(0, 20)
unanswered_statuses = st.sampled_from(["NOANSWER", "BUSY", "CANCEL"])


@st.composite
def rings(draw: st.DrawFn, gap: int) -> list[str]:
    ring = draw(st.lists(extension, min_size=1, max_size=4, unique=True))
    # Legs rung in the same second carry no order on the wire; the tracker lists them by
    # extension, so a ring-all group is drawn in that order.
    return sorted(ring) if gap == 0 else ring


@st.composite
def schemes(draw: st.DrawFn) -> tuple[sc.Scheme, sc.Scheme]:
    ids = st.from_regex(r"000-[0-9]{3,7}", fullmatch=True)
    names = st.sampled_from(["Распределитель", "Продажи", "Поддержка", "IVR", "Ночная"])
    (id1, id2) = draw(st.lists(ids, min_size=2, max_size=2, unique=True))
    (name1, name2) = draw(st.lists(names, min_size=2, max_size=2, unique=True))
    return (id1, name1), (id2, name2)


@st.composite
def inbound_answered(draw: st.DrawFn) -> Scenario:
    gap = draw(gaps)
    ring = draw(rings(gap))
    return sc.inbound_answered(
        ring,
        draw(st.sampled_from(ring)),
        client=draw(clients),
        start=draw(starts),
        seq=draw(seqs),
        ring_gap=gap,
        answer_after=draw(st.integers(1, 60)),
        talk=draw(st.integers(0, 3600)),
    )


@st.composite
def inbound_missed(draw: st.DrawFn) -> Scenario:
    gap = draw(gaps)
    return sc.inbound_missed(
        draw(rings(gap)),
        client=draw(clients),
        start=draw(starts),
        seq=draw(seqs),
        ring_gap=gap,
        ring_for=draw(st.integers(1, 120)),
        status=draw(unanswered_statuses),
    )


@st.composite
def inbound_transferred(draw: st.DrawFn) -> Scenario:
    first, to = draw(st.lists(extension, min_size=2, max_size=2, unique=True))
    return sc.inbound_transferred(
        first,
        to,
        client=draw(clients),
        start=draw(starts),
        seq=draw(seqs),
        transfer_from_field=draw(st.booleans()),
    )


@st.composite
def scheme_transfer(draw: st.DrawFn) -> Scenario:
    distributor, target = draw(schemes())
    gap = draw(gaps)
    ring = draw(rings(gap))
    return sc.scheme_transfer(
        distributor,
        target,
        draw(st.none() | st.sampled_from(ring)),
        draw(st.booleans()),
        ring=ring,
        client=draw(clients),
        start=draw(starts),
        seq=draw(seqs),
        ivr_seconds=draw(st.integers(1, 60)),
        ring_gap=gap,
    )


@st.composite
def outbound_answered(draw: st.DrawFn) -> Scenario:
    return sc.outbound_answered(
        draw(extension),
        client=draw(clients),
        start=draw(starts),
        seq=draw(seqs),
        answer_after=draw(st.integers(1, 60)),
        talk=draw(st.integers(0, 3600)),
        duplicate_ring=draw(st.booleans()),
    )


@st.composite
def outbound_unanswered(draw: st.DrawFn) -> Scenario:
    return sc.outbound_unanswered(
        draw(extension),
        client=draw(clients),
        start=draw(starts),
        seq=draw(seqs),
        status=draw(unanswered_statuses),
        ring_for=draw(st.integers(1, 60)),
        duplicate_ring=draw(st.booleans()),
    )


@st.composite
def internal(draw: st.DrawFn) -> Scenario:
    caller, callee = draw(st.lists(extension, min_size=2, max_size=2, unique=True))
    return sc.internal(
        caller,
        callee,
        answered=draw(st.booleans()),
        start=draw(starts),
        seq=draw(seqs),
        talk=draw(st.integers(0, 3600)),
    )


CALLS: dict[str, Callable[[], st.SearchStrategy[Scenario]]] = {
    "inbound_answered": inbound_answered,
    "inbound_missed": inbound_missed,
    "inbound_transferred": inbound_transferred,
    "scheme_transfer": scheme_transfer,
    "outbound_answered": outbound_answered,
    "outbound_unanswered": outbound_unanswered,
    "internal": internal,
}


@st.composite
def deliveries(draw: st.DrawFn, count: int) -> list[int]:
    """Indexes of the requests in the order they arrive: each at least once, some repeated."""
    repeats = draw(st.lists(st.integers(0, count - 1), max_size=count))
    return draw(st.permutations([*range(count), *repeats]))


def deliver(s: Scenario, order: list[int]) -> tuple[CallState, list[str]]:
    """Feed the requests in ``order``; the ids of the records emitted, in emission order."""
    state, records = deliver_records(s, order)
    return state, [record.id for record in records]


def deliver_records(s: Scenario, order: list[int]) -> tuple[CallState, list[LifecycleEvent]]:
    """Feed the requests in ``order``; close the call by the timeout if it has no hang-up."""
    state: CallState | None = None
    records: list[LifecycleEvent] = []
    for tick, index in enumerate(order):
        event = parse_event(s.events[index])
        assert isinstance(event, SipuniEvent)
        state, new = tracker.apply(
            state, event, account=s.account, region=REGION, received_at=1_000.0 + tick
        )
        records += new
    assert state is not None
    if s.expected["finished_by"] == "timeout":
        state, new = tracker.expire(
            state, now=state.last_received_at + TIMEOUT, timeout=TIMEOUT, region=REGION
        )
        records += new
    return state, records


def converged(state: CallState) -> tuple[dict[str, object], list[str]]:
    return state.model_dump(exclude=NOT_DERIVED), sorted(state.emitted)


@pytest.mark.parametrize("kind", sorted(CALLS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_order_with_any_repeats_converges(kind: str, data: st.DataObject) -> None:
    s = data.draw(CALLS[kind](), label="scenario")
    if data.draw(st.booleans(), label="final hang-up lost"):
        s = sc.without_final_hangup(s)
    reference, reference_keys = deliver(s, list(range(len(s.events))))
    assert summary(reference, []) | {"lifecycle": sorted(reference_keys)} == s.expected

    order = data.draw(deliveries(len(s.events)), label="delivery order")
    state, keys = deliver(s, order)

    assert converged(state) == converged(reference)
    assert len(keys) == len(set(keys)), f"emitted more than once: {keys}"
    assert set(keys) == set(reference_keys) == set(s.expected["lifecycle"])
    # "started" always comes first. "finished" need not come last: a request delayed past the
    # final hang-up (the distributor's event 1, say) can only then reveal a scheme change.
    assert keys[0] == "started"


@st.composite
def scheme_named_by_halves(draw: st.DrawFn, s: Scenario) -> Scenario:
    """``s`` with each scheme named by its name alone (or its number alone) on some events.

    The last event naming a scheme keeps both, so the call still says which name is which
    number; the others are drawn. Name-then-number and number-then-name are drawn per scheme.
    """
    naming: dict[str, list[int]] = {}
    for i, params in enumerate(s.events):
        if "treeNumber" in params:
            naming.setdefault(params["treeNumber"], []).append(i)
    for indexes in naming.values():
        halves = draw(st.lists(st.sampled_from(indexes[:-1]), unique=True)) if indexes[1:] else []
        by = draw(st.sampled_from(["treeName", "treeNumber"]))
        s = sc.with_scheme_named_by(s, by, halves)
    return s


@pytest.mark.parametrize("kind", sorted(CALLS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_scheme_named_by_halves_in_any_order_is_announced_once(
    kind: str, data: st.DataObject
) -> None:
    """Name then number, number then name, in any order: one visit, one record, each once.

    A record's id is the scheme's identifier known when it was first seen, so it may differ
    between two delivery orders; what it is about (its kind and refreshed payload) may not.
    """
    s = data.draw(CALLS[kind](), label="scenario")
    if data.draw(st.booleans(), label="final hang-up lost"):
        s = sc.without_final_hangup(s)
    s = data.draw(scheme_named_by_halves(s), label="scheme spelling")
    reference, reference_records = deliver_records(s, list(range(len(s.events))))
    expected = {k: v for k, v in s.expected.items() if k != "lifecycle"}
    assert {k: v for k, v in summary(reference, []).items() if k != "lifecycle"} == expected

    order = data.draw(deliveries(len(s.events)), label="delivery order")
    state, records = deliver_records(s, order)

    assert converged(state)[0] == converged(reference)[0]
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids)), f"emitted more than once: {ids}"

    def about(state: CallState, records: list[LifecycleEvent]) -> list[str]:
        return sorted(tracker.refreshed(r, state).model_dump_json(exclude={"id"}) for r in records)

    assert about(state, records) == about(reference, reference_records)
    assert len(records) == len(s.expected["lifecycle"])
    for record in records:
        if record.scheme is not None:
            assert tracker.refreshed(record, state).scheme in state.schemes[1:]


@pytest.mark.parametrize("kind", sorted(CALLS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_each_state_is_what_its_events_say_when_derived_from_all_of_them(
    kind: str, data: st.DataObject
) -> None:
    """A call's next event extends what its earlier events said (when it comes after them)
    rather than walking them all again: after every event, in any order with any repeats,
    the state is the one derived from all its events at once."""
    s = data.draw(CALLS[kind](), label="scenario")
    s = data.draw(scheme_named_by_halves(s), label="scheme spelling")
    order = data.draw(deliveries(len(s.events)), label="delivery order")
    state: CallState | None = None
    for tick, index in enumerate(order):
        event = parse_event(s.events[index])
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(
            state, event, account=s.account, region=REGION, received_at=1_000.0 + tick
        )
        assert tracker.derive(state, REGION) == state
