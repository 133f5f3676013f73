"""The store's part of the missed-call lifecycle, the same on SQLite and PostgreSQL: a
finished call of a number is kept with its call's commit, decided again only when it
changes, and a number's settlement (links, decided calls, overdue marks, dispatch rows) is
written whole, its rows once however often it is written."""

from __future__ import annotations

from connector_core import missed, tracker
from connector_core.callstate import CallState, Direction, LifecycleEvent, LifecycleKind
from connector_core.clock import FakeClock
from connector_core.events import parse_event
from connector_core.missed import Link, NumberCall
from connector_core.simulator import scenarios
from connector_core.store.base import MissedSummary, NewDispatch, NumberSettlement
from tests.store_backends import StoreBackend

ACCOUNT = scenarios.ACCOUNT
NUMBER = "+" + scenarios.CLIENT


def finished(s: scenarios.Scenario) -> CallState:
    state: CallState | None = None
    for params in s.events:
        state, _ = tracker.apply(
            state, parse_event(params), account=ACCOUNT, region="RU", received_at=1.0
        )
    assert state is not None and state.finished
    return state


async def test_kept_with_the_commit_and_settled_once(store_backend: StoreBackend) -> None:
    clock = FakeClock(1000.0)
    store = store_backend.new(clock=clock)
    await store.open()
    try:
        m1, m2, back = scenarios.missed_then_called_back()
        states = [finished(s) for s in (m1, m2, back)]
        for state in states:
            kept = missed.number_call(state, [f"{ACCOUNT}/crm"])
            await store.commit_event(None, state, [], number_call=kept)
        assert await store.unsettled_numbers(999.0, 1000.0, 10) == []  # not settled yet
        assert await store.unsettled_numbers(1001.0, 1000.0, 10) == [(ACCOUNT, NUMBER)]
        calls = await store.number_calls(ACCOUNT, NUMBER)
        assert [c.call.call_id for c in calls] == [m1.call_id, m2.call_id, back.call_id]
        assert [c.call.direction for c in calls] == [Direction.INBOUND] * 2 + [Direction.OUTBOUND]
        assert not any(c.decided for c in calls)

        again = LifecycleEvent(
            kind=LifecycleKind.MISSED_AGAIN, id="missed_again", earlier=(calls[0].call.as_missed(),)
        )
        settlement = NumberSettlement(
            account=ACCOUNT,
            number=NUMBER,
            decided=(m1.call_id, m2.call_id, back.call_id),
            links={
                m1.call_id: Link(m1.call_id, back.call_id, 5000),
                m2.call_id: Link(m1.call_id, back.call_id),
                back.call_id: Link(m1.call_id, back.call_id),
            },
            overdue_sent=(),
            dispatches=((m2.call_id, NewDispatch(f"{ACCOUNT}/crm", again, 1000.0)),),
        )
        await store.settle_number(settlement)
        await store.settle_number(settlement)  # a round repeated after a crash
        rows = await store.dispatches_for(ACCOUNT, m2.call_id)
        assert [(r.key, r.record) for r in rows] == [("missed_again", again)]
        calls = await store.number_calls(ACCOUNT, NUMBER)
        assert all(c.decided for c in calls)
        assert [(c.group, c.called_back_by) for c in calls] == [(m1.call_id, back.call_id)] * 3
        assert await store.unsettled_numbers(2000.0, 4999.0, 10) == []
        assert await store.unsettled_numbers(2000.0, 5000.0, 10) == [(ACCOUNT, NUMBER)]
        await store.settle_number(
            NumberSettlement(ACCOUNT, NUMBER, (), {}, overdue_sent=(m1.call_id,), dispatches=())
        )
        assert await store.unsettled_numbers(2000.0, 9999.0, 10) == []
        assert [c.overdue_sent for c in await store.number_calls(ACCOUNT, NUMBER)] == [
            True,
            False,
            False,
        ]
        assert await store.missed_summaries(scenarios.START) == {ACCOUNT: MissedSummary(2, 0, 1)}
        assert await store.missed_summaries(scenarios.START + 1) == {
            ACCOUNT: MissedSummary(1, 0, 1)  # the second missed call and the callback
        }

        # The same fact again changes nothing; a changed one is decided again.
        kept = missed.number_call(states[0], [f"{ACCOUNT}/crm"])
        await store.commit_event(None, states[0], [], number_call=kept)
        assert await store.unsettled_numbers(9999.0, 0.0, 10) == []
        assert kept is not None
        changed = kept.model_copy(update={"seen_by": (f"{ACCOUNT}/crm", f"{ACCOUNT}/other")})
        await store.commit_event(None, states[0], [], number_call=changed)
        assert await store.unsettled_numbers(9999.0, 0.0, 10) == [(ACCOUNT, NUMBER)]
    finally:
        await store.close()


def test_a_call_the_lifecycle_does_not_keep() -> None:
    """Internal calls, outbound calls nobody answered and unfinished calls play no part."""
    for s in (scenarios.internal(), scenarios.outbound_unanswered()):
        assert missed.number_call(finished(s), ["x"]) is None
    ringing = finished(scenarios.inbound_missed()).model_copy(update={"finished_by": None})
    assert missed.number_call(ringing, ["x"]) is None
    kept = missed.number_call(finished(scenarios.outbound_answered()), ["b", "a", "b"])
    assert isinstance(kept, NumberCall) and kept.reached and kept.seen_by == ("a", "b")
