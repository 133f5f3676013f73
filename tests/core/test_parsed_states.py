"""A call's state parsed once per version (``store.parsed``); on each backend: test_store.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connector_core.callstate import CallState, Outcome
from connector_core.store.parsed import ParsedStates


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
