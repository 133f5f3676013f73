"""A ticket create whose answer was lost, settled after the number's next call used the ticket.

The order a crash makes: a call's ticket create is carried out by Usedesk but its answer never
comes back (the sandbox's ``drop`` with ``apply``), so the plugin holds only the create's
intent. The process restarts (a fresh runtime on the same effects) and, before the
interrupted call is retried, the same number's next call is handled: it finds the client that
create made and its open ticket, remembers the client, and comments there. Then the first
call's hook runs again. It must settle its intent (find its own ticket by ``additional_id``)
and record what that create did, not take the ticket for another call's and write again.

The other orders of one number's two calls around a create that may still land follow: the
next call before the create has landed (it must wait, then use what it made), ringing
before it and ending after it (it must look again), and a create landing after
``write_settle_seconds``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connector_core import tracker
from connector_core.callstate import CallState, LifecycleEvent, LifecycleKind
from connector_core.events import SipuniEvent, parse_event
from connector_core.plugin import RetryLater, TransientError
from connector_core.simulator import scenarios
from plugins.usedesk import flow
from tests.usedesk.missed_world import (
    ACCOUNT,
    CLIENT,
    MissedWorld,
    comments_with,
    missed_call,
    missed_world,
)

Step = tuple[CallState, LifecycleEvent]


def steps(scenario: scenarios.Scenario) -> list[Step]:
    """The call's lifecycle records as the tracker makes them, each with the call then."""
    state: CallState | None = None
    made: list[Step] = []
    for params in scenario.events:
        event = parse_event(params)
        assert isinstance(event, SipuniEvent)
        state, records = tracker.apply(state, event, account=ACCOUNT, region="RU", received_at=1.0)
        made.extend((state, record) for record in records)
    return made


async def run(world: MissedWorld, some: list[Step]) -> None:
    for call, record in some:
        await world.host.call_lifecycle(world.integration, call, record)


async def interrupted(world: MissedWorld, at: list[Step], kind: LifecycleKind) -> list[Step]:
    """Run the call's steps until ``kind``, whose ticket create Usedesk carries out without an
    answer; then restart the runtime as a new process would. Returns the steps left, ``kind``
    first (the redelivery)."""
    index = next(i for i, (_, record) in enumerate(at) if record.kind is kind)
    await run(world, at[:index])
    world.sandbox.faults.configure(
        {"mode": "drop", "apply": True, "count": 1, "paths": ["/create/ticket"]}
    )
    with pytest.raises(TransientError):
        await run(world, at[index : index + 1])
    await world.integration.runtime.aclose()
    world.integration.runtime = flow.UsedeskRuntime(world.integration)
    return at[index:]


async def next_call_first(
    tmp_path: Path, first_call: scenarios.Scenario, next_call: scenarios.Scenario, at: LifecycleKind
) -> tuple[dict[str, Any], list[str]]:
    """The first call's create interrupted at ``at``, the next call handled, then the first
    call's redelivery. Checks the one ticket (the first call's) holds each call's comment
    once; returns the first call's record and the writes Usedesk got."""
    async with missed_world(tmp_path, write_settle_seconds=0) as world:
        left = await interrupted(world, steps(first_call), at)
        await run(world, steps(next_call))  # handled first: it comments on that ticket
        await run(world, left)
        record = await world.integration.effects.get(f"call:{first_call.call_id}")
    [ticket] = world.tickets()
    assert ticket["additional_id"] == first_call.call_id
    assert len(comments_with(ticket, f"ID: {first_call.call_id}<")) == 1
    assert len(comments_with(ticket, f"ID: {next_call.call_id}<")) == 1
    assert record is not None and record["ticket_id"] == ticket["id"]
    return record, world.writes()


async def test_a_missed_calls_comment_carried_by_a_lost_create_is_not_written_again(
    tmp_path: Path,
) -> None:
    # The missed call's ticket is made at its end, its comment the first message.
    record, writes = await next_call_first(
        tmp_path, missed_call(0, 1), missed_call(5, 2), LifecycleKind.FINISHED
    )
    assert writes == ["/create/ticket", "/create/comment"]  # the comment is the next call's
    assert record["ticket_new"] is True and record["comment_in_ticket"] is True


async def test_an_answered_calls_lost_create_is_recorded_as_its_own_ticket(
    tmp_path: Path,
) -> None:
    first_call = scenarios.inbound_answered(
        ("101",), "101", client=CLIENT, start=scenarios.START, seq=1
    )
    next_call = scenarios.inbound_answered(
        ("102",), "102", client=CLIENT, start=scenarios.START + 300, seq=2
    )
    # Made on answer, with its owner (agent 2, who answered): the comment comes at the end.
    record, _ = await next_call_first(tmp_path, first_call, next_call, LifecycleKind.ANSWERED)
    assert record["ticket_new"] is True and record["owner_set"] == 2


async def run_waiting(world: MissedWorld, some: list[Step]) -> list[str]:
    """``run``, each step asked again when it must wait (as the dispatcher does after a
    ``RetryLater``). Returns why each wait was asked for."""
    waits: list[str] = []
    for call, record in some:
        while True:
            try:
                await world.host.call_lifecycle(world.integration, call, record)
                break
            except RetryLater as wait:
                waits.append(str(wait))
                await asyncio.sleep(wait.seconds)
    return waits


async def seeded_clients(world: MissedWorld, known: bool) -> set[Any]:
    """The sandbox's clients before the calls; with ``known``, Usedesk also gets the
    number's client (with no open ticket)."""
    seeded = {c["id"] for c in world.sandbox.snapshot()["clients"]}
    if known:
        await world.integration.runtime.client.create_client(name="Клиент", phone_digits=CLIENT)
    return seeded


def assert_one_client_one_ticket(
    world: MissedWorld, seeded: set[Any], *calls: scenarios.Scenario
) -> dict[str, Any]:
    """One client (made or known) owns the one ticket, and each call is commented on it once."""
    [client] = [c for c in world.sandbox.snapshot()["clients"] if c["id"] not in seeded]
    [ticket] = world.tickets()
    assert ticket["client_id"] == client["id"]
    for call in calls:
        assert len(comments_with(ticket, f"ID: {call.call_id}<")) == 1, call.call_id
    return ticket


@pytest.mark.parametrize("known", [False, True], ids=["new number", "client without ticket"])
async def test_the_numbers_next_call_waits_for_a_create_that_may_still_land(
    tmp_path: Path, known: bool
) -> None:
    """The first call's ticket create (making the client too, for a new number) is carried
    out late, after the connector stopped waiting, and the process restarts. The number's
    next call, handled before the create has landed, must not make a second client or
    ticket: it waits until the create could have landed (``write_settle_seconds``), then
    finds that client and its ticket."""
    first_call, next_call = missed_call(0, 1), missed_call(5, 2)
    async with missed_world(tmp_path, write_settle_seconds=1.0, request_timeout_seconds=0.3) as w:
        seeded = await seeded_clients(w, known)
        w.sandbox.faults.configure(
            {"mode": "late", "late_s": 0.6, "count": 1, "paths": ["/create/ticket"]}
        )
        first = steps(first_call)
        with pytest.raises(TransientError):
            await run(w, first)  # its end: the create times out; Usedesk carries it out later
        await w.integration.runtime.aclose()
        w.integration.runtime = flow.UsedeskRuntime(w.integration)
        waits = await run_waiting(w, steps(next_call))
        await run_waiting(w, first[-1:])  # the first call's end, redelivered
        ticket = assert_one_client_one_ticket(w, seeded, first_call, next_call)
    assert waits and "may still land" in waits[0], waits
    assert ticket["additional_id"] == first_call.call_id


@pytest.mark.parametrize("known", [False, True], ids=["new number", "client without ticket"])
async def test_the_next_call_that_looked_before_a_create_looks_again(
    tmp_path: Path, known: bool
) -> None:
    """The number's next call rings (and looks the number up) before the first call's end
    makes the ticket; at its own end it must use that ticket, not its stale look-up's "no
    open ticket". Nothing fails here: two overlapping calls of one person."""
    first_call, next_call = missed_call(0, 1), missed_call(1, 2)
    async with missed_world(tmp_path, write_settle_seconds=1.0) as w:
        seeded = await seeded_clients(w, known)
        later = steps(next_call)
        await run(w, later[:1])  # the next call rings: looked up, nothing open
        await run(w, steps(first_call))  # the first call ends: its ticket is made
        await run(w, later[1:])
        assert_one_client_one_ticket(w, seeded, first_call, next_call)


@pytest.mark.parametrize("known", [False, True], ids=["new number", "client without ticket"])
async def test_a_create_settled_first_still_makes_the_next_call_look_again(
    tmp_path: Path, known: bool
) -> None:
    """The first call's create is carried out late; the number's next call rings meanwhile
    (nothing found yet); the first call's retry settles its create before the next call
    ends. The next call must still look again and use that ticket."""
    first_call, next_call = missed_call(0, 1), missed_call(5, 2)
    async with missed_world(tmp_path, write_settle_seconds=1.0, request_timeout_seconds=0.3) as w:
        seeded = await seeded_clients(w, known)
        w.sandbox.faults.configure(
            {"mode": "late", "late_s": 0.6, "count": 1, "paths": ["/create/ticket"]}
        )
        first, later = steps(first_call), steps(next_call)
        with pytest.raises(TransientError):
            await run(w, first)
        await w.integration.runtime.aclose()
        w.integration.runtime = flow.UsedeskRuntime(w.integration)
        await run(w, later[:1])  # rings before the create has landed
        await run_waiting(w, first[-1:])  # the first call's retry settles it
        await run_waiting(w, later[1:])
        assert_one_client_one_ticket(w, seeded, first_call, next_call)


async def test_a_create_landing_after_the_settle_time_is_still_found_by_its_retry(
    tmp_path: Path,
) -> None:
    """A create lands later than ``write_settle_seconds`` (set too short for this Usedesk):
    the number's next call has made its own ticket and client by then. The first call's
    retry must look for its ticket where its create was sent (among the number's clients),
    find it and record it, not write its comment a second time."""
    first_call, next_call = missed_call(0, 1), missed_call(5, 2)
    async with missed_world(tmp_path, write_settle_seconds=0.5, request_timeout_seconds=0.3) as w:
        w.sandbox.faults.configure(
            {"mode": "late", "late_s": 1.5, "count": 1, "paths": ["/create/ticket"]}
        )
        first = steps(first_call)
        with pytest.raises(TransientError):
            await run(w, first)
        await w.integration.runtime.aclose()
        w.integration.runtime = flow.UsedeskRuntime(w.integration)
        await asyncio.sleep(0.3)  # past the settle time: the next call does not wait
        await run_waiting(w, steps(next_call))
        await asyncio.sleep(1.5)  # the first create lands
        await run_waiting(w, first[-1:])
        tickets = w.tickets()
        record = await w.integration.effects.get(f"call:{first_call.call_id}")
    [made] = [t for t in tickets if t["additional_id"] == first_call.call_id]
    assert record is not None and record["ticket_id"] == made["id"]
    for call in (first_call, next_call):
        assert sum(len(comments_with(t, f"ID: {call.call_id}<")) for t in tickets) == 1


async def waiting_its_turn(world: MissedWorld, some: list[Step], paused: float) -> None:
    """Run ``some`` with the rate limiter holding every request for ``paused`` seconds from the
    start of the last step, whose first request is then its ticket create (the agents, read
    once per ten minutes, are read before)."""
    await run(world, some[:-1])
    await world.integration.runtime.agents()
    world.integration.runtime.client.limiter.pause_for(paused)
    await run(world, some[-1:])


async def test_a_create_stopped_while_it_waits_its_turn_leaves_nothing_to_wait_for(
    tmp_path: Path,
) -> None:
    """The process stops while the first call's ticket create waits for the rate limiter:
    nothing was sent, so nothing may still land. The number's next call must not wait
    ``write_settle_seconds`` for it, and the first call's redelivery makes the one ticket."""
    first_call, next_call = missed_call(0, 1), missed_call(5, 2)
    async with missed_world(tmp_path, write_settle_seconds=60.0) as w:
        seeded = await seeded_clients(w, known=False)
        first = steps(first_call)
        stopped = asyncio.create_task(waiting_its_turn(w, first, paused=60.0))
        limiter = w.integration.runtime.client.limiter
        async with asyncio.timeout(10):
            while not limiter.waiting() and not stopped.done():
                await asyncio.sleep(0.01)
        assert not stopped.done() and "/create/ticket" not in w.writes()
        stopped.cancel()  # the process stops
        with pytest.raises(asyncio.CancelledError):
            await stopped
        assert await w.integration.effects.get(f"intent:ticket:{first_call.call_id}") is None
        await w.integration.runtime.aclose()
        w.integration.runtime = flow.UsedeskRuntime(w.integration)
        waits = await run_waiting(w, steps(next_call))
        await run_waiting(w, first[-1:])  # the first call's end, redelivered
        ticket = assert_one_client_one_ticket(w, seeded, first_call, next_call)
    assert waits == []
    assert ticket["additional_id"] == next_call.call_id


async def test_a_create_that_waited_its_turn_counts_its_settle_time_from_when_it_left(
    tmp_path: Path,
) -> None:
    """The first call's ticket create waits its turn at the rate limiter, is sent, and is
    carried out late, after the connector stopped waiting for the answer. Counted from
    before the wait, ``write_settle_seconds`` would be over before the create lands, and
    the number's next call would make a second client and ticket; counted from when it was
    sent, the next call waits for it and then uses what it made."""
    first_call, next_call = missed_call(0, 1), missed_call(5, 2)
    async with missed_world(tmp_path, write_settle_seconds=1.0, request_timeout_seconds=0.3) as w:
        seeded = await seeded_clients(w, known=False)
        w.sandbox.faults.configure(
            {"mode": "late", "late_s": 0.6, "count": 1, "paths": ["/create/ticket"]}
        )
        first = steps(first_call)
        with pytest.raises(TransientError):
            # Held 0.8 s, sent, no answer within 0.3 s: it lands 1.4 s after it began.
            await waiting_its_turn(w, first, paused=0.8)
        await w.integration.runtime.aclose()
        w.integration.runtime = flow.UsedeskRuntime(w.integration)
        waits = await run_waiting(w, steps(next_call))
        await run_waiting(w, first[-1:])  # the first call's end, redelivered
        await asyncio.gather(*w.sandbox.late_writes)  # the first create has landed by now
        ticket = assert_one_client_one_ticket(w, seeded, first_call, next_call)
    assert waits and "may still land" in waits[0], waits
    assert ticket["additional_id"] == first_call.call_id
