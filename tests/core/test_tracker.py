"""The call tracker on realistic calls: each Sipuni sequence must end as the product decided.

Calls come from ``connector_core.simulator.scenarios`` (sequences A–D of the Sipuni reference
and their variants); each scenario states what the call must become, and these tests hold the
tracker to it, then look at the details one behaviour at a time.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import pytest

from connector_core import tracker
from connector_core.callstate import CallState, Direction, LifecycleEvent, LifecycleKind, Outcome
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from connector_core.simulator.scenarios import Scenario

REGION = "RU"
TIMEOUT = 3 * 3600.0
RECEIVED = 1_717_180_000.0  # when the service received the first request
DERIVED_ONLY = {"events", "emitted", "last_received_at"}


@dataclass
class Run:
    state: CallState
    emitted: list[LifecycleEvent]

    @property
    def keys(self) -> list[str]:
        return [e.id for e in self.emitted]


def parsed(raw: dict[str, str]) -> SipuniEvent:
    event = parse_event(raw)
    assert isinstance(event, SipuniEvent), event
    return event


def play(
    s: Scenario,
    *,
    events: list[dict[str, str]] | None = None,
    state: CallState | None = None,
    received: float = RECEIVED,
) -> Run:
    """Feed the scenario's requests to the tracker, received as far apart as ``delays`` says."""
    emitted: list[LifecycleEvent] = []
    events = s.events if events is None else events
    delays = s.delays if events is s.events else [1.0] * len(events)
    for raw, delay in zip(events, delays, strict=True):
        received += delay
        state, new = tracker.apply(
            state, parsed(raw), account=s.account, region=REGION, received_at=received
        )
        emitted += new
    assert state is not None
    return Run(state, emitted)


def expire(run: Run, *, after: float = TIMEOUT) -> Run:
    state, new = tracker.expire(
        run.state, now=run.state.last_received_at + after, timeout=TIMEOUT, region=REGION
    )
    return Run(state, run.emitted + new)


def summary(state: CallState, emitted: list[LifecycleEvent]) -> dict[str, Any]:
    """The state in the vocabulary of ``Scenario.expected``."""
    return {
        "direction": state.direction.value,
        "client_number": state.client_number,
        "line_number": state.line_number,
        "employee": state.employee,
        "outcome": state.outcome.value,
        "legs": [leg.extension for leg in state.legs],
        "first_extension": state.first_extension,
        "answers": [a.extension for a in state.answers],
        "answered_by": state.answered_by,
        "first_answered_by": state.first_answered_by,
        "transfers": [(t.from_extension, t.to_extension) for t in state.transfers],
        "schemes": [visit.id for visit in state.schemes],
        "hangups": [(h.at, h.status, h.extension) for h in state.hangups],
        "started_at": state.started_at,
        "answered_at": state.answered_at,
        "ended_at": state.ended_at,
        "talk_seconds": state.talk_seconds,
        "duration_seconds": state.duration_seconds,
        "sipuni_status": state.sipuni_status,
        "last_called": state.last_called,
        "record_url": state.record_url,
        "finished_by": state.finished_by,
        "lifecycle": sorted(e.id for e in emitted),
    }


def finish(s: Scenario) -> Run:
    """Play the scenario; close it by the timeout when it has no final hang-up."""
    run = play(s)
    return expire(run) if s.expected["finished_by"] == "timeout" else run


VARIANTS = [
    sc.inbound_answered(),
    sc.inbound_answered(["103", "101", "102"], "102", ring_gap=15, seq=1),
    sc.inbound_answered(["205"], "205", client="+998901234567", seq=2),
    sc.inbound_missed(),
    sc.inbound_missed(["102", "101"], ring_gap=20, status="CANCEL", seq=3),
    sc.inbound_transferred(),
    sc.inbound_transferred("102", "101", transfer_from_field=False, seq=4),
    sc.scheme_transfer(),
    sc.scheme_transfer(answered_by=None, seq=5),
    sc.scheme_transfer(transferred=False, seq=6),
    sc.outbound_answered(),
    sc.outbound_answered("205", duplicate_ring=False, client="89031112233", seq=7),
    sc.outbound_unanswered(),
    sc.outbound_unanswered(status="BUSY", seq=8),
    sc.internal(),
    sc.internal("102", "101", answered=False, seq=9),
]
ALL = VARIANTS + [sc.without_final_hangup(s) for s in VARIANTS]


@pytest.mark.parametrize("s", ALL, ids=lambda s: f"{s.name}-{s.call_id}")
def test_scenario_ends_as_expected(s: Scenario) -> None:
    run = finish(s)
    assert summary(run.state, run.emitted) == s.expected
    assert run.state.call_id == s.call_id and run.state.account == s.account
    # Each lifecycle event once, "started" first and "finished" last.
    assert len(run.keys) == len(set(run.keys))
    assert run.keys[0] == "started" and run.keys[-1] == "finished"
    assert list(run.state.emitted) == run.keys


# --- sequence A: inbound, answered -----------------------------------------------------------


def test_inbound_answered_in_detail() -> None:
    s = sc.inbound_answered(["101", "102"], "101", client="89161234567")
    run = play(s)
    state = run.state
    assert state.direction is Direction.INBOUND
    assert state.client_number == "+79161234567"
    assert state.client_number_raw == "89161234567"
    assert state.line_number == "+74951234567"
    assert [(leg.extension, leg.rang_at, leg.transfer_from) for leg in state.legs] == [
        ("101", sc.START, None),
        ("102", sc.START, None),
    ]
    assert state.first_extension == "101"
    assert [(a.extension, a.at) for a in state.answers] == [("101", sc.START + 9)]
    assert state.answered_by == state.first_answered_by == "101"
    assert state.owner("last") == state.owner("first") == "101"
    assert state.transfers == () and state.hangups == ()
    assert state.outcome is Outcome.ANSWERED and state.answered and state.finished
    assert (state.started_at, state.answered_at, state.ended_at) == (
        sc.START,
        sc.START + 9,
        sc.START + 195,
    )
    assert (state.talk_seconds, state.duration_seconds) == (186, 195)
    assert state.sipuni_status == "ANSWER" and state.last_called == "101"
    assert state.record_url and state.record_url.startswith(
        f"https://sipuni.com/api/crm/record?id={s.call_id}&hash="
    )
    assert state.scheme is not None
    assert (state.scheme.id, state.scheme.name) == sc.INBOUND_SCHEME
    assert state.in_scheme("Входящая") and state.in_scheme("000-913898")
    assert state.finished_by == "hangup" and state.timed_out_at is None
    assert [(e.kind, e.id, e.extension) for e in run.emitted] == [
        (LifecycleKind.STARTED, "started", None),
        (LifecycleKind.ANSWERED, "answered", "101"),
        (LifecycleKind.FINISHED, "finished", None),
    ]


def test_each_request_emits_what_it_starts() -> None:
    s = sc.inbound_answered()
    state = None
    per_request = []
    for raw in s.events:
        state, new = tracker.apply(
            state, parsed(raw), account=s.account, region=REGION, received_at=RECEIVED
        )
        per_request.append([e.id for e in new])
    assert per_request == [["started"], [], ["answered"], ["finished"]]


def test_ringing_then_talking_before_the_end() -> None:
    s = sc.inbound_answered()
    ringing = play(s, events=s.events[:2]).state
    assert ringing.outcome is Outcome.RINGING and not ringing.finished
    talking = play(s, events=s.events[:3]).state
    assert talking.outcome is Outcome.TALKING and talking.answered and not talking.finished
    assert talking.ended_at is None and talking.talk_seconds == 0
    assert talking.duration_seconds is None


def test_legs_are_kept_in_ring_order_not_extension_order() -> None:
    s = sc.inbound_answered(["103", "101", "102"], "102", ring_gap=15)
    state = play(s).state
    assert [leg.extension for leg in state.legs] == ["103", "101", "102"]
    assert [leg.rang_at for leg in state.legs] == [sc.START, sc.START + 15, sc.START + 30]
    assert state.first_extension == "103"
    # …whatever order the requests arrive in.
    assert play(s, events=list(reversed(s.events))).state.first_extension == "103"


# --- sequence B: inbound, missed -------------------------------------------------------------


def test_missed_call_belongs_to_nobody_but_knows_its_first_extension() -> None:
    s = sc.inbound_missed(["102", "101"], ring_gap=20)
    run = play(s)
    state = run.state
    assert state.outcome is Outcome.MISSED and not state.answered
    assert state.owner() is None and state.owner("first") is None  # the plugin picks on-duty
    assert state.first_extension == "102"  # the first leg of event 1 …
    assert state.last_called == "101"  # … not last_called
    assert state.answers == () and state.answered_at is None and state.talk_seconds == 0
    assert state.duration_seconds == 60
    assert state.sipuni_status == "NOANSWER"
    assert state.client_number == "+79161234567"
    # The final event ends on the company line with an _id suffix: it is the line, not a client.
    assert state.line_number == "+74951234567"
    assert state.record_url is not None  # Sipuni sends a link even for unanswered calls
    assert run.keys == ["started", "finished"]


@pytest.mark.parametrize("status", ["NOANSWER", "BUSY", "CANCEL", "CHANUNAVAIL"])
def test_any_unanswered_status_of_an_inbound_call_is_missed(status: str) -> None:
    state = play(sc.inbound_missed(status=status)).state
    assert state.outcome is Outcome.MISSED
    assert state.sipuni_status == status


def test_final_event_alone_still_tells_a_missed_call() -> None:
    s = sc.inbound_missed()
    run = play(s, events=s.events[-1:])
    assert run.state.outcome is Outcome.MISSED
    assert run.state.client_number == "+79161234567"
    assert run.state.line_number == "+74951234567"
    assert run.state.legs == ()  # no leg is made up from last_called
    assert run.keys == ["started", "finished"]


# --- sequence C: transfer between employees --------------------------------------------------


@pytest.mark.parametrize("transfer_from_field", [True, False])
def test_transfer_between_employees(transfer_from_field: bool) -> None:
    s = sc.inbound_transferred("101", "102", transfer_from_field=transfer_from_field)
    run = play(s)
    state = run.state
    t = sc.START
    assert [(leg.extension, leg.transfer_from) for leg in state.legs] == [
        ("101", None),
        ("102", "101"),
    ]
    assert [(a.extension, a.at) for a in state.answers] == [("101", t + 8), ("102", t + 70)]
    assert state.first_answered_by == "101" and state.answered_by == "102"
    assert state.owner() == state.owner("last") == "102"
    assert state.owner("first") == "101"
    assert [(x.from_extension, x.to_extension, x.at) for x in state.transfers] == [
        ("101", "102", t + 70)
    ]
    assert [(h.at, h.status) for h in state.hangups] == [(t + 72, "ANSWER")]
    assert state.answered_at == t + 8 and state.talk_seconds == 292
    assert state.outcome is Outcome.ANSWERED and state.last_called == "102"
    assert [(e.id, e.extension) for e in run.emitted] == [
        ("started", None),
        ("answered", "101"),
        ("transferred:102", "102"),
        ("finished", None),
    ]


def test_intermediate_hangup_does_not_finish_the_call() -> None:
    s = sc.inbound_transferred()
    run = play(s, events=s.events[:-1])
    assert not run.state.finished
    assert run.state.outcome is Outcome.TALKING
    assert len(run.state.hangups) == 1
    assert "finished" not in run.keys


# --- scheme transfer -------------------------------------------------------------------------


def test_call_moved_from_a_distributor_into_another_scheme() -> None:
    s = sc.scheme_transfer(sc.DISTRIBUTOR, sc.SALES, answered_by="102")
    run = play(s)
    state = run.state
    assert [(v.id, v.name) for v in state.schemes] == [sc.DISTRIBUTOR, sc.SALES]
    assert state.scheme is not None and state.scheme.id == "000-100"  # entered first
    assert state.schemes[1].entered_at == sc.START + 12
    assert state.in_scheme("Продажи") and state.in_scheme("000-100")
    assert not state.in_scheme("Входящая")
    assert state.legs[0].extension == "101"  # the IVR itself rang nobody
    assert state.answered_by == "102"
    entered = [e for e in run.emitted if e.kind is LifecycleKind.ENTERED_SCHEME]
    assert [(e.id, e.scheme and e.scheme.name) for e in entered] == [
        ("entered_scheme:000-200", "Продажи")
    ]
    assert run.keys == ["started", "entered_scheme:000-200", "answered", "finished"]


def test_call_that_stays_in_the_distributor_enters_no_other_scheme() -> None:
    run = play(sc.scheme_transfer(transferred=False))
    assert [(v.id, v.name) for v in run.state.schemes] == [sc.DISTRIBUTOR]
    assert not any(e.kind is LifecycleKind.ENTERED_SCHEME for e in run.emitted)


def test_missed_in_the_target_scheme() -> None:
    run = play(sc.scheme_transfer(answered_by=None))
    assert run.state.outcome is Outcome.MISSED
    assert run.keys == ["started", "entered_scheme:000-200", "finished"]


# --- sequence D: outbound --------------------------------------------------------------------


def test_outbound_answered_takes_missing_fields_from_the_first_event() -> None:
    s = sc.outbound_answered("101")
    # Only the first event names anyone: the rest carry call_id, timestamp and little else.
    assert all("src_num" not in raw and "dst_num" not in raw for raw in s.events[1:])
    run = play(s)
    state = run.state
    assert state.direction is Direction.OUTBOUND
    assert state.client_number == "+79161234567"
    assert state.employee == "101"
    assert state.line_number is None
    assert state.legs == () and state.first_extension is None  # nobody's phone was rung
    assert [(a.extension, a.at) for a in state.answers] == [("101", sc.START + 10)]
    assert state.owner() == state.owner("first") == "101"
    assert state.outcome is Outcome.ANSWERED
    assert (state.talk_seconds, state.duration_seconds) == (115, 125)
    assert state.scheme is not None and state.scheme.name == "Исходящая"
    assert run.keys == ["started", "answered", "finished"]


def test_outbound_follow_ups_first_still_resolve_once_the_first_event_arrives() -> None:
    s = sc.outbound_answered()
    early = play(s, events=s.events[1:])  # the full event 1 is late
    assert early.state.direction is Direction.UNKNOWN and early.state.client_number is None
    late = play(s, events=s.events[:1], state=early.state)
    assert late.state.direction is Direction.OUTBOUND
    assert late.state.client_number == "+79161234567"
    assert late.state.answered_by == "101"
    assert late.keys == []  # started, answered and finished were already emitted
    assert sorted(early.keys) == ["answered", "finished", "started"]


@pytest.mark.parametrize("status", ["NOANSWER", "BUSY", "CANCEL"])
def test_unanswered_outbound_is_not_missed(status: str) -> None:
    run = play(sc.outbound_unanswered("101", status=status))
    state = run.state
    assert state.outcome is Outcome.NOT_ANSWERED
    assert state.outcome is not Outcome.MISSED
    assert state.owner() == "101"  # it stays with the employee who dialled
    assert state.answers == () and state.talk_seconds == 0
    assert state.duration_seconds == 30
    assert run.keys == ["started", "finished"]


# --- internal --------------------------------------------------------------------------------


def test_internal_call() -> None:
    run = play(sc.internal("101", "102"))
    state = run.state
    assert state.direction is Direction.INTERNAL
    assert state.client_number is None and state.line_number is None
    assert state.employee == "101"
    assert [leg.extension for leg in state.legs] == ["102"]
    assert state.answered_by == "102" and state.outcome is Outcome.ANSWERED
    assert state.schemes == ()
    assert run.keys == ["started", "answered", "finished"]


def test_unanswered_internal_call_stays_with_the_caller() -> None:
    state = play(sc.internal("101", "102", answered=False)).state
    assert state.outcome is Outcome.NOT_ANSWERED
    assert state.owner() == "101"


# --- repetition, order, missing fields -------------------------------------------------------


@pytest.mark.parametrize("s", VARIANTS, ids=lambda s: f"{s.name}-{s.call_id}")
def test_duplicated_events_change_nothing(s: Scenario) -> None:
    reference = play(s)
    for index in range(len(s.events)):
        again = play(sc.duplicated(s, index))
        assert again.state.model_dump(exclude=DERIVED_ONLY) == reference.state.model_dump(
            exclude=DERIVED_ONLY
        )
        assert again.keys == reference.keys
        assert len(again.state.events) == len(reference.state.events)


def test_repeating_an_event_emits_nothing_and_keeps_the_state() -> None:
    s = sc.inbound_transferred()
    run = play(s)
    for raw in s.events:
        state, new = tracker.apply(
            run.state, parsed(dict(raw)), account=s.account, region=REGION, received_at=RECEIVED
        )
        assert new == []
        assert state.model_dump(exclude={"last_received_at"}) == run.state.model_dump(
            exclude={"last_received_at"}
        )


def test_reversed_order_gives_the_same_call() -> None:
    for s in VARIANTS:
        forward = play(s)
        backward = play(s, events=list(reversed(s.events)))
        assert backward.state.model_dump(exclude=DERIVED_ONLY) == forward.state.model_dump(
            exclude=DERIVED_ONLY
        ), s.name
        assert sorted(backward.keys) == sorted(forward.keys) == s.expected["lifecycle"]


def test_follow_up_without_fields_keeps_what_earlier_events_said() -> None:
    s = sc.inbound_answered()
    bare_answer = {"event": "3", "call_id": s.call_id, "timestamp": str(sc.START + 9)}
    bare_end = {
        "event": "2",
        "call_id": s.call_id,
        "timestamp": str(sc.START + 60),
        "status": "ANSWER",
        "last_called": "101",
    }
    state = play(s, events=[*s.events[:2], bare_answer, bare_end]).state
    assert state.client_number == "+79161234567"
    assert state.line_number == "+74951234567"
    assert state.schemes[0].id == "000-913898"
    # An inbound event 3 that names nobody: last_called on event 2 tells who answered.
    assert state.answered_by == "101"
    assert state.answered_at == sc.START + 9
    assert state.outcome is Outcome.ANSWERED


# --- lost final hang-up ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "outcome"),
    [
        (sc.inbound_answered(), Outcome.ANSWERED),
        (sc.inbound_missed(), Outcome.MISSED),
        (sc.inbound_transferred(), Outcome.ANSWERED),
        (sc.outbound_answered(), Outcome.ANSWERED),
        (sc.outbound_unanswered(), Outcome.NOT_ANSWERED),
        (sc.internal(answered=False), Outcome.NOT_ANSWERED),
    ],
    ids=lambda v: v.name if isinstance(v, Scenario) else v.value,
)
def test_lost_final_hangup_is_finished_by_the_timeout(s: Scenario, outcome: Outcome) -> None:
    run = play(sc.without_final_hangup(s))
    assert not run.state.finished and "finished" not in run.keys

    too_early = expire(run, after=TIMEOUT - 1)
    assert too_early.state is run.state
    assert too_early.keys == run.keys

    done = expire(run)
    assert done.state.finished and done.state.finished_by == "timeout"
    assert done.state.timed_out_at == run.state.last_received_at + TIMEOUT
    assert done.state.outcome is outcome
    assert done.state.ended_at is None
    assert done.keys == [*run.keys, "finished"]

    again = expire(done, after=10 * TIMEOUT)
    assert again.keys == done.keys


def test_timeout_counts_from_the_last_request_received() -> None:
    s = sc.without_final_hangup(sc.inbound_answered())
    run = play(s, events=s.events[:2])
    later = play(s, events=s.events[2:], state=run.state, received=RECEIVED + 1000)
    assert later.state.last_received_at > run.state.last_received_at
    state, new = tracker.expire(
        later.state, now=run.state.last_received_at + TIMEOUT, timeout=TIMEOUT, region=REGION
    )
    assert new == [] and not state.finished


def test_late_final_hangup_after_the_timeout_updates_but_emits_nothing() -> None:
    s = sc.inbound_transferred()
    closed = expire(play(sc.without_final_hangup(s)))
    assert closed.state.finished_by == "timeout"
    late = play(s, events=s.events[-1:], state=closed.state)
    assert late.keys == []
    state = late.state
    assert state.finished_by == "hangup"
    assert state.ended_at == sc.START + 300
    assert state.sipuni_status == "ANSWER" and state.last_called == "102"
    assert state.record_url is not None and state.talk_seconds == 292
    assert state.emitted.count("finished") == 1
    # And it ends exactly as if nothing had been lost.
    assert summary(state, closed.emitted) == s.expected


def test_expire_leaves_a_finished_call_alone() -> None:
    run = play(sc.inbound_answered())
    state, new = tracker.expire(
        run.state, now=run.state.last_received_at + 10 * TIMEOUT, timeout=TIMEOUT, region=REGION
    )
    assert new == [] and state is run.state and state.finished_by == "hangup"


# --- number spellings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [sc.inbound_answered, sc.inbound_missed, sc.inbound_transferred, sc.outbound_answered],
)
def test_8_7_and_plus7_spellings_are_the_same_client(build: Any) -> None:
    base = build()
    runs = {sp: play(sc.with_number_spelling(base, sp)) for sp in ("8", "7", "+7")}
    assert {run.state.client_number for run in runs.values()} == {"+79161234567"}
    assert runs["8"].state.client_number_raw == "89161234567"
    assert runs["+7"].state.client_number_raw == "+79161234567"
    dumps = [
        run.state.model_dump(exclude=DERIVED_ONLY | {"client_number_raw"}) for run in runs.values()
    ]
    assert all(d == dumps[0] for d in dumps)


def test_spelling_actually_changes_the_requests() -> None:
    base = sc.inbound_missed(client="79161234567")
    spelled = sc.with_number_spelling(base, "8")
    assert {raw["src_num"] for raw in spelled.events} == {"89161234567"}
    assert spelled.events != base.events
    assert sc.with_number_spelling(sc.internal(), "8") == sc.internal()


# --- scenario builders -----------------------------------------------------------------------


def test_scenarios_look_like_sipuni_requests() -> None:
    for s in sc.catalogue():
        assert len(s.delays) == len(s.events) and s.delays[0] == 0.0
        assert all(d > 0 for d in s.delays[1:])
        for raw in s.events:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items())
            assert raw["call_id"] == s.call_id
        assert s.events[-1]["event"] == "2"
    ids = [s.call_id for s in sc.catalogue()]
    assert len(ids) == len(set(ids))


def test_shuffled_keeps_the_requests() -> None:
    s = sc.inbound_transferred()
    mixed = sc.shuffled(s, random.Random(7))
    key = sorted(map(sorted, (raw.items() for raw in s.events)))
    assert sorted(map(sorted, (raw.items() for raw in mixed.events))) == key
    assert mixed.events != s.events
    assert len(mixed.delays) == len(mixed.events)


@pytest.mark.parametrize(
    "build",
    [
        lambda: sc.inbound_answered(["101"], "102"),
        lambda: sc.inbound_answered(["101", "101"], "101"),
        lambda: sc.inbound_missed([]),
        lambda: sc.inbound_transferred("101", "101"),
        lambda: sc.internal("101", "101"),
        lambda: sc.with_number_spelling(sc.inbound_answered(client="998901234567"), "8"),
    ],
)
def test_builders_refuse_impossible_calls(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# --- known tracker bugs (reported to the tracker's owner) ------------------------------------


def _transferred_back() -> tuple[Scenario, list[dict[str, str]]]:
    """Sequence C, then 102 hands the caller back to 101, who keeps the call to the end."""
    s = sc.inbound_transferred("101", "102")
    t, acc = sc.START, s.account
    back = [
        {
            "event": "1",
            "call_id": s.call_id,
            "src_num": acc + "102",
            "src_type": "2",
            "short_src_num": "102",
            "dst_num": acc + "101",
            "dst_type": "2",
            "short_dst_num": "101",
            "timestamp": str(t + 150),
            "transfer_from": "102",
        },
        {"event": "3", "call_id": s.call_id, "dst_num": acc + "101", "timestamp": str(t + 160)},
        {
            "event": "4",
            "call_id": s.call_id,
            "status": "ANSWER",
            "call_start_timestamp": str(t),
            "call_answer_timestamp": str(t + 8),
            "timestamp": str(t + 162),
            "transfer_from": "102",
        },
    ]
    final = s.events[-1] | {
        "dst_num": acc + "101",
        "short_dst_num": "101",
        "last_called": "101",
        "transfer_from": "102",
    }
    return s, [*s.events[:-1], *back, final]


def test_call_transferred_back_is_owned_by_whoever_ended_up_with_it() -> None:
    s, events = _transferred_back()
    run = play(s, events=events)
    assert run.state.answered_by == "101"
    assert run.state.owner("last") == "101"
    assert run.state.owner("first") == "101"
    assert [(x.from_extension, x.to_extension) for x in run.state.transfers] == [
        ("101", "102"),
        ("102", "101"),
    ]
    assert run.keys == ["started", "answered", "transferred:102", "transferred:101", "finished"]


def test_scheme_visit_is_announced_once_even_if_first_seen_by_name_only() -> None:
    s = sc.scheme_transfer()
    # The first leg rung in the target scheme reports it by name only; later events by both.
    name_only = {k: v for k, v in s.events[1].items() if k != "treeNumber"}
    events = [s.events[0], name_only, *s.events[2:]]
    run = play(s, events=events)
    entered = [key for key in run.keys if key.startswith("entered_scheme:")]
    assert len(entered) == 1, entered
    assert [(v.id, v.name) for v in run.state.schemes] == [sc.DISTRIBUTOR, sc.SALES]


def test_owner_is_right_when_the_call_finishes_before_the_transfer_answer_arrives() -> None:
    s = sc.inbound_transferred("101", "102")
    late_answer = s.events[3]
    assert late_answer["event"] == "3" and late_answer["short_dst_num"] == "102"
    state = None
    for raw in [*s.events[:3], *s.events[4:], late_answer]:
        state, new = tracker.apply(
            state, parsed(raw), account=s.account, region=REGION, received_at=RECEIVED
        )
        if any(e.kind is LifecycleKind.FINISHED for e in new):
            # The owner is written when the call ends: it must already be the right one.
            assert state.owner("last") == "102"
            assert "transferred:102" in state.emitted
    assert state is not None and state.answered_by == "102"


def test_transfer_without_an_answer_event_for_the_new_leg() -> None:
    s = sc.inbound_transferred("101", "102")
    run = play(s, events=[raw for i, raw in enumerate(s.events) if i != 3])
    assert run.state.answered_by == "102" and run.state.owner() == "102"
    assert [(x.from_extension, x.to_extension) for x in run.state.transfers] == [("101", "102")]
    assert run.keys == ["started", "answered", "transferred:102", "finished"]


def test_all_permutations_of_a_transfer_converge() -> None:
    """Exhaustive check on the longest sequence (the property tests sample the others)."""
    s = sc.inbound_transferred()
    reference = play(s)
    for order in itertools.permutations(s.events):
        run = play(s, events=list(order))
        assert run.state.model_dump(exclude=DERIVED_ONLY) == reference.state.model_dump(
            exclude=DERIVED_ONLY
        )
        assert sorted(run.keys) == s.expected["lifecycle"]


# --- a scheme named by its name, its number, or both -----------------------------------------

RINGS = (1, 2)  # the events of sc.scheme_transfer() that ring the legs in the target scheme


def entered(run: Run) -> list[LifecycleEvent]:
    return [e for e in run.emitted if e.kind is LifecycleKind.ENTERED_SCHEME]


def test_scheme_named_then_numbered_is_one_visit_announced_once_by_its_first_name() -> None:
    s = sc.with_scheme_named_by(sc.scheme_transfer(), "treeName", RINGS)
    run = play(s)
    assert [(v.id, v.name) for v in run.state.schemes] == [sc.DISTRIBUTOR, sc.SALES]
    [record] = entered(run)
    # Emitted while only the name was known, under the name; the id never changes after.
    assert record.id == "entered_scheme:Продажи"
    assert record.scheme is not None
    assert (record.scheme.id, record.scheme.name) == (None, "Продажи")
    # What the hook gets is refreshed: the number the call learnt since.
    assert tracker.refreshed(record, run.state).scheme == run.state.schemes[1]
    [now] = [r for r in tracker.emitted_records(run.state) if r.id == record.id]
    assert now.scheme == run.state.schemes[1] and now.scheme.id == "000-200"
    assert run.keys == ["started", "entered_scheme:Продажи", "answered", "finished"]


def test_scheme_numbered_then_named_is_one_visit_announced_once_by_its_number() -> None:
    s = sc.with_scheme_named_by(sc.scheme_transfer(), "treeNumber", RINGS)
    run = play(s)
    assert [(v.id, v.name) for v in run.state.schemes] == [sc.DISTRIBUTOR, sc.SALES]
    [record] = entered(run)
    assert record.id == "entered_scheme:000-200"
    assert tracker.refreshed(record, run.state).scheme == run.state.schemes[1]
    assert run.state.schemes[1].name == "Продажи"


def test_scheme_named_by_both_in_one_event_is_announced_by_its_number() -> None:
    run = play(sc.scheme_transfer())
    [record] = entered(run)
    assert record.id == "entered_scheme:000-200"
    assert record.scheme == run.state.schemes[1]
    assert (record.scheme.id, record.scheme.name) == sc.SALES


def test_scheme_named_then_numbered_then_both_ends_as_one_visit() -> None:
    # Name only, then number only, then both (the hang-up): one scheme, not two visits. Until
    # the hang-up nothing said the name and the number were one scheme, so each was announced
    # when it came; a late integration is owed the one visit only.
    s = sc.with_scheme_named_by(sc.scheme_transfer(ring_gap=5), "treeName", [1])
    s = sc.with_scheme_named_by(s, "treeNumber", [2])
    run = play(s)
    assert [(v.id, v.name) for v in run.state.schemes] == [sc.DISTRIBUTOR, sc.SALES]
    assert [e.id for e in entered(run)] == ["entered_scheme:Продажи", "entered_scheme:000-200"]
    owed = tracker.emitted_records(run.state)
    assert [e.scheme for e in owed if e.kind is LifecycleKind.ENTERED_SCHEME] == [
        run.state.schemes[1]
    ]


def test_replaying_a_call_known_first_by_name_emits_nothing() -> None:
    s = sc.with_scheme_named_by(sc.scheme_transfer(), "treeName", RINGS)
    run = play(s)
    again = play(s, state=run.state)
    assert again.emitted == []
    assert again.state.emitted == run.state.emitted


def test_a_state_stored_by_an_older_release_keeps_its_scheme_ids() -> None:
    """A state whose scheme was announced under its name, stored before records had payloads."""
    s = sc.with_scheme_named_by(sc.scheme_transfer(), "treeName", RINGS)
    first = play(s, events=s.events[:2])
    stored = CallState.model_validate_json(first.state.model_dump_json())
    assert stored.emitted == ("started", "entered_scheme:Продажи")
    rest = play(s, events=s.events[2:], state=stored)
    assert [e.kind for e in rest.emitted] == [LifecycleKind.ANSWERED, LifecycleKind.FINISHED]


def test_a_states_records_are_worked_out_once_for_the_worker_router_and_dispatcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worked_out: list[CallState] = []
    real = tracker._lifecycle

    def counting(state: CallState) -> list[LifecycleEvent]:
        worked_out.append(state)
        return real(state)

    monkeypatch.setattr(tracker, "_lifecycle", counting)
    state, _ = tracker.apply(
        None,
        parsed(sc.inbound_answered().events[0]),
        account="012345",
        region="RU",
        received_at=1.0,
    )
    first = tracker.lifecycle(state)
    assert tracker.lifecycle(state) is first
    assert [r.id for r in tracker.emitted_records(state)] == ["started"]
    # Once for the worker's apply (before "started" was marked emitted) and the three
    # lookups of the emitted state: marking a record emitted changed none of the records.
    assert len(worked_out) == 1
    copy = state.model_copy(update={"emitted": []})
    assert [r.id for r in tracker.lifecycle(copy)] == ["started"]
    assert len(worked_out) == 2  # a new object is a new state: worked out again


def serialised_events(monkeypatch: pytest.MonkeyPatch) -> list[SipuniEvent]:
    """The events serialised on their own (``model_dump_json``) from now on, in order."""
    made: list[SipuniEvent] = []
    real = SipuniEvent.model_dump_json

    def counting(self: SipuniEvent, **kwargs: Any) -> str:
        made.append(self)
        return real(self, **kwargs)

    monkeypatch.setattr(SipuniEvent, "model_dump_json", counting)
    return made


def test_an_events_json_is_made_only_to_order_it_among_events_of_its_second_and_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [parsed(raw) for raw in sc.inbound_answered(ring=["101", "102"], ring_gap=1).events]
    assert len({(e.timestamp, e.type) for e in events}) == len(events)
    made = serialised_events(monkeypatch)
    state = None
    for event in reversed(events):
        state, _ = tracker.apply(state, event, account="012345", region="RU", received_at=1.0)
    assert state is not None and list(state.events) == events
    assert made == []
    # A repeat has its twin's second and type: the JSON tells the same event from another.
    state, _ = tracker.apply(state, events[1], account="012345", region="RU", received_at=1.0)
    assert list(state.events) == events and made
    # Two rings in the same second: their JSON orders them.
    same_second = [
        parsed(raw) for raw in sc.inbound_answered(ring=["101", "102"], ring_gap=0).events[:2]
    ]
    assert same_second[0].timestamp == same_second[1].timestamp
    state = None
    for event in same_second:
        state, _ = tracker.apply(state, event, account="012345", region="RU", received_at=1.0)
    assert state is not None and len(state.events) == 2 and made
