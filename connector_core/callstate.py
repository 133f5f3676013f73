"""The merged state of one call, and the lifecycle events the tracker emits for it.

``CallState`` is what every plugin hook receives. Its derived fields are recomputed by
``tracker.derive`` from the set of events seen so far, so they never depend on the order in
which the events arrived.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator

from connector_core.events import SipuniEvent


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


class Outcome(StrEnum):
    RINGING = "ringing"  # started, nobody has answered yet
    TALKING = "talking"  # answered, not finished yet
    ANSWERED = "answered"
    MISSED = "missed"  # inbound and nobody answered
    NOT_ANSWERED = "not_answered"  # outbound or internal and the other side never answered


class LifecycleKind(StrEnum):
    """What a lifecycle record is about; each kind has the hook ``connector_call_<kind>``."""

    STARTED = "started"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"  # to another employee
    ENTERED_SCHEME = "entered_scheme"  # moved into another scheme
    # Proposed by the router (not the tracker) for integrations with transfer_schemes.
    REACHED_TRANSFER_SCHEME = "reached_transfer_scheme"
    FINISHED = "finished"
    # The missed-call lifecycle, across calls of one number (``connector_core.missed``):
    # on a missed call when the number had open missed calls already;
    MISSED_AGAIN = "missed_again"
    # on the call that answered the number's open missed calls;
    CALLED_BACK = "called_back"
    # on the first open missed call of a number nobody called back within the SLA.
    MISSED_OVERDUE = "missed_overdue"

    @property
    def hook(self) -> str:
        """The plugin hook a record of this kind calls."""
        return f"connector_call_{self.value}"


# The kinds whose hook takes the scheme visit.
_SCHEME_KINDS = frozenset({LifecycleKind.ENTERED_SCHEME, LifecycleKind.REACHED_TRANSFER_SCHEME})


class Leg(BaseModel):
    """An employee's phone that rang."""

    model_config = ConfigDict(frozen=True)

    extension: str
    rang_at: int
    transfer_from: str | None = None


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)

    extension: str
    at: int


class Transfer(BaseModel):
    """The call moved from one employee to another (``from_extension`` may be unknown)."""

    model_config = ConfigDict(frozen=True)

    from_extension: str | None
    to_extension: str
    at: int


class SchemeVisit(BaseModel):
    """A routing scheme («схема») the call went through: Sipuni's treeNumber / treeName."""

    model_config = ConfigDict(frozen=True)

    id: str | None
    name: str | None
    entered_at: int

    @property
    def key(self) -> str:
        return self.id or self.name or ""

    def matches(self, selector: str) -> bool:
        """A configured scheme selector names a scheme by its id or its name."""
        return selector in (self.id, self.name)

    def same_scheme(self, other: SchemeVisit) -> bool:
        """Whether ``other`` is this scheme, possibly known by more (or less) of its names.

        Two numbers decide; otherwise the names do (as the tracker merges a sighting by name
        into the visit that knows the number).
        """
        if self.id and other.id:
            return self.id == other.id
        return bool(self.name) and self.name == other.name


class Hangup(BaseModel):
    """An intermediate hang-up (event 4): one leg of a transfer ended, the call goes on."""

    model_config = ConfigDict(frozen=True)

    at: int
    status: str | None
    extension: str | None


class MissedCall(BaseModel):
    """An inbound call nobody answered, as the missed-call lifecycle remembers it."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    started_at: int  # when the client's call began (Sipuni's time)
    extensions: tuple[str, ...] = ()  # the employees' phones that rang, in ring order


class Callback(BaseModel):
    """A call that answered a number's open missed calls.

    An outbound call the client answered, or an inbound call from the number that an
    employee answered, within the callback window of the first open missed call.
    """

    model_config = ConfigDict(frozen=True)

    missed: tuple[MissedCall, ...]  # the missed calls it answers, oldest first; never empty
    by_extension: str | None  # the employee who called back (or answered the client)
    direction: Direction
    answered_at: int
    after_seconds: int  # from the first missed call's start to ``answered_at``
    talk_seconds: int


class Overdue(BaseModel):
    """A number's open missed calls that nobody called back within the SLA."""

    model_config = ConfigDict(frozen=True)

    missed: tuple[MissedCall, ...]  # the open missed calls, oldest first; never empty
    sla_seconds: int
    waited_seconds: int  # from the first missed call's start to when this was noticed


class LifecycleEvent(BaseModel):
    """Something that happened to a call, emitted exactly once per call: a typed record.

    ``id`` identifies it within the call (``answered``, ``transferred:102``,
    ``entered_scheme:000-1734445``) and never changes once emitted: a scheme announced by its
    name keeps that id when its number arrives. Dispatch rows are unique on it. The payload
    is what the hook is called with: ``transfer`` for ``transferred``, ``scheme`` for
    ``entered_scheme`` and ``reached_transfer_scheme`` (never ``None`` for those kinds).
    """

    model_config = ConfigDict(frozen=True)

    kind: LifecycleKind
    id: str
    extension: str | None = None  # answered: who answered first
    transfer: Transfer | None = None
    scheme: SchemeVisit | None = None
    earlier: tuple[MissedCall, ...] | None = None  # missed_again: the open missed calls before
    callback: Callback | None = None
    overdue: Overdue | None = None

    @model_validator(mode="after")
    def _has_its_payload(self) -> Self:
        if self.kind is LifecycleKind.TRANSFERRED and self.transfer is None:
            raise ValueError(f"lifecycle record {self.id!r} ({self.kind}) has no transfer")
        if self.kind in _SCHEME_KINDS and self.scheme is None:
            raise ValueError(f"lifecycle record {self.id!r} ({self.kind}) has no scheme")
        if self.kind is LifecycleKind.MISSED_AGAIN and not self.earlier:
            raise ValueError(f"lifecycle record {self.id!r} ({self.kind}) has no earlier calls")
        if self.kind is LifecycleKind.CALLED_BACK and self.callback is None:
            raise ValueError(f"lifecycle record {self.id!r} ({self.kind}) has no callback")
        if self.kind is LifecycleKind.MISSED_OVERDUE and self.overdue is None:
            raise ValueError(f"lifecycle record {self.id!r} ({self.kind}) has no overdue")
        return self

    def hook_arguments(
        self,
    ) -> dict[str, Transfer | SchemeVisit | tuple[MissedCall, ...] | Callback | Overdue]:
        """The hook's arguments besides ``integration`` and ``call``, by name."""
        if self.kind is LifecycleKind.TRANSFERRED and self.transfer is not None:
            return {"transfer": self.transfer}
        if self.kind in _SCHEME_KINDS and self.scheme is not None:
            return {"scheme": self.scheme}
        if self.kind is LifecycleKind.MISSED_AGAIN and self.earlier:
            return {"earlier": self.earlier}
        if self.kind is LifecycleKind.CALLED_BACK and self.callback is not None:
            return {"callback": self.callback}
        if self.kind is LifecycleKind.MISSED_OVERDUE and self.overdue is not None:
            return {"overdue": self.overdue}
        return {}


class CallState(BaseModel):
    """Everything known about one call of one account.

    Read-only: the tracker makes a new state for each event (``model_copy``), and one parsed
    state is handed to the worker, the dispatcher and every plugin's hooks alike.
    """

    model_config = ConfigDict(frozen=True)

    account: str
    call_id: str
    # What the tracker keeps: the distinct events seen, and the ids of the lifecycle records
    # emitted (in emission order).
    events: tuple[SipuniEvent, ...] = ()
    emitted: tuple[str, ...] = ()
    last_received_at: float = 0.0
    timed_out_at: float | None = None

    # Derived from ``events`` by tracker.derive.
    direction: Direction = Direction.UNKNOWN
    client_number: str | None = None  # E.164, e.g. +79161234567
    client_number_raw: str | None = None  # as Sipuni sent it
    line_number: str | None = None  # the company line called (inbound), E.164
    employee: str | None = None  # the employee who dialled (outbound / internal)
    legs: tuple[Leg, ...] = ()  # employee phones rung, in ring order
    answers: tuple[Answer, ...] = ()  # who picked up, in time order
    transfers: tuple[Transfer, ...] = ()
    schemes: tuple[SchemeVisit, ...] = ()  # scheme path, in order
    hangups: tuple[Hangup, ...] = ()  # intermediate hang-ups (event 4)
    sipuni_status: str | None = None  # ANSWER, NOANSWER, BUSY… from the final event
    last_called: str | None = None
    outcome: Outcome = Outcome.RINGING
    started_at: int | None = None
    answered_at: int | None = None
    ended_at: int | None = None
    record_url: str | None = None
    finished_by: str | None = None  # "hangup" or "timeout"

    @property
    def finished(self) -> bool:
        return self.finished_by is not None

    @property
    def answered(self) -> bool:
        return self.outcome in (Outcome.ANSWERED, Outcome.TALKING)

    @property
    def first_extension(self) -> str | None:
        """The first employee phone that rang (the seed's «первый пользователь на линии»)."""
        return self.legs[0].extension if self.legs else None

    @property
    def first_answered_by(self) -> str | None:
        return self.answers[0].extension if self.answers else None

    @property
    def answered_by(self) -> str | None:
        """The employee who ended up with the call: the last one to answer."""
        return self.answers[-1].extension if self.answers else None

    def owner(self, answered_owner: str = "last") -> str | None:
        """The employee who owns the call, per the ``answered_owner`` setting.

        Answered: the last (or first) employee who answered. Outbound or internal and not
        answered: the employee who dialled. Missed inbound: ``None`` — the plugin decides
        (on-duty agent, or ``first_extension``).
        """
        if self.answers:
            return self.answered_by if answered_owner == "last" else self.first_answered_by
        if self.direction in (Direction.OUTBOUND, Direction.INTERNAL):
            return self.employee
        return None

    @property
    def duration_seconds(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0, self.ended_at - self.started_at)

    @property
    def talk_seconds(self) -> int:
        if self.answered_at is None or self.ended_at is None:
            return 0
        return max(0, self.ended_at - self.answered_at)

    @property
    def scheme(self) -> SchemeVisit | None:
        """The scheme the call entered first."""
        return self.schemes[0] if self.schemes else None

    def in_scheme(self, selector: str) -> bool:
        return any(visit.matches(selector) for visit in self.schemes)
