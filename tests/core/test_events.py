"""parse_event: what Sipuni sends (strings, sometimes JSON types, empty fields) → one typed result.

Malformed requests must fail with a message the sender can act on, so every message is asserted
verbatim.
"""

from __future__ import annotations

from typing import Any

import pytest

from connector_core.events import (
    MAX_EXTRA_FIELDS,
    MAX_FIELD_LENGTH,
    EventError,
    EventType,
    Probe,
    SipuniEvent,
    UnknownEvent,
    parse_event,
)
from connector_core.simulator import scenarios

CALL_ID = "1429019739.49501"
CALL_ID_ERROR = "field 'call_id' must be 1-128 characters of [0-9A-Za-z._:-]"
LINK_ERROR = "field 'call_record_link' must be an http(s) URL"
LINK = "https://sipuni.com/api/crm/record?id=1429019739.49501&hash=abcdef0123456789&user=012345"

# The doc-style event 2 (reference §1.5), decoded from its query string, plus every other field.
FULL: dict[str, str] = {
    "event": "2",
    "call_id": CALL_ID,
    "src_num": "89104846817",
    "src_type": "1",
    "dst_num": "012345261",
    "dst_type": "2",
    "short_src_num": "89104846817",
    "short_dst_num": "261",
    "timestamp": "1429019790",
    "status": "ANSWER",
    "call_start_timestamp": "1429019739",
    "call_answer_timestamp": "1429019750",
    "call_record_link": LINK,
    "channel": "Local/261@transfer_vats-000001e9;2",
    "treeName": "Тестирование CRM",
    "treeNumber": "000960393",
    "pbxdstnum": "74951234567",
    "user_id": "012345",
    "last_called": "261",
    "transfer_from": "101",
    "callbackId": "cb-42",
    "is_inner_call": "1",
    "roistat": "12345",
}


def event(**changes: Any) -> dict[str, Any]:
    """A minimal valid event 1 with ``changes``; a value of None removes the field."""
    params: dict[str, Any] = {"event": "1", "call_id": CALL_ID, "timestamp": "1429019739"}
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


def parsed(params: dict[str, Any]) -> SipuniEvent:
    result = parse_event(params)
    assert isinstance(result, SipuniEvent), result
    return result


def error(params: dict[str, Any]) -> str:
    with pytest.raises(EventError) as info:
        parse_event(params)
    return str(info.value)


# --- valid events ----------------------------------------------------------------------------


def test_every_field_of_a_get_request_is_parsed() -> None:
    e = parsed(FULL)
    assert e.event == 2 and e.type is EventType.HANGUP
    assert e.call_id == CALL_ID
    assert e.timestamp == 1429019790
    assert (e.src_num, e.src_type, e.short_src_num) == ("89104846817", 1, "89104846817")
    assert (e.dst_num, e.dst_type, e.short_dst_num) == ("012345261", 2, "261")
    assert e.status == "ANSWER"
    assert e.call_start_timestamp == 1429019739
    assert e.call_answer_timestamp == 1429019750
    assert e.call_record_link == LINK
    assert e.channel == "Local/261@transfer_vats-000001e9;2"
    assert (e.treeName, e.treeNumber) == ("Тестирование CRM", "000960393")
    assert e.pbxdstnum == "74951234567"
    assert e.user_id == "012345"
    assert e.last_called == "261"
    assert e.transfer_from == "101"
    assert e.callbackId == "cb-42"
    assert e.is_inner_call is True
    assert e.extra == {"roistat": "12345"}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("1", EventType.RING),
        ("2", EventType.HANGUP),
        ("3", EventType.ANSWER),
        ("4", EventType.TRANSFER_HANGUP),
    ],
)
def test_each_known_event_type(value: str, kind: EventType) -> None:
    assert parsed(event(event=value)).type is kind


def test_json_types_are_accepted_like_their_strings() -> None:
    as_json = parsed(
        event(
            event=2,
            timestamp=1429019790,
            src_type=1,
            dst_type=2,
            call_start_timestamp=1429019739,
            call_answer_timestamp=1429019750.0,
            dst_num=12345261,
        )
    )
    assert as_json.event == 2
    assert as_json.timestamp == 1429019790
    assert (as_json.src_type, as_json.dst_type) == (1, 2)
    assert as_json.call_start_timestamp == 1429019739
    assert as_json.call_answer_timestamp == 1429019750
    assert as_json.dst_num == "12345261"
    assert as_json == parsed(
        event(
            event="2",
            timestamp="1429019790",
            src_type="1",
            dst_type="2",
            call_start_timestamp="1429019739",
            call_answer_timestamp="1429019750",
            dst_num="12345261",
        )
    )


def test_empty_and_blank_fields_are_none() -> None:
    blank = {name: "" for name in FULL if name not in ("event", "call_id", "timestamp")}
    blank["treeName"] = "   "
    e = parsed(event(**blank))
    dump = e.model_dump(exclude={"event", "call_id", "timestamp", "is_inner_call", "extra"})
    assert dump and all(value is None for value in dump.values()), dump
    assert e.is_inner_call is False
    assert e.extra == {"roistat": ""}


def test_values_are_trimmed_and_status_upper_cased() -> None:
    e = parsed(event(src_num=" 79161234567 ", status="noanswer", treeName="Продажи\n"))
    assert e.src_num == "79161234567"
    assert e.status == "NOANSWER"
    assert e.treeName == "Продажи"


def test_zero_answer_time_means_unanswered() -> None:
    e = parsed(event(event="2", call_start_timestamp="1429019739", call_answer_timestamp="0"))
    assert e.call_answer_timestamp is None
    assert e.call_start_timestamp == 1429019739


@pytest.mark.parametrize(("value", "inner"), [("1", True), ("true", True), ("0", False)])
def test_is_inner_call(value: str, inner: bool) -> None:
    assert parsed(event(is_inner_call=value)).is_inner_call is inner


def test_unknown_fields_are_kept_in_extra_and_long_names_cut() -> None:
    long_name = "roistat_" + "x" * 100
    e = parsed(event(roistat_market="direct", **{long_name: "7"}))
    assert e.extra == {"roistat_market": "direct", long_name[:64]: "7"}


def test_parsed_event_is_immutable_and_hashable_for_deduplication() -> None:
    a, b = parsed(event()), parsed(event())
    assert a == b
    with pytest.raises(Exception, match="frozen"):
        a.timestamp = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "params",
    [{}, {"event": "", "call_id": ""}, {"user_id": "012345"}, {"event": None, "call_id": None}],
    ids=["empty", "empty-strings", "unrelated-field", "json-nulls"],
)
def test_request_without_call_fields_is_a_probe(params: dict[str, Any]) -> None:
    assert parse_event(params) == Probe()


@pytest.mark.parametrize("value", ["0", "5", "8", "12", 9])
def test_unknown_event_type_is_accepted_and_ignored(value: str | int) -> None:
    result = parse_event(event(event=value, timestamp=None))
    assert result == UnknownEvent(event=int(value), call_id=CALL_ID)


def test_unknown_event_type_needs_no_call_id() -> None:
    assert parse_event({"event": "8", "newtree": "000-1"}) == UnknownEvent(event=8, call_id=None)


def test_every_scenario_event_parses() -> None:
    for s in scenarios.catalogue():
        for raw in s.events:
            e = parsed(raw)
            assert e.call_id == s.call_id
            assert e.timestamp == int(raw["timestamp"])


# --- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (event(call_id=None), "field 'call_id' is missing"),
        (event(call_id=""), "field 'call_id' is missing"),
        ({"call_id": CALL_ID, "timestamp": "1429019739"}, "field 'event' is missing"),
        (event(call_id="1429019739 49501"), CALL_ID_ERROR),
        (event(call_id="1" * 129), CALL_ID_ERROR),
        (event(event="one"), "field 'event' must be a number, got 'one'"),
        (event(event="-1"), "field 'event' must be a number, got '-1'"),
        (event(event="2.5"), "field 'event' must be a number, got '2.5'"),
        (event(timestamp=None), "field 'timestamp' is missing"),
        (event(timestamp=""), "field 'timestamp' is missing"),
        (event(timestamp="yesterday"), "field 'timestamp' must be a whole number, got 'yesterday'"),
        (event(timestamp="123"), "field 'timestamp' is not a plausible unix time in seconds: 123"),
        (event(timestamp="0"), "field 'timestamp' is not a plausible unix time in seconds: 0"),
        (event(timestamp="-5"), "field 'timestamp' is not a plausible unix time in seconds: -5"),
        (
            event(timestamp="4102444801"),
            "field 'timestamp' is not a plausible unix time in seconds: 4102444801",
        ),
        (
            event(call_start_timestamp="99"),
            "field 'call_start_timestamp' is not a plausible unix time in seconds: 99",
        ),
        (
            event(call_answer_timestamp="1e9"),
            "field 'call_answer_timestamp' must be a whole number, got '1e9'",
        ),
        (event(src_type="3"), "field 'src_type' must be 1 (external) or 2 (internal), got 3"),
        (event(dst_type="0"), "field 'dst_type' must be 1 (external) or 2 (internal), got 0"),
        (event(src_type="external"), "field 'src_type' must be a whole number, got 'external'"),
        (event(status="NO ANSWER"), "field 'status' is not a call status: 'NO ANSWER'"),
        (event(call_record_link="ftp://x/rec"), LINK_ERROR),
        (event(call_record_link="javascript:alert(1)"), LINK_ERROR),
        (event(call_record_link="sipuni.com/api/crm/record?id=1"), LINK_ERROR),
        (event(treeName="Прод\x00ажи"), "field 'treeName' contains control characters"),
        (event(src_num="7916\r\n1234567"), "field 'src_num' contains control characters"),
        (event(roistat="a\tb"), "field 'roistat' contains control characters"),
        (
            event(channel="S" * (MAX_FIELD_LENGTH + 1)),
            f"field 'channel' is longer than {MAX_FIELD_LENGTH} characters",
        ),
        (
            event(roistat="r" * (MAX_FIELD_LENGTH + 1)),
            f"field 'roistat' is longer than {MAX_FIELD_LENGTH} characters",
        ),
        (event(event=True), "field 'event' must be a string, got bool"),
        (event(src_num=["79161234567"]), "field 'src_num' must be a string, got list"),
        (event(treeName={"name": "x"}), "field 'treeName' must be a string, got dict"),
        (
            event(**{f"utm_{i}": "1" for i in range(MAX_EXTRA_FIELDS + 1)}),
            f"too many unknown fields ({MAX_EXTRA_FIELDS + 1} > {MAX_EXTRA_FIELDS})",
        ),
    ],
)
def test_malformed_request_says_why(params: dict[str, Any], message: str) -> None:
    assert error(params) == message


@pytest.mark.parametrize("call_id", ["../etc", "1" * 129])
def test_unknown_event_with_bad_call_id_is_still_rejected(call_id: str) -> None:
    assert error(event(event="7", call_id=call_id)).startswith("field 'call_id' ")


def test_exactly_the_limits_are_accepted() -> None:
    e = parsed(
        event(
            channel="S" * MAX_FIELD_LENGTH,
            call_id="9" * 128,
            **{f"utm_{i}": "1" for i in range(MAX_EXTRA_FIELDS)},
        )
    )
    assert len(e.channel or "") == MAX_FIELD_LENGTH
    assert len(e.extra) == MAX_EXTRA_FIELDS
    assert len(e.call_id) == 128


def test_millisecond_timestamp_is_reported_as_implausible() -> None:
    assert error(event(timestamp="1717171700000")) == (
        "field 'timestamp' is not a plausible unix time in seconds: 1717171700000"
    )


def test_unknown_event_with_too_long_call_id_names_the_length() -> None:
    assert error(event(event="7", call_id="1" * 129)) == CALL_ID_ERROR
