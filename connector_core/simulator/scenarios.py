"""Whole calls as Sipuni sends them: the webhook requests of one call, and what they must mean.

Why this exists: the tracker's tests, the ingest tests and the HTTP simulator must agree on
what a real call looks like on the wire. Each builder reproduces one of the sequences of
``shared/reference/sipuni-events.md`` §1.5 (A–D) or a close variant, as the decoded string
parameters of each request, plus the product's answer for that call (``expected``).

Builders are pure: no clock, no I/O, randomness only through an ``rng`` the caller passes.
Where the reference is unsure (transfers, scheme changes) the layout is an inference, marked
[INF] in the docstring. ``expected`` is written with plain strings and tuples rather than the
tracker's types, so that it states what the call must become independently of the code under
test.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

ACCOUNT = "012345"
CLIENT = "79161234567"
LINE = "74951234567"
LINE_ID = "265648"  # the ``_id<digits>`` suffix a missed call's final event puts on the line
START = 1_717_171_700

Params = dict[str, str]
Scheme = tuple[str, str]  # (treeNumber, treeName)
Spelling = Literal["8", "7", "+7"]

INBOUND_SCHEME: Scheme = ("000-913898", "Входящая")
OUTBOUND_SCHEME: Scheme = ("000-913901", "Исходящая")
DISTRIBUTOR: Scheme = ("000-100", "Распределитель")
SALES: Scheme = ("000-200", "Продажи")

# Requests sent within the same second still go out one after another.
_BURST = 0.1
_NUMBER_FIELDS = ("src_num", "dst_num", "short_src_num", "short_dst_num", "pbxdstnum")


@dataclass(frozen=True)
class Scenario:
    """One call: the requests Sipuni sends for it, and what the connector must make of them.

    ``events[i]`` holds the parameters of the i-th request, every value a string as decoded
    from a GET query (URL-encoding is the sender's job). ``delays[i]`` is the pause in seconds
    before sending ``events[i]`` (``delays[0] == 0``), taken from the events' own timestamps,
    so a replay can run in real time or scaled down.

    ``expected`` describes the call once it is over:
    ``direction`` ("inbound" | "outbound" | "internal"), ``client_number`` and
    ``line_number`` (E.164 or None), ``employee`` (who dialled, outbound/internal),
    ``outcome`` ("answered" | "missed" | "not_answered"), ``legs`` (extensions rung, in ring
    order), ``first_extension``, ``answers`` (who picked up, in order), ``answered_by`` (last
    to answer), ``first_answered_by``, ``transfers`` ([(from, to)]), ``schemes`` (treeNumbers
    in path order), ``hangups`` ([(at, status, extension)] of event 4), ``started_at``,
    ``answered_at``, ``ended_at``, ``talk_seconds``, ``duration_seconds``, ``sipuni_status``,
    ``last_called``, ``record_url``, ``finished_by`` ("hangup" | "timeout") and ``lifecycle``
    (the sorted lifecycle keys the call must emit, each once).
    """

    name: str
    call_id: str
    events: list[Params]
    expected: dict[str, Any]
    delays: list[float]
    account: str = ACCOUNT


@dataclass
class _Call:
    """What every request of one call shares; hands out channel names in creation order."""

    account: str
    client: str
    line: str
    call_id: str
    start: int
    _channels: itertools.count[int] = field(default_factory=lambda: itertools.count(0x1A2B3))

    def channel(self, ext: str | None = None) -> str:
        n = next(self._channels)
        return f"SIP/{self.account}{ext}-{n:08x}" if ext else f"SIP/sipuni-trunk-{n:08x}"

    @property
    def record_link(self) -> str:
        digest = hashlib.md5(f"{self.call_id}/{self.account}".encode(), usedforsecurity=False)
        return (
            f"https://sipuni.com/api/crm/record?id={self.call_id}"
            f"&hash={digest.hexdigest()}&user={self.account}"
        )


def _call(account: str, client: str, line: str, call_id: str | None, start: int, seq: int) -> _Call:
    # Asterisk-style ids: the unix start time, a dot, a sequence number.
    return _Call(account, client, line, call_id or f"{start}.{seq}", start)


# --- single requests -------------------------------------------------------------------------


def _ring_in(c: _Call, ext: str, at: int, scheme: Scheme) -> Params:
    """Event 1 of an inbound call: one employee's phone starts ringing (sequence A, line 1)."""
    return {
        "event": "1",
        "call_id": c.call_id,
        "src_num": c.client,
        "src_type": "1",
        "short_src_num": c.client,
        "dst_num": c.account + ext,
        "dst_type": "2",
        "short_dst_num": ext,
        "pbxdstnum": c.line,
        "timestamp": str(at),
        "treeName": scheme[1],
        "treeNumber": scheme[0],
        "channel": c.channel(),
        "user_id": c.account,
        "last_called": "",  # present but empty on event 1
    }


def _answer_in(c: _Call, ext: str, at: int) -> Params:
    """Event 3 of an inbound call: ``ext`` picked up (sequence A, line 3)."""
    return {
        "event": "3",
        "call_id": c.call_id,
        "src_num": c.client,
        "src_type": "1",
        "dst_num": c.account + ext,
        "dst_type": "2",
        "short_dst_num": ext,
        "pbxdstnum": c.line,
        "timestamp": str(at),
        "channel": c.channel(ext),
        "last_called": "",
    }


def _hangup_in(
    c: _Call,
    *,
    at: int,
    scheme: Scheme,
    answered_by: str | None,
    answered_at: int | None,
    last_called: str,
    status: str | None = None,
    transfer_from: str | None = None,
) -> Params:
    """Event 2 of an inbound call (sequences A and B).

    Answered, it names the employee; unanswered, it ends on the company line with an
    ``_id<digits>`` suffix and ``dst_type=1``, carries ``pbxdstnum`` and an answer time of 0.
    """
    params: Params = {
        "event": "2",
        "call_id": c.call_id,
        "src_num": c.client,
        "src_type": "1",
        "short_src_num": c.client,
    }
    if answered_by:
        params |= {
            "dst_num": c.account + answered_by,
            "dst_type": "2",
            "short_dst_num": answered_by,
        }
    else:
        line_end = f"{c.line}_id{LINE_ID}"
        params |= {"dst_num": line_end, "dst_type": "1", "short_dst_num": line_end}
        params["pbxdstnum"] = c.line
    params |= {
        "status": status or ("ANSWER" if answered_by else "NOANSWER"),
        "call_start_timestamp": str(c.start),
        "call_answer_timestamp": str(answered_at or 0),
        "timestamp": str(at),
        "last_called": last_called,
        "call_record_link": c.record_link,
        "treeName": scheme[1],
        "treeNumber": scheme[0],
        "user_id": c.account,
    }
    if transfer_from:
        params["transfer_from"] = transfer_from
    return params


# --- expectations ----------------------------------------------------------------------------


def _e164(raw: str) -> str:
    """The scenario's own reading of a number (Russian spellings, or a full international one).

    Deliberately not ``connector_core.phones.normalize``: the expectation must not come from
    the code it checks.
    """
    digits = re.sub(r"\D", "", raw.split("_id")[0])
    if len(digits) == 11 and digits[0] in "78":
        return "+7" + digits[1:]
    if len(digits) == 10:
        return "+7" + digits
    return "+" + digits


def _expect(
    *,
    direction: str,
    started_at: int,
    answered_at: int | None,
    ended_at: int | None,
    legs: Sequence[str] = (),
    answers: Sequence[str] = (),
    transfers: Sequence[tuple[str, str]] = (),
    schemes: Sequence[str] = (),
    **rest: Any,
) -> dict[str, Any]:
    """Fill in what follows from the product rules, so each builder states only the facts."""
    if answers:
        outcome = "answered"
    else:
        outcome = "missed" if direction == "inbound" else "not_answered"
    lifecycle = {"started", "finished"}
    lifecycle |= {"answered"} if answers else set()
    lifecycle |= {f"transferred:{to}" for _, to in transfers}
    lifecycle |= {f"entered_scheme:{scheme}" for scheme in schemes[1:]}
    expected: dict[str, Any] = {
        "direction": direction,
        "client_number": None,
        "line_number": None,
        "employee": None,
        "outcome": outcome,
        "legs": list(legs),
        "first_extension": legs[0] if legs else None,
        "answers": list(answers),
        "answered_by": answers[-1] if answers else None,
        "first_answered_by": answers[0] if answers else None,
        "transfers": list(transfers),
        "schemes": list(schemes),
        "hangups": [],
        "started_at": started_at,
        "answered_at": answered_at,
        "ended_at": ended_at,
        "talk_seconds": ended_at - answered_at if ended_at and answered_at else 0,
        "duration_seconds": ended_at - started_at if ended_at else None,
        "sipuni_status": None,
        "last_called": None,
        "record_url": None,
        "finished_by": "hangup" if ended_at else "timeout",
        "lifecycle": sorted(lifecycle),
    }
    unknown = set(rest) - set(expected)
    if unknown:
        raise TypeError(f"unknown expectation(s): {sorted(unknown)}")
    return expected | rest


def _delays(events: Sequence[Params]) -> list[float]:
    stamps = [int(e["timestamp"]) for e in events]
    return [0.0] + [float(max(b - a, 0)) or _BURST for a, b in itertools.pairwise(stamps)]


def _scenario(name: str, c: _Call, events: list[Params], expected: dict[str, Any]) -> Scenario:
    return Scenario(name, c.call_id, events, expected, _delays(events), c.account)


def _check_ring(ring: Sequence[str], *answered: str | None) -> list[str]:
    ring = list(ring)
    if not ring or len(set(ring)) != len(ring):
        raise ValueError(f"ring must list distinct extensions, got {ring}")
    for ext in answered:
        if ext is not None and ext not in ring:
            raise ValueError(f"{ext} cannot answer: it is not among the legs rung {ring}")
    return ring


# --- builders --------------------------------------------------------------------------------


def inbound_answered(
    ring: Sequence[str] = ("101", "102"),
    answered_by: str = "101",
    *,
    account: str = ACCOUNT,
    client: str = CLIENT,
    line: str = LINE,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52001,
    scheme: Scheme = INBOUND_SCHEME,
    ring_gap: int = 0,
    answer_after: int = 9,
    talk: int = 186,
) -> Scenario:
    """Sequence A: the scheme rings every extension of ``ring``, ``answered_by`` picks up.

    Legs ring ``ring_gap`` seconds apart (0: together, as a ring-all group does; legs in the
    same second carry no order on the wire, so give them a gap when their order matters).
    """
    ring = _check_ring(ring, answered_by)
    c = _call(account, client, line, call_id, start, seq)
    rang = [start + i * ring_gap for i in range(len(ring))]
    answered_at = rang[-1] + answer_after
    ended = answered_at + talk
    events = [_ring_in(c, ext, at, scheme) for ext, at in zip(ring, rang, strict=True)]
    events.append(_answer_in(c, answered_by, answered_at))
    events.append(
        _hangup_in(
            c,
            at=ended,
            scheme=scheme,
            answered_by=answered_by,
            answered_at=answered_at,
            last_called=answered_by,
        )
    )
    expected = _expect(
        direction="inbound",
        client_number=_e164(client),
        line_number=_e164(line),
        legs=ring,
        answers=[answered_by],
        schemes=[scheme[0]],
        started_at=start,
        answered_at=answered_at,
        ended_at=ended,
        sipuni_status="ANSWER",
        last_called=answered_by,
        record_url=c.record_link,
    )
    return _scenario("inbound_answered", c, events, expected)


def inbound_missed(
    ring: Sequence[str] = ("101", "102"),
    *,
    account: str = ACCOUNT,
    client: str = CLIENT,
    line: str = LINE,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52010,
    scheme: Scheme = INBOUND_SCHEME,
    ring_gap: int = 0,
    ring_for: int = 40,
    status: str = "NOANSWER",
) -> Scenario:
    """Sequence B: every leg rings, nobody answers, the caller gives up after ``ring_for`` s.

    The final event ends on the company line (``…_id265648``, ``dst_type=1``) and names the
    last leg in ``last_called``; the call's owner is still decided from the *first* leg.
    """
    ring = _check_ring(ring)
    c = _call(account, client, line, call_id, start, seq)
    rang = [start + i * ring_gap for i in range(len(ring))]
    ended = rang[-1] + ring_for
    events = [_ring_in(c, ext, at, scheme) for ext, at in zip(ring, rang, strict=True)]
    events.append(
        _hangup_in(
            c,
            at=ended,
            scheme=scheme,
            answered_by=None,
            answered_at=None,
            last_called=ring[-1],
            status=status,
        )
    )
    expected = _expect(
        direction="inbound",
        client_number=_e164(client),
        line_number=_e164(line),
        legs=ring,
        schemes=[scheme[0]],
        started_at=start,
        answered_at=None,
        ended_at=ended,
        sipuni_status=status,
        last_called=ring[-1],
        record_url=c.record_link,
    )
    return _scenario("inbound_missed", c, events, expected)


def inbound_transferred(
    first: str = "101",
    to: str = "102",
    *,
    account: str = ACCOUNT,
    client: str = CLIENT,
    line: str = LINE,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52020,
    scheme: Scheme = INBOUND_SCHEME,
    transfer_from_field: bool = True,
) -> Scenario:
    """Sequence C [INF]: ``first`` answers, then transfers the caller to ``to``.

    The transfer leg is a new event 1 from ``first`` to ``to`` within the same call_id; the
    first employee's leg ends with an intermediate hang-up (event 4). With
    ``transfer_from_field=False`` no event carries ``transfer_from`` (captures never showed it
    filled), so the transferring employee must be read from the transfer leg's source.
    """
    if first == to:
        raise ValueError("a call is transferred to another extension")
    c = _call(account, client, line, call_id, start, seq)
    t = start
    via = {"transfer_from": first} if transfer_from_field else {}
    events = [
        _ring_in(c, first, t, scheme),
        _answer_in(c, first, t + 8),
        {
            "event": "1",
            "call_id": c.call_id,
            "src_num": account + first,
            "src_type": "2",
            "short_src_num": first,
            "dst_num": account + to,
            "dst_type": "2",
            "short_dst_num": to,
            "timestamp": str(t + 60),
            "channel": c.channel(to),
            "user_id": account,
            **via,
        },
        {
            "event": "3",
            "call_id": c.call_id,
            "dst_num": account + to,
            "short_dst_num": to,
            "timestamp": str(t + 70),
            "channel": c.channel(to),
        },
        {
            "event": "4",
            "call_id": c.call_id,
            "status": "ANSWER",
            "call_start_timestamp": str(t),
            "call_answer_timestamp": str(t + 8),
            "timestamp": str(t + 72),
            **via,
        },
        _hangup_in(
            c,
            at=t + 300,
            scheme=scheme,
            answered_by=to,
            answered_at=t + 8,
            last_called=to,
            transfer_from=first if transfer_from_field else None,
        ),
    ]
    expected = _expect(
        direction="inbound",
        client_number=_e164(client),
        line_number=_e164(line),
        legs=[first, to],
        answers=[first, to],
        transfers=[(first, to)],
        schemes=[scheme[0]],
        hangups=[(t + 72, "ANSWER", first if transfer_from_field else None)],
        started_at=t,
        answered_at=t + 8,
        ended_at=t + 300,
        sipuni_status="ANSWER",
        last_called=to,
        record_url=c.record_link,
    )
    return _scenario("inbound_transferred", c, events, expected)


def scheme_transfer(
    distributor: Scheme = DISTRIBUTOR,
    target: Scheme = SALES,
    answered_by: str | None = "101",
    transferred: bool = True,
    *,
    ring: Sequence[str] = ("101", "102"),
    account: str = ACCOUNT,
    client: str = CLIENT,
    line: str = LINE,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52030,
    ivr_seconds: int = 12,
    ring_gap: int = 0,
) -> Scenario:
    """[INF] A call enters a distributor scheme (an IVR: no employee rings) and moves on.

    The distributor's event 1 reaches only the company line. With ``transferred`` the call is
    handed to ``target``: its legs' event 1 and the final event 2 carry the target's
    treeNumber/treeName. Without, the distributor rings the same legs itself and the call never
    leaves it. ``answered_by=None`` makes the call a missed one.
    """
    ring = _check_ring(ring, answered_by)
    c = _call(account, client, line, call_id, start, seq)
    scheme = target if transferred else distributor
    rang = [start + ivr_seconds + i * ring_gap for i in range(len(ring))]
    entry: Params = {
        "event": "1",
        "call_id": c.call_id,
        "src_num": client,
        "src_type": "1",
        "short_src_num": client,
        "dst_num": line,
        "dst_type": "1",
        "short_dst_num": line,
        "pbxdstnum": line,
        "timestamp": str(start),
        "treeName": distributor[1],
        "treeNumber": distributor[0],
        "channel": c.channel(),
        "user_id": account,
    }
    events = [entry, *(_ring_in(c, ext, at, scheme) for ext, at in zip(ring, rang, strict=True))]
    if answered_by:
        answered_at: int | None = rang[-1] + 9
        ended = rang[-1] + 9 + 120
        events.append(_answer_in(c, answered_by, rang[-1] + 9))
    else:
        answered_at, ended = None, rang[-1] + 40
    events.append(
        _hangup_in(
            c,
            at=ended,
            scheme=scheme,
            answered_by=answered_by,
            answered_at=answered_at,
            last_called=answered_by or ring[-1],
        )
    )
    expected = _expect(
        direction="inbound",
        client_number=_e164(client),
        line_number=_e164(line),
        legs=ring,
        answers=[answered_by] if answered_by else [],
        schemes=[distributor[0], target[0]] if transferred else [distributor[0]],
        started_at=start,
        answered_at=answered_at,
        ended_at=ended,
        sipuni_status="ANSWER" if answered_by else "NOANSWER",
        last_called=answered_by or ring[-1],
        record_url=c.record_link,
    )
    return _scenario("scheme_transfer" if transferred else "scheme_stay", c, events, expected)


def _ring_out(c: _Call, employee: str, scheme: Scheme) -> Params:
    """Event 1 of an outbound call (sequence D, line 1): the dialled number has a ``+``."""
    return {
        "event": "1",
        "call_id": c.call_id,
        "src_num": c.account + employee,
        "src_type": "2",
        "short_src_num": employee,
        "dst_num": c.client,
        "dst_type": "1",
        "pbxdstnum": _e164(c.client),
        "timestamp": str(c.start),
        "treeName": scheme[1],
        "treeNumber": scheme[0],
        "channel": c.channel(employee),
        "user_id": c.account,
    }


def _outbound(
    name: str,
    employee: str,
    *,
    answered: bool,
    status: str,
    account: str,
    client: str,
    call_id: str | None,
    start: int,
    seq: int,
    scheme: Scheme,
    answer_after: int,
    ended_after: int,
    duplicate_ring: bool,
) -> Scenario:
    c = _call(account, client, "", call_id, start, seq)
    channel = c.channel(employee)
    events = [_ring_out(c, employee, scheme)]
    if duplicate_ring:
        # SIP-originated calls repeat event 1 a second later with almost nothing in it.
        events.append({"event": "1", "call_id": c.call_id, "timestamp": str(start + 1)})
    answered_at = start + answer_after if answered else None
    if answered_at:
        events.append(
            {"event": "3", "call_id": c.call_id, "timestamp": str(answered_at), "channel": channel}
        )
    ended = start + ended_after
    events.append(
        {
            "event": "2",
            "call_id": c.call_id,
            "status": status,
            "call_start_timestamp": str(start),
            "call_answer_timestamp": str(answered_at or 0),
            "timestamp": str(ended),
            "last_called": employee,
            "call_record_link": c.record_link,
            "channel": channel,
        }
    )
    expected = _expect(
        direction="outbound",
        client_number=_e164(client),
        employee=employee,
        answers=[employee] if answered else [],
        schemes=[scheme[0]],
        started_at=start,
        answered_at=answered_at,
        ended_at=ended,
        sipuni_status=status,
        last_called=employee,
        record_url=c.record_link,
    )
    return _scenario(name, c, events, expected)


def outbound_answered(
    employee: str = "101",
    *,
    account: str = ACCOUNT,
    client: str = CLIENT,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52100,
    scheme: Scheme = OUTBOUND_SCHEME,
    answer_after: int = 10,
    talk: int = 115,
    duplicate_ring: bool = True,
) -> Scenario:
    """Sequence D: ``employee`` dials the client, who answers. Follow-ups carry almost no fields:
    the duplicated event 1, event 3 and event 2 have neither numbers nor scheme."""
    return _outbound(
        "outbound_answered",
        employee,
        answered=True,
        status="ANSWER",
        account=account,
        client=client,
        call_id=call_id,
        start=start,
        seq=seq,
        scheme=scheme,
        answer_after=answer_after,
        ended_after=answer_after + talk,
        duplicate_ring=duplicate_ring,
    )


def outbound_unanswered(
    employee: str = "101",
    *,
    account: str = ACCOUNT,
    client: str = CLIENT,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52110,
    scheme: Scheme = OUTBOUND_SCHEME,
    status: str = "NOANSWER",
    ring_for: int = 30,
    duplicate_ring: bool = True,
) -> Scenario:
    """Sequence D without an answer: the client never picks up. Not a *missed* call: it stays
    with the employee who dialled."""
    return _outbound(
        "outbound_unanswered",
        employee,
        answered=False,
        status=status,
        account=account,
        client=client,
        call_id=call_id,
        start=start,
        seq=seq,
        scheme=scheme,
        answer_after=0,
        ended_after=ring_for,
        duplicate_ring=duplicate_ring,
    )


def internal(
    from_ext: str = "101",
    to_ext: str = "102",
    *,
    answered: bool = True,
    account: str = ACCOUNT,
    call_id: str | None = None,
    start: int = START,
    seq: int = 52200,
    talk: int = 60,
) -> Scenario:
    """An employee calls a colleague: both parties internal, no client, no scheme."""
    if from_ext == to_ext:
        raise ValueError("an internal call needs two different extensions")
    c = _call(account, "", "", call_id, start, seq)
    parties = {
        "src_num": account + from_ext,
        "src_type": "2",
        "short_src_num": from_ext,
        "dst_num": account + to_ext,
        "dst_type": "2",
        "short_dst_num": to_ext,
    }
    events: list[Params] = [
        {
            "event": "1",
            "call_id": c.call_id,
            **parties,
            "pbxdstnum": to_ext,
            "timestamp": str(start),
            "channel": c.channel(from_ext),
            "user_id": account,
            "is_inner_call": "1",
        }
    ]
    answered_at = start + 5 if answered else None
    if answered_at:
        events.append(
            {
                "event": "3",
                "call_id": c.call_id,
                **parties,
                "timestamp": str(answered_at),
                "channel": c.channel(to_ext),
            }
        )
    ended = (answered_at + talk) if answered_at else start + 30
    status = "ANSWER" if answered else "NOANSWER"
    events.append(
        {
            "event": "2",
            "call_id": c.call_id,
            **parties,
            "status": status,
            "call_start_timestamp": str(start),
            "call_answer_timestamp": str(answered_at or 0),
            "timestamp": str(ended),
            "last_called": to_ext,
            "call_record_link": c.record_link,
            "user_id": account,
        }
    )
    expected = _expect(
        direction="internal",
        employee=from_ext,
        legs=[to_ext],
        answers=[to_ext] if answered else [],
        started_at=start,
        answered_at=answered_at,
        ended_at=ended,
        sipuni_status=status,
        last_called=to_ext,
        record_url=c.record_link,
    )
    return _scenario("internal", c, events, expected)


def missed_then_called_back(
    *,
    account: str = ACCOUNT,
    client: str = CLIENT,
    start: int = START,
    again_after: int = 300,
    callback_after: int = 900,
    ring: Sequence[str] = ("101", "102"),
    employee: str = "103",
) -> list[Scenario]:
    """A client's call is missed, the client calls again and is missed again, then
    ``employee`` (who was not rung) calls back and the client answers: three calls, in time
    order, for the missed-call lifecycle (docs/missed-calls.md)."""
    return [
        inbound_missed(ring, account=account, client=client, start=start, seq=52501),
        inbound_missed(ring, account=account, client=client, start=start + again_after, seq=52502),
        outbound_answered(
            employee, account=account, client=client, start=start + callback_after, seq=52503
        ),
    ]


def catalogue() -> list[Scenario]:
    """One call of each kind, with distinct call ids: a smoke set for replays and demos."""
    return [
        inbound_answered(),
        inbound_missed(),
        inbound_transferred(),
        scheme_transfer(),
        scheme_transfer(transferred=False, seq=52031),
        outbound_answered(),
        outbound_unanswered(),
        internal(),
    ]


# --- transformations -------------------------------------------------------------------------


def duplicated(s: Scenario, index: int) -> Scenario:
    """Sipuni sends ``events[index]`` twice in a row (a retry): nothing about the call changes."""
    events = [*s.events[: index + 1], dict(s.events[index]), *s.events[index + 1 :]]
    return replace(s, name=f"{s.name}+dup{index}", events=events, delays=_delays(events))


def shuffled(s: Scenario, rng: random.Random) -> Scenario:
    """The same requests in another order, as they may arrive: the call must end the same."""
    events = [dict(e) for e in s.events]
    rng.shuffle(events)
    return replace(s, name=f"{s.name}+shuffled", events=events, delays=_delays(events))


def without_final_hangup(s: Scenario) -> Scenario:
    """The final event 2 is lost (seen once in ~10 calls): only the timeout can finish the call.

    What only event 2 knew (end time, status, ``last_called``, recording) stays unknown.
    """
    events = [dict(e) for e in s.events if e.get("event") != "2"]
    expected = s.expected | {
        "ended_at": None,
        "talk_seconds": 0,
        "duration_seconds": None,
        "sipuni_status": None,
        "last_called": None,
        "record_url": None,
        "finished_by": "timeout",
    }
    return replace(
        s, name=f"{s.name}-hangup", events=events, expected=expected, delays=_delays(events)
    )


def with_scheme_named_by(
    s: Scenario, by: Literal["treeName", "treeNumber"], indexes: Iterable[int]
) -> Scenario:
    """[INF] The events at ``indexes`` name their scheme by ``by`` alone.

    Sipuni sometimes names a scheme by its name on a call's first events and by its number
    (with the name) only on later ones, or the other way round. The call means the same, as
    long as some event still names each scheme by both.
    """
    other = "treeNumber" if by == "treeName" else "treeName"
    wanted = set(indexes)
    events = [
        {k: v for k, v in e.items() if k != other} if i in wanted else dict(e)
        for i, e in enumerate(s.events)
    ]
    return replace(s, name=f"{s.name}+{by}-only", events=events)


def spell(e164: str, spelling: Spelling) -> str:
    """A Russian E.164 number as a carrier may spell it: ``8…``, ``7…`` or ``+7…``."""
    if not (e164.startswith("+7") and len(e164) == 12):
        raise ValueError(f"only +7 numbers have 8/7/+7 spellings, got {e164}")
    prefixes = {"8": "8", "7": "7", "+7": "+7"}
    if spelling not in prefixes:
        raise ValueError(f"spelling must be one of {sorted(prefixes)}, got {spelling!r}")
    return prefixes[spelling] + e164[2:]


def with_number_spelling(s: Scenario, spelling: Spelling) -> Scenario:
    """Every occurrence of the client's number written as ``spelling``; E.164 stays the same.

    A scenario without a client number (internal) is returned unchanged.
    """
    client = s.expected.get("client_number")
    if client is None:
        return s
    new = spell(client, spelling)
    spellings = {spell(client, "8"), spell(client, "7"), spell(client, "+7")}
    events = [
        {k: new if k in _NUMBER_FIELDS and v in spellings else v for k, v in e.items()}
        for e in s.events
    ]
    return replace(s, name=f"{s.name}+spelled{spelling}", events=events)
