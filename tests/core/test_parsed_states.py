"""A call's state parsed once per version (``store.parsed``), on each backend."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connector_core.callstate import CallState, LifecycleKind, Outcome
from connector_core.clock import FakeClock
from connector_core.store.base import Store
from connector_core.store.parsed import ParsedStates
from tests.core.test_store import proposed
from tests.store_backends import StoreBackend


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


@pytest.fixture
async def store(store_backend: StoreBackend):
    s = store_backend.new(clock=FakeClock())
    await s.open()
    yield s
    await s.close()


async def test_the_dispatcher_reads_the_state_the_worker_wrote_without_parsing_it(
    store: Store,
) -> None:
    state = _state("c1", Outcome.ANSWERED)
    await store.commit_event(None, state, [proposed(LifecycleKind.STARTED)])
    work = await store.group_work("012345/x", "012345", "c1")
    assert work.call is state
    assert (await store.load_calls([("012345", "c1")]))[("012345", "c1")] is state
    assert await store.load_call("012345", "c1") is state


async def test_a_state_written_by_another_process_is_parsed(
    store: Store, store_backend: StoreBackend
) -> None:
    state = _state("c1", Outcome.ANSWERED)
    other = store_backend.new(clock=FakeClock())  # another process on the same store
    await other.open()
    try:
        await other.commit_event(None, state, [proposed(LifecycleKind.STARTED)])
    finally:
        await other.close()
    work = await store.group_work("012345/x", "012345", "c1")
    assert work.call == state and work.call is not state
