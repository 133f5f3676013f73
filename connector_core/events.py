"""Sipuni webhook events: parsing what the PBX sends into a typed event, or a clear error.

Sipuni sends every value as a string (query string or form field, sometimes JSON), leaves
fields empty or absent on follow-up events, and may probe a freshly saved URL with a request
that carries no call fields. This module turns one request's parameters into exactly one of:
``Probe`` (nothing to do), ``UnknownEvent`` (accepted, ignored), ``SipuniEvent``; or raises
``EventError`` with a reason a person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class EventType(IntEnum):
    RING = 1  # one per employee leg that starts ringing
    HANGUP = 2  # the final hang-up of the whole call
    ANSWER = 3
    TRANSFER_HANGUP = 4  # an intermediate hang-up during a transfer


_EVENT_TYPES = {t.value: t for t in EventType}
KNOWN_STATUSES = frozenset({"ANSWER", "BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL"})

# Fields the model knows; anything else (roistat…, future additions) is kept in ``extra``.
_STRING_FIELDS = (
    "src_num",
    "dst_num",
    "short_src_num",
    "short_dst_num",
    "channel",
    "treeName",
    "treeNumber",
    "pbxdstnum",
    "user_id",
    "last_called",
    "transfer_from",
    "callbackId",
)
_TIMESTAMP_FIELDS = ("call_start_timestamp", "call_answer_timestamp")
_KNOWN_FIELDS = frozenset(
    {
        "event",
        "call_id",
        "timestamp",
        "status",
        "call_record_link",
        "src_type",
        "dst_type",
        "is_inner_call",
        *_STRING_FIELDS,
        *_TIMESTAMP_FIELDS,
    }
)
MAX_FIELD_LENGTH = 512
MAX_EXTRA_FIELDS = 50
CALL_ID = re.compile(r"^[0-9A-Za-z._:-]{1,128}$")
# Compiled once: parse_event runs on every webhook.
_CONTROL = re.compile(r"[\x00-\x1f]")
_EVENT_NUMBER = re.compile(r"[0-9]{1,4}")
_NUMBER = re.compile(r"-?[0-9]{1,18}(\.[0-9]+)?")
_STATUS = re.compile(r"^[A-Z_]{1,32}$")
# Unix seconds between 2000-01-01 and 2100-01-01: anything else is a sender bug, not a call.
_MIN_TS, _MAX_TS = 946_684_800, 4_102_444_800


class EventError(ValueError):
    """The request is not a usable Sipuni event; ``str(err)`` says why, for the sender."""


class SipuniEvent(BaseModel):
    """One Sipuni webhook, validated. Absent and empty fields are ``None``."""

    model_config = ConfigDict(frozen=True)

    event: int
    call_id: str
    timestamp: int
    src_num: str | None = None
    src_type: int | None = None
    dst_num: str | None = None
    dst_type: int | None = None
    short_src_num: str | None = None
    short_dst_num: str | None = None
    status: str | None = None
    call_start_timestamp: int | None = None
    call_answer_timestamp: int | None = None
    call_record_link: str | None = None
    channel: str | None = None
    treeName: str | None = None
    treeNumber: str | None = None
    pbxdstnum: str | None = None
    user_id: str | None = None
    last_called: str | None = None
    transfer_from: str | None = None
    callbackId: str | None = None
    is_inner_call: bool = False
    extra: dict[str, str] = {}

    @property
    def type(self) -> EventType:
        # A dict lookup: EventType(n) costs more, and the tracker asks every event of a call
        # each time one arrives.
        try:
            return _EVENT_TYPES[self.event]
        except KeyError:
            raise ValueError(f"{self.event} is not a valid EventType") from None


@dataclass(frozen=True)
class Probe:
    """A request with no call fields, as Sipuni may send when the URL is saved."""


@dataclass(frozen=True)
class UnknownEvent:
    """A well-formed request for an event type the connector does not handle."""

    event: int
    call_id: str | None


ParsedRequest = SipuniEvent | Probe | UnknownEvent


def _text(name: str, value: Any) -> str | None:
    """A field's value as stripped text; None when absent or blank. EventError if unusable."""
    if value is None:
        return None
    if type(value) is not str:  # a query string or a form gives text: the checks are for JSON
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise EventError(f"field '{name}' must be a string, got {type(value).__name__}")
        value = str(value)
    text = value.strip()
    if len(text) > MAX_FIELD_LENGTH:
        raise EventError(f"field '{name}' is longer than {MAX_FIELD_LENGTH} characters")
    # isprintable() is False for any control character: the search runs only when it is.
    if not text.isprintable() and _CONTROL.search(text):
        raise EventError(f"field '{name}' contains control characters")
    return text or None


def _plain_digits(value: Any) -> bool:
    """A str of plain ASCII digits, as every number Sipuni sends: nothing to strip, nothing
    the number pattern would refuse (``isascii``: ``isdigit`` takes other scripts' digits)."""
    return type(value) is str and len(value) <= 18 and value.isdigit() and value.isascii()


def _int(name: str, value: Any) -> int | None:
    text = _text(name, value)
    if text is None:
        return None
    if not _NUMBER.fullmatch(text):
        raise EventError(f"field '{name}' must be a whole number, got {text[:40]!r}")
    return int(text.partition(".")[0])  # exact for any length, unlike float


def _timestamp(name: str, value: Any, *, zero_is_none: bool = False) -> int | None:
    number = int(value) if _plain_digits(value) else _int(name, value)
    if number is None or (zero_is_none and number <= 0):
        return None
    if not _MIN_TS <= number <= _MAX_TS:
        raise EventError(f"field '{name}' is not a plausible unix time in seconds: {number}")
    return number


def _party_type(name: str, value: Any) -> int | None:
    if value == "1" or value == "2":  # as Sipuni sends it (a str: 1 == "1" is False)
        return int(value)
    number = _int(name, value)
    if number not in (None, 1, 2):
        raise EventError(f"field '{name}' must be 1 (external) or 2 (internal), got {number}")
    return number


# ``__pydantic_fields_set__`` of ``SipuniEvent(**kwargs)`` given every field; copied for each
# event, since it is mutable.
_FIELD_NAMES = set(SipuniEvent.model_fields)
# Every field, in the model's order: each event's ``__dict__`` starts as a copy.
_UNSET: dict[str, Any] = {name: None for name in SipuniEvent.model_fields}
_STRING_FIELD_SET = frozenset(_STRING_FIELDS)
_STRING_ORDER = {name: i for i, name in enumerate(_STRING_FIELDS)}
_TRUE = ("1", "true", "True")
_EVENT_TEXTS = {str(t.value): t.value for t in EventType}
_set_slot = object.__setattr__


def plain_model_only(model: type[BaseModel]) -> None:
    """``_checked_event`` skips validation: refuse ``model`` (``SipuniEvent``, at import) if it
    has anything validation would run or set (validators, private attributes, extras)."""
    decorators = model.__pydantic_decorators__
    if (
        decorators.field_validators
        or decorators.model_validators
        or model.__private_attributes__
        or model.model_config.get("extra") not in (None, "ignore")
        or model.model_post_init is not BaseModel.model_post_init
    ):
        raise RuntimeError(f"{model.__name__} is no longer a plain model: review _checked_event")


plain_model_only(SipuniEvent)


def _checked_event(fields: dict[str, Any]) -> SipuniEvent:
    """``SipuniEvent(**fields)`` without pydantic checking again what ``parse_event`` checked.

    Sets what ``model_construct`` sets (the fields, all of them as given, no extra or private
    attributes) without its per-field alias and default look-ups, which cost more than
    validating. Only for ``fields`` holding every field, each of exactly the type validation
    would give (``int``, ``str``, ``bool``, ``None``, a ``dict`` of ``str`` to ``str``):
    then the event is the one validation builds (tests/core/test_events_equivalence.py).
    """
    event = object.__new__(SipuniEvent)
    _set_slot(event, "__dict__", fields)
    _set_slot(event, "__pydantic_fields_set__", _FIELD_NAMES.copy())
    _set_slot(event, "__pydantic_extra__", None)
    _set_slot(event, "__pydantic_private__", None)
    return event


def parse_event(params: Mapping[str, Any]) -> ParsedRequest:
    """Parse one request's parameters (query, form or JSON object, already merged).

    For a request with several problems the first one in this order is reported: the event
    and call id, the timestamp, the status, the record link, the unknown fields, ``src_type``,
    ``dst_type``, the two other timestamps, ``is_inner_call``, then the text fields in
    ``_STRING_FIELDS`` order.
    """
    get = params.get
    event_text = _text("event", get("event"))
    call_id = _text("call_id", get("call_id"))
    if event_text is None and call_id is None:
        return Probe()
    if event_text is None:
        raise EventError("field 'event' is missing")
    event = _EVENT_TEXTS.get(event_text)
    if event is None:  # not "1"…"4" as sent: "01", "99", "x"…
        if not _EVENT_NUMBER.fullmatch(event_text):
            raise EventError(f"field 'event' must be a number, got {event_text[:40]!r}")
        event = int(event_text)
    if event not in EventType._value2member_map_:
        if call_id is not None and not CALL_ID.fullmatch(call_id):
            raise EventError("field 'call_id' must be 1-128 characters of [0-9A-Za-z._:-]")
        return UnknownEvent(event=event, call_id=call_id)
    if call_id is None:
        raise EventError("field 'call_id' is missing")
    if not CALL_ID.fullmatch(call_id):
        raise EventError("field 'call_id' must be 1-128 characters of [0-9A-Za-z._:-]")
    timestamp = _timestamp("timestamp", get("timestamp"))
    if timestamp is None:
        raise EventError("field 'timestamp' is missing")

    status = get("status")
    # A known status as Sipuni sends it needs no cleaning; anything else is checked in full.
    if not (type(status) is str and status in KNOWN_STATUSES):
        status = _text("status", status)
        if status is not None:
            status = status.upper()
            if not _STATUS.match(status):
                raise EventError(f"field 'status' is not a call status: {status[:40]!r}")
    link = _text("call_record_link", get("call_record_link"))
    if link is not None and not link.startswith(("http://", "https://")):
        raise EventError("field 'call_record_link' must be an http(s) URL")

    fields = _UNSET.copy()
    # One pass over the request: the optional text fields and the unknown names. A text
    # field's str value that is printable and not too long once stripped is taken here; any
    # other value (not a str, over MAX_FIELD_LENGTH, anything ``isprintable()`` refuses) is
    # checked by ``_text`` below, after the unknown fields, so the error reported is the one
    # of the first problem in the documented order.
    to_check: list[tuple[str, Any]] = []
    extras: list[tuple[str, Any]] = []
    # A mapping other than a dict (a MultiDict) is read by its keys and ``[]``, as ``get`` read
    # it before: the first value of a repeated name, each repeat counted as a name.
    items = params.items() if type(params) is dict else [(n, params[n]) for n in params]
    for name, value in items:
        if name in _STRING_FIELD_SET:
            if type(value) is str:
                text = value.strip()
                if len(text) <= MAX_FIELD_LENGTH and text.isprintable():
                    fields[name] = text or None
                    continue
            to_check.append((name, value))
        elif name not in _KNOWN_FIELDS:
            extras.append((name, value))

    if len(extras) > MAX_EXTRA_FIELDS:
        raise EventError(f"too many unknown fields ({len(extras)} > {MAX_EXTRA_FIELDS})")
    for name, _ in extras:
        # A printable str has neither control characters nor DEL: only others need the search.
        if type(name) is not str or not name.isprintable():
            if _CONTROL.search(name) or "\x7f" in name:
                raise EventError(f"field name {name[:40]!r} contains control characters")
    # Kept for inspection (roistat… and fields Sipuni may add); overlong names are cut.
    extra = {name[:64]: _text(name, value) or "" for name, value in extras} if extras else {}

    fields["src_type"] = _party_type("src_type", get("src_type"))
    fields["dst_type"] = _party_type("dst_type", get("dst_type"))
    fields["call_start_timestamp"] = _timestamp(
        "call_start_timestamp", get("call_start_timestamp"), zero_is_none=True
    )
    fields["call_answer_timestamp"] = _timestamp(
        "call_answer_timestamp", get("call_answer_timestamp"), zero_is_none=True
    )
    inner = get("is_inner_call")  # mostly absent: no call then
    fields["is_inner_call"] = inner is not None and _text("is_inner_call", inner) in _TRUE
    if to_check:
        for name, value in sorted(to_check, key=lambda pair: _STRING_ORDER[pair[0]]):
            fields[name] = _text(name, value)
    fields["event"] = event
    fields["call_id"] = call_id
    fields["timestamp"] = timestamp
    fields["status"] = status
    fields["call_record_link"] = link
    fields["extra"] = extra
    return _checked_event(fields)
