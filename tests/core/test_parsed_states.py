"""A call's state parsed once per version (``store.parsed``); on each backend: test_store.py."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from connector_core import tracker
from connector_core.callstate import CallState, Outcome
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from connector_core.store.parsed import ParsedStates
from tests.core.test_tracker import serialised_events


def _state(call_id: str, outcome: Outcome = Outcome.RINGING) -> CallState:
    return CallState(account="012345", call_id=call_id, outcome=outcome)


def test_the_text_a_state_was_written_as_reads_back_as_that_state() -> None:
    parsed = ParsedStates()
    state = _state("c1")
    assert parsed.parse(parsed.dumped(state)) is state


def test_a_text_never_seen_is_parsed_and_kept() -> None:
    parsed = ParsedStates()
    text = _state("c1", Outcome.ANSWERED).model_dump_json()
    first = parsed.parse(text)
    assert first == _state("c1", Outcome.ANSWERED)
    assert parsed.parse(text) is first


def test_only_the_most_recently_used_states_are_kept() -> None:
    parsed = ParsedStates(size=2)
    a, b, c = (_state(x) for x in "abc")
    text_a, text_b, _ = (parsed.dumped(s) for s in (a, b, c))
    again = parsed.parse(text_a)  # a was let go when c came: parsed again
    assert again == a and again is not a
    assert parsed.parse(text_b) is not b  # and b when a came back


def test_a_state_is_read_only_so_one_object_can_be_shared() -> None:
    state = _state("c1")
    with pytest.raises(ValidationError, match="frozen"):
        state.outcome = Outcome.ANSWERED  # type: ignore[misc]


def _states_of(order: list[int]) -> list[CallState]:
    """The states a transferred call goes through when its events arrive in ``order``."""
    events = [parse_event(raw) for raw in sc.inbound_transferred().events]
    state, states = None, []
    for i in order:
        event = events[i]
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account="012345", region="RU", received_at=1.0)
        states.append(state)
    return states


@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled"])
def test_a_states_text_is_its_json_whatever_order_its_events_were_written_in(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = len(sc.inbound_transferred().events)
    indexes = list(range(count))
    if order == "reversed":
        indexes.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(indexes)
    states = _states_of(indexes)
    made = serialised_events(monkeypatch)
    parsed = ParsedStates()
    for state in states:
        assert parsed.dumped(state) == CallState.model_dump_json(state)
        assert CallState.model_validate_json(parsed.dumped(state)) == state
    # Each event was serialised once, however many writes of its call it was in.
    assert len(made) == count


def test_a_state_loaded_from_the_store_is_written_as_its_json() -> None:
    final = _states_of(list(range(len(sc.inbound_transferred().events))))[-1]
    parsed = ParsedStates()
    loaded = parsed.parse(final.model_dump_json())
    assert ParsedStates().dumped(loaded) == final.model_dump_json()
