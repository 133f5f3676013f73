"""Reconciliation's pure logic: which history rows are missing what, and the webhooks made up
for them, merged by the real tracker."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from connector_core import reconcile, tracker
from connector_core.callstate import CallState, Outcome
from connector_core.events import SipuniEvent, parse_event
from connector_core.reconcile import Received, Verdict
from connector_core.simulator import scenarios as sc
from connector_core.simulator.sipuni_sandbox import PlacedCall
from connector_core.sipuni_api import HistoryRow, history_csv, parse_history
from tests.core.test_cli import AMOCRM, run, write_config

START = 1_717_171_700
LATER = START + 3600  # "now": every call has long ended
SETTLE = 600.0


def row_of(scenario: sc.Scenario) -> HistoryRow:
    """The call as Sipuni's history lists it (the sandbox's row, through the real parser)."""
    [row] = parse_history(history_csv([PlacedCall(scenario, "all").history_row()]))
    return row


def merged(events: list[dict[str, str]], state: CallState | None = None) -> CallState:
    """``events`` through the tracker, as the worker merges stored webhooks."""
    for params in events:
        parsed = parse_event(params)
        assert isinstance(parsed, SipuniEvent)
        state, _ = tracker.apply(state, parsed, account=sc.ACCOUNT, region="RU", received_at=LATER)
    assert state is not None
    return state


def plan(rows: list[HistoryRow], states: list[CallState]) -> list[reconcile.Finding]:
    received = [Received.of(s) for s in states]
    return reconcile.plan(sc.ACCOUNT, rows, received, now=LATER, settle_seconds=SETTLE)


def test_a_call_never_received_is_made_from_its_row_as_sipuni_would_have_sent_it() -> None:
    call = sc.inbound_answered(ring=["101", "102"], answered_by="102", start=START)
    [finding] = plan([row_of(call)], [])
    assert finding.verdict is Verdict.MISSING_CALL and finding.call_id == call.call_id
    assert [e["event"] for e in finding.events] == ["1", "3", "2"]  # ring, answer, hang-up
    assert all(reconcile.is_reconciled(e) for e in finding.events)

    state = merged(list(finding.events))
    e = call.expected
    assert state.finished_by == "hangup" and state.outcome is Outcome.ANSWERED
    assert (state.direction.value, state.client_number) == (e["direction"], e["client_number"])
    assert state.line_number == e["line_number"] and state.answered_by == "102"
    assert (state.started_at, state.answered_at, state.ended_at) == (
        e["started_at"],
        e["answered_at"],
        e["ended_at"],
    )
    assert state.sipuni_status == "ANSWER" and state.scheme and state.scheme.name == "Входящая"
    assert reconcile.reconciled_in(state) == 3
    assert state.emitted == ("started", "answered", "finished")


def test_a_missed_inbound_call_names_no_employee_and_an_outbound_one_its_caller() -> None:
    missed = sc.inbound_missed(start=START, client="79160000002")
    dialled = sc.outbound_unanswered("103", start=START + 60, client="79160000003")
    found = plan([row_of(missed), row_of(dialled)], [])
    assert [f.verdict for f in found] == [Verdict.MISSING_CALL] * 2

    missed_state = merged(list(found[0].events))
    assert [ev["event"] for ev in found[0].events] == ["2"]  # the history names no ringing
    assert missed_state.outcome is Outcome.MISSED and missed_state.sipuni_status == "NOANSWER"
    assert missed_state.client_number == "+79160000002" and not missed_state.legs

    dialled_state = merged(list(found[1].events))
    assert dialled_state.outcome is Outcome.NOT_ANSWERED
    assert dialled_state.employee == "103" and dialled_state.client_number == "+79160000003"


def test_a_call_received_without_its_end_gets_only_the_final_hang_up() -> None:
    call = sc.inbound_answered(start=START)
    received = merged(sc.without_final_hangup(call).events)
    [finding] = plan([row_of(call)], [received])
    assert finding.verdict is Verdict.MISSING_END and finding.matched_by == "id"
    [hangup] = finding.events
    assert hangup["event"] == "2" and hangup["status"] == "ANSWER"
    assert hangup == reconcile.synthesize(sc.ACCOUNT, row_of(call), call.call_id)[-1]

    state = merged([hangup], received)
    assert state.finished_by == "hangup" and state.answered_by == "101"
    assert state.legs == received.legs  # the received ringing stays as it was


def test_a_call_received_whole_gets_nothing() -> None:
    call = sc.inbound_answered(start=START)
    [finding] = plan([row_of(call)], [merged(call.events)])
    assert finding.verdict is Verdict.WHOLE and finding.events == ()


def test_a_second_run_finds_nothing_and_a_repeated_append_changes_nothing() -> None:
    calls = [
        sc.inbound_answered(start=START, client="79160000004"),
        sc.inbound_missed(start=START + 120, client="79160000005"),
    ]
    rows = [row_of(c) for c in calls]
    first = plan(rows, [])
    states = [merged(list(f.events)) for f in first]
    assert [f.verdict for f in plan(rows, states)] == [Verdict.WHOLE, Verdict.WHOLE]

    # A run cut short, then repeated: the same webhooks again, which the tracker ignores.
    again = plan(rows, [])
    assert [f.events for f in again] == [f.events for f in first]
    for state, finding in zip(states, again, strict=True):
        for params in finding.events:
            parsed = parse_event(params)
            assert isinstance(parsed, SipuniEvent)
            after, new = tracker.apply(
                state, parsed, account=sc.ACCOUNT, region="RU", received_at=LATER
            )
            assert new == [] and after.events == state.events


def test_a_call_that_ended_within_the_settle_margin_is_left_for_a_later_run() -> None:
    call = sc.inbound_answered(start=LATER - 300)  # ended 300 - 195 = 105 s ago
    [finding] = plan([row_of(call)], [])
    assert finding.verdict is Verdict.TOO_RECENT and finding.events == ()


def test_a_row_whose_id_names_no_call_is_matched_by_time_direction_and_number() -> None:
    call = sc.inbound_answered(start=START, client="79160000006")
    row = replace(row_of(call), record_id="rec-778899")  # not the webhooks' call_id
    received = merged(sc.without_final_hangup(call).events)
    [finding] = plan([row], [received])
    assert finding.verdict is Verdict.MISSING_END
    assert (finding.call_id, finding.matched_by) == (call.call_id, "time and number")
    # Another number at the same moment is another call.
    other = replace(row, source="79160000007")
    [missing] = plan([other], [received])
    assert missing.verdict is Verdict.MISSING_CALL and missing.call_id == "rec-778899"


def test_a_row_without_an_id_is_recorded_under_an_id_made_from_it_the_same_each_time() -> None:
    row = replace(row_of(sc.inbound_missed(start=START)), record_id="")
    made = reconcile.call_id_for(row)
    assert made == reconcile.call_id_for(row) and made.startswith(f"{START}.h")
    [finding] = plan([row], [])
    assert all(e["call_id"] == made for e in finding.events)


def test_an_employee_is_read_from_a_name_with_a_short_number() -> None:
    call = sc.inbound_answered(ring=["103"], answered_by="103", start=START)
    row = replace(row_of(call), answered_by="Анна Петрова (103)")
    [finding] = plan([row], [])
    assert merged(list(finding.events)).answered_by == "103"


def test_the_cli_without_any_key_says_no_account_has_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, AMOCRM)
    code, _, err = run(capsys, "reconcile", "--config", str(path), "--dry-run")
    assert code == 1
    assert err.startswith(
        "connector reconcile: no account has a sipuni_api_key: Sipuni's call history cannot"
        " be read; set it"
    )
    code, _, err = run(capsys, "reconcile", "--config", str(path), "--account", "012345")
    assert err.startswith("connector reconcile: account 012345 has no sipuni_api_key:")
