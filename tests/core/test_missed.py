"""The missed-call lifecycle's pure rules (``connector_core.missed``): groups, callbacks, the
window and the SLA, decided by the calls' own times."""

from __future__ import annotations

import pytest

from connector_core import missed
from connector_core.callstate import Direction, LifecycleKind
from connector_core.config import parse_config_text
from connector_core.errors import ConfigError
from connector_core.missed import NumberCall, Rules

T0 = 1_717_171_700
RULES = Rules(window_seconds=24 * 3600, sla_seconds=15 * 60)


def miss(call_id: str, at: int, seen_by: tuple[str, ...] = ("crm",)) -> NumberCall:
    return NumberCall(
        call_id=call_id,
        direction=Direction.INBOUND,
        started_at=at,
        extensions=("101", "102"),
        seen_by=seen_by,
    )


def back(
    call_id: str, answered_at: int, by: str = "103", seen_by: tuple[str, ...] = ()
) -> NumberCall:
    return NumberCall(
        call_id=call_id,
        direction=Direction.OUTBOUND,
        started_at=answered_at - 10,
        answered_at=answered_at,
        talk_seconds=115,
        by_extension=by,
        seen_by=seen_by,
    )


def kinds(emissions: list[missed.Emission]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(e.call_id, e.record.kind.value, e.integrations) for e in emissions]


def test_two_missed_calls_and_a_callback_make_one_group() -> None:
    calls = [back("c", T0 + 900), miss("m2", T0 + 300), miss("m1", T0)]
    found = missed.groups(calls, RULES)
    assert [([m.call_id for m in g.missed], g.callback and g.callback.call_id) for g in found] == [
        (["m1", "m2"], "c")
    ]
    due = missed.records(found, RULES, now=T0 + 1000, new={"m1", "m2", "c"}, overdue_sent=set())
    # The callback goes to who saw the first missed call, though nobody saw the callback.
    assert kinds(due) == [("m2", "missed_again", ("crm",)), ("c", "called_back", ("crm",))]
    again, called = due[0].record, due[1].record
    assert again.earlier is not None and [m.call_id for m in again.earlier] == ["m1"]
    assert called.callback is not None
    assert [m.call_id for m in called.callback.missed] == ["m1", "m2"]
    assert called.callback.by_extension == "103"
    assert called.callback.after_seconds == 900
    assert called.callback.talk_seconds == 115


def test_a_call_counts_once_however_often_it_is_given() -> None:
    calls = [miss("m1", T0), miss("m1", T0), miss("m2", T0 + 60), back("c", T0 + 90)]
    assert missed.groups(calls, RULES) == missed.groups(list(reversed(calls)), RULES)
    assert len(missed.groups(calls, RULES)[0].missed) == 2


def test_a_callback_after_the_window_links_nothing_and_a_new_miss_opens_a_new_group() -> None:
    day = RULES.window_seconds
    calls = [miss("m1", T0), back("late", T0 + day + 1), miss("m2", T0 + day + 60)]
    found = missed.groups(calls, RULES)
    assert [(tuple(m.call_id for m in g.missed), g.callback) for g in found] == [
        (("m1",), None),
        (("m2",), None),
    ]
    due = missed.records(
        found, RULES, now=T0 + day + 100, new={"m1", "late", "m2"}, overdue_sent=set()
    )
    assert not [e for e in due if e.record.kind is not LifecycleKind.MISSED_OVERDUE]
    links = missed.links(found, RULES, now=T0 + day + 100, overdue_sent=set())
    assert "late" not in links
    assert links["m1"] == missed.Link("m1", None)  # closed unanswered: its SLA is past caring


def test_overdue_once_when_the_sla_passes_without_a_callback() -> None:
    found = missed.groups([miss("m1", T0)], RULES)
    assert missed.records(found, RULES, now=T0 + 899, new=set(), overdue_sent=set()) == []
    assert missed.links(found, RULES, now=T0, overdue_sent=set())["m1"].overdue_at == T0 + 900
    due = missed.records(found, RULES, now=T0 + 901, new=set(), overdue_sent=set())
    assert kinds(due) == [("m1", "missed_overdue", ("crm",))]
    overdue = due[0].record.overdue
    assert overdue is not None and (overdue.sla_seconds, overdue.waited_seconds) == (900, 901)
    # Once: sent, it is never due again, and the store is told to stop looking.
    assert missed.records(found, RULES, now=T0 + 2000, new=set(), overdue_sent={"m1"}) == []
    assert missed.links(found, RULES, now=T0 + 2000, overdue_sent={"m1"})["m1"].overdue_at is None


def test_a_callback_within_the_sla_means_no_overdue_and_a_late_one_does_not_undo_it() -> None:
    in_time = missed.groups([miss("m1", T0), back("c", T0 + 600)], RULES)
    assert missed.records(in_time, RULES, now=T0 + 5000, new=set(), overdue_sent=set()) == []
    late = missed.groups([miss("m1", T0), back("c", T0 + 1200)], RULES)
    due = missed.records(late, RULES, now=T0 + 5000, new={"c"}, overdue_sent=set())
    assert sorted(kinds(due)) == [
        ("c", "called_back", ("crm",)),
        ("m1", "missed_overdue", ("crm",)),
    ]


def test_no_sla_means_no_overdue() -> None:
    rules = Rules(window_seconds=3600, sla_seconds=None)
    found = missed.groups([miss("m1", T0)], rules)
    assert missed.records(found, rules, now=T0 + 3000, new=set(), overdue_sent=set()) == []


def test_an_inbound_call_answered_by_an_employee_is_a_callback() -> None:
    answered = NumberCall(
        call_id="in",
        direction=Direction.INBOUND,
        started_at=T0 + 100,
        answered_at=T0 + 105,
        by_extension="104",
    )
    (group,) = missed.groups([miss("m1", T0), answered], RULES)
    assert group.callback == answered


def test_a_missed_call_decided_after_the_callback_joins_the_group_but_is_not_announced_again() -> (
    None
):
    """The order decision: the callback's record went with the calls known when it was
    decided; a missed call decided later (its webhooks came after the settle time) still
    gets its own record and its link, and the callback is not announced twice."""
    calls = [miss("m1", T0), back("c", T0 + 900), miss("m2", T0 + 300)]
    found = missed.groups(calls, RULES)
    due = missed.records(found, RULES, now=T0 + 2000, new={"m2"}, overdue_sent=set())
    assert kinds(due) == [("m2", "missed_again", ("crm",))]
    assert missed.links(found, RULES, now=T0 + 2000, overdue_sent=set())["m2"] == missed.Link(
        "m1", "c"
    )


MINIMAL = """
[accounts.012345]
token = "test-token-0123456789"
"""


def test_the_settings_and_their_defaults() -> None:
    defaults = parse_config_text(MINIMAL, types={}).missed_calls
    assert defaults.enabled and defaults.rules() == Rules(24 * 3600, 15 * 60)
    no_sla = parse_config_text("[missed_calls]\nsla_minutes = 0\n" + MINIMAL, types={})
    assert no_sla.missed_calls.rules().sla_seconds is None


def test_a_bad_setting_is_named_with_its_path() -> None:
    text = "[missed_calls]\ncallback_window_hours = 0\nsla_minutes = -1\n" + MINIMAL
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, types={})
    errors = "\n".join(caught.value.errors)
    assert "missed_calls.callback_window_hours: Input should be greater than 0" in errors
    assert "missed_calls.sla_minutes: Input should be greater than or equal to 0" in errors
