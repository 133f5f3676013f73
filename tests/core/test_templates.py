"""Templates («Шаблоны», «Общие переменные»): checking, the value of every variable, rendering.

Values are taken from calls the real tracker made of simulator scenarios, so each variable is
checked on what the plugins will really be given.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from connector_core import templates, tracker
from connector_core.callstate import CallState
from connector_core.events import SipuniEvent, parse_event
from connector_core.phones import PhoneFormat
from connector_core.simulator import scenarios as sc

DOCS = Path(__file__).resolve().parents[2] / "docs" / "usedesk.md"
TIMEOUT = 7200.0


def play(events: Sequence[dict[str, str]]) -> CallState:
    state: CallState | None = None
    received = 1_717_180_000.0
    for raw in events:
        event = parse_event(raw)
        assert isinstance(event, SipuniEvent), event
        received += 1.0
        state, _ = tracker.apply(
            state, event, account=sc.ACCOUNT, region="RU", received_at=received
        )
    assert state is not None
    if not state.finished:
        state, _ = tracker.expire(
            state, now=state.last_received_at + TIMEOUT, timeout=TIMEOUT, region="RU"
        )
    return state


def call(s: sc.Scenario) -> CallState:
    return play(s.events)


# sc.START = 1717171700 = 2024-05-31 16:08:20 UTC = 19:08:20 in Moscow (UTC+3).
ANSWERED_S = sc.inbound_answered(["101", "102"], "102", ring_gap=5)
ANSWERED = call(ANSWERED_S)
MISSED = call(sc.inbound_missed(["102", "101"], ring_gap=5))
OUTBOUND = call(sc.outbound_answered("103"))
OUTBOUND_UNANSWERED = call(sc.outbound_unanswered("103"))
TRANSFERRED = call(sc.inbound_transferred("101", "102"))
LOST_HANGUP = call(sc.without_final_hangup(sc.inbound_answered(["101"], "101")))


# --- check -------------------------------------------------------------------------------------


def test_check_accepts_every_variable_and_plain_text() -> None:
    templates.check("".join(f"{{{name}}} " for name in templates.VARIABLES))
    templates.check("no variables at all")
    templates.check("literal {{braces}} are fine")


def test_check_names_an_unknown_variable_and_lists_the_known_ones() -> None:
    with pytest.raises(templates.TemplateError) as caught:
        templates.check("Звонок {phon}")
    message = str(caught.value)
    assert message.startswith("unknown variable {phon}; known: ")
    assert message.split("known: ")[1].split(", ") == sorted(templates.VARIABLES)


@pytest.mark.parametrize(
    "template",
    ["{phone.real}", "{phone[0]}", "{0}", "{}", "{PHONE}"],
)
def test_check_refuses_attribute_access_indexing_and_positional_fields(template: str) -> None:
    with pytest.raises(templates.TemplateError, match="unknown variable"):
        templates.check(template)


@pytest.mark.parametrize("template", ["{phone:>20}", "{duration!r}", "{phone!s:10}"])
def test_check_refuses_format_specs_and_conversions(template: str) -> None:
    with pytest.raises(templates.TemplateError, match="formats and conversions are not supported"):
        templates.check(template)


@pytest.mark.parametrize("template", ["{phone", "phone}", "a { b", "}{"])
def test_check_refuses_broken_braces_and_says_how_to_write_one(template: str) -> None:
    with pytest.raises(templates.TemplateError) as caught:
        templates.check(template)
    assert "broken template" in str(caught.value)
    assert "write {{ and }} for braces" in str(caught.value)


def test_template_error_is_a_value_error() -> None:
    """So pydantic turns it into a config error with the template's TOML path."""
    assert issubclass(templates.TemplateError, ValueError)


# --- variables: every one, on real calls -------------------------------------------------------


def test_variables_of_an_answered_inbound_call() -> None:
    values = templates.variables(ANSWERED)
    assert set(values) == set(templates.VARIABLES)
    assert values == {
        "phone": "79161234567",
        "line": "74951234567",
        "direction": "Входящий",
        "direction_code": "inbound",
        "result": "Отвечен",
        "result_code": "answered",
        "employee": "102",
        "employees": "102",
        "agent": "102",  # no agent names given: the extension
        "agents": "102",
        "dialled_by": "",  # an inbound call: nobody of ours dialled
        "first_extension": "101",
        "scheme": "Входящая",
        "final_scheme": "Входящая",
        "schemes": "Входящая",
        "end": "Сообщён",
        "end_code": "reported",
        "date": "2024-05-31",
        "time": "19:08:20",
        "started_at": "2024-05-31 19:08:20",
        "duration": "3:20",  # 5 s until the second leg rang, 9 s to answer, 186 s of talk
        "talk_duration": "3:06",
        "record_url": ANSWERED_S.expected["record_url"],
        "record_link": ANSWERED_S.expected["record_url"],
        "call_id": ANSWERED_S.call_id,
    }


def test_variables_of_a_missed_call() -> None:
    values = templates.variables(MISSED)
    assert (values["result"], values["result_code"]) == ("Пропущен", "missed")
    assert (values["employee"], values["employees"]) == ("", "")
    assert values["first_extension"] == "102"
    assert (values["duration"], values["talk_duration"]) == ("0:45", "0:00")


def test_variables_of_an_outbound_call() -> None:
    values = templates.variables(OUTBOUND)
    assert (values["direction"], values["direction_code"]) == ("Исходящий", "outbound")
    assert values["phone"] == "79161234567"
    assert values["line"] == ""  # an outbound call names no company line
    assert (values["employee"], values["employees"]) == ("103", "103")
    assert values["scheme"] == "Исходящая"


def test_variables_of_an_unanswered_outbound_call() -> None:
    values = templates.variables(OUTBOUND_UNANSWERED)
    assert (values["result"], values["result_code"]) == ("Не отвечен", "not_answered")
    assert values["employee"] == "103"  # the employee who dialled
    assert values["employees"] == ""  # nobody answered


def test_variables_of_an_internal_call() -> None:
    values = templates.variables(call(sc.internal("101", "102")))
    assert (values["direction"], values["direction_code"]) == ("Внутренний", "internal")
    assert values["phone"] == "" and values["line"] == "" and values["scheme"] == ""


def test_employee_follows_answered_owner_and_employees_lists_everyone() -> None:
    assert templates.variables(TRANSFERRED)["employee"] == "102"
    assert templates.variables(TRANSFERRED, answered_owner="first")["employee"] == "101"
    assert templates.variables(TRANSFERRED)["employees"] == "101, 102"


def test_scheme_is_the_first_scheme_the_call_entered() -> None:
    values = templates.variables(call(sc.scheme_transfer()))
    assert values["scheme"] == "Распределитель"


def test_a_call_moved_to_another_scheme_names_where_it_ended_and_its_path() -> None:
    values = templates.variables(call(sc.scheme_transfer(target=("000-300", "Поддержка"))))
    assert values["final_scheme"] == "Поддержка"
    assert values["schemes"] == "Распределитель → Поддержка"


def test_a_scheme_known_only_by_its_number_is_named_by_it() -> None:
    s = sc.with_scheme_named_by(sc.inbound_answered(), "treeNumber", range(10))
    values = templates.variables(call(s))
    assert values["final_scheme"] == values["schemes"] == "000-913898"


NAMES = {"101": "Борис Операторов", "102": "Вера Продажина", "103": "Анна Админова"}


def test_agents_are_named_by_the_crm_names_given() -> None:
    values = templates.variables(TRANSFERRED, agent_names=NAMES)
    assert values["agent"] == "Вера Продажина"  # the last to answer owns the call
    assert values["agents"] == "Борис Операторов, Вера Продажина"
    assert values["employees"] == "101, 102"  # extensions stay available


def test_an_employee_without_a_name_is_named_by_the_extension() -> None:
    values = templates.variables(TRANSFERRED, agent_names={"102": "Вера Продажина"})
    assert values["agents"] == "101, Вера Продажина"


def test_an_unanswered_outbound_call_names_who_dialled() -> None:
    values = templates.variables(OUTBOUND_UNANSWERED, agent_names=NAMES)
    assert values["dialled_by"] == values["agent"] == "Анна Админова"
    assert templates.variables(OUTBOUND_UNANSWERED)["dialled_by"] == "103"
    assert values["agents"] == ""  # nobody answered


def test_a_missed_call_names_nobody() -> None:
    values = templates.variables(MISSED, agent_names=NAMES)
    assert values["agent"] == values["agents"] == values["dialled_by"] == ""


def test_a_call_finished_by_the_time_out_says_its_end_was_not_reported() -> None:
    values = templates.variables(LOST_HANGUP)
    assert values["end_code"] == "timeout"
    assert values["end"] == "Не сообщён: звонок закрыт по тайм-ауту"
    assert templates.variables(LOST_HANGUP, language="en")["end"] == (
        "Not reported: the call was closed by the time-out"
    )
    assert templates.variables(ANSWERED, language="en")["end"] == "Reported"


def test_a_call_going_on_has_no_end_yet() -> None:
    state: CallState | None = None
    for raw in sc.inbound_answered().events[:2]:
        event = parse_event(raw)
        assert isinstance(event, SipuniEvent)
        state, _ = tracker.apply(state, event, account=sc.ACCOUNT, region="RU", received_at=1.0)
    assert state is not None and not state.finished
    values = templates.variables(state)
    assert values["end"] == values["end_code"] == ""


@pytest.mark.parametrize(
    ("fmt", "phone", "line"),
    [
        (PhoneFormat.PLUS, "+79161234567", "+74951234567"),
        (PhoneFormat.INTERNATIONAL, "79161234567", "74951234567"),
        (PhoneFormat.NATIONAL_8, "89161234567", "84951234567"),
    ],
)
def test_phone_and_line_follow_the_phone_format(fmt: PhoneFormat, phone: str, line: str) -> None:
    for value in (fmt, fmt.value):  # the enum or its string, as settings hold either
        values = templates.variables(ANSWERED, phone_format=value)
        assert (values["phone"], values["line"]) == (phone, line)


@pytest.mark.parametrize("spelling", ["8", "7", "+7"])
def test_phone_is_the_same_whatever_spelling_sipuni_sent(spelling: str) -> None:
    s = sc.with_number_spelling(sc.inbound_answered(), spelling)  # type: ignore[arg-type]
    assert templates.variables(call(s), phone_format=PhoneFormat.PLUS)["phone"] == "+79161234567"


def test_the_8_format_applies_only_to_numbers_with_country_code_7() -> None:
    foreign = call(sc.inbound_answered(["205"], "205", client="+998901234567"))
    values = templates.variables(foreign, phone_format=PhoneFormat.NATIONAL_8)
    assert values["phone"] == "998901234567"


def test_an_unusable_number_is_shown_as_sipuni_sent_it() -> None:
    values = templates.variables(call(sc.inbound_answered(client="anonymous")))
    assert values["phone"] == "anonymous"


@pytest.mark.parametrize(
    ("zone", "date", "time"),
    [
        ("Europe/Moscow", "2024-05-31", "19:08:20"),
        ("UTC", "2024-05-31", "16:08:20"),
        ("Asia/Vladivostok", "2024-06-01", "02:08:20"),  # UTC+10: already the next day
        ("America/New_York", "2024-05-31", "12:08:20"),  # EDT, UTC-4
    ],
)
def test_dates_are_in_the_configured_time_zone(zone: str, date: str, time: str) -> None:
    values = templates.variables(ANSWERED, timezone=zone)
    assert (values["date"], values["time"]) == (date, time)
    assert values["started_at"] == f"{date} {time}"


def test_english_labels() -> None:
    assert templates.variables(ANSWERED, language="en")["direction"] == "Inbound"
    assert templates.variables(ANSWERED, language="en")["result"] == "Answered"
    assert templates.variables(MISSED, language="en")["result"] == "Missed"
    assert templates.variables(OUTBOUND_UNANSWERED, language="en")["result"] == "Not answered"
    assert templates.variables(OUTBOUND, language="en")["direction"] == "Outbound"
    # Codes do not depend on the language.
    assert templates.variables(MISSED, language="en")["result_code"] == "missed"


def test_what_only_the_final_hangup_knew_is_empty_when_it_was_lost() -> None:
    values = templates.variables(LOST_HANGUP)
    assert values["duration"] == ""
    assert values["record_url"] == "" and values["record_link"] == ""
    assert values["date"] == "2024-05-31"  # the start is still known from the first ring


def test_talk_duration_is_empty_not_zero_when_the_end_is_unknown() -> None:
    assert templates.variables(LOST_HANGUP)["talk_duration"] == ""


# --- render ------------------------------------------------------------------------------------

URL = ANSWERED_S.expected["record_url"]


def test_render_without_escaping_fills_values_as_they_are() -> None:
    values = templates.variables(call(sc.inbound_answered(scheme=("000-9", "VIP <b> & Co"))))
    text = templates.render("{scheme}: {phone} {record_link}", values)
    assert text == f"VIP <b> & Co: 79161234567 {URL}"


def test_render_with_escaping_escapes_values_but_not_the_template() -> None:
    values = templates.variables(call(sc.inbound_answered(scheme=("000-9", 'VIP <b> & "Co"'))))
    text = templates.render("<p><b>{scheme}</b> {phone}</p>", values, escape_html=True)
    assert text == "<p><b>VIP &lt;b&gt; &amp; &quot;Co&quot;</b> 79161234567</p>"


def test_record_link_becomes_an_anchor_in_html() -> None:
    values = templates.variables(ANSWERED)
    text = templates.render("{record_link}", values, escape_html=True)
    assert text == f'<a href="{html.escape(URL, quote=True)}">Запись звонка</a>'
    assert "&amp;hash=" in text  # the URL's & are escaped inside the attribute
    english = templates.render("{record_link}", values, escape_html=True, language="en")
    assert english.endswith(">Call recording</a>")


def test_record_url_stays_a_plain_escaped_url_in_html() -> None:
    values = templates.variables(ANSWERED)
    text = templates.render('<a href="{record_url}">rec</a>', values, escape_html=True)
    assert text == f'<a href="{html.escape(URL, quote=True)}">rec</a>'


def test_no_recording_no_anchor() -> None:
    values = templates.variables(LOST_HANGUP)
    assert templates.render("[{record_link}]", values, escape_html=True) == "[]"
    assert templates.render("[{record_link}]", values) == "[]"


def test_render_keeps_literal_braces() -> None:
    values = templates.variables(ANSWERED)
    assert templates.render("{{{phone}}}", values) == "{79161234567}"


def test_render_does_not_change_the_values_given() -> None:
    values = templates.variables(ANSWERED)
    before = dict(values)
    templates.render("{record_link} {scheme}", values, escape_html=True)
    assert values == before


def test_every_variable_is_documented_for_operators() -> None:
    """docs/usedesk.md lists every variable; a new one must be added there too."""
    text = DOCS.read_text(encoding="utf-8")
    missing = [name for name in templates.VARIABLES if f"`{{{name}}}`" not in text]
    assert not missing, f"not in docs/usedesk.md: {missing}"
    documented = set(re.findall(r"^\| `\{(\w+)\}` \|", text, flags=re.MULTILINE))
    assert documented == set(templates.VARIABLES), documented ^ set(templates.VARIABLES)
