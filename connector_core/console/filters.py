"""What the calls page is asked for: the filter in its query string, read once into a type.

Pure: no I/O. A phone number may be typed in any spelling (``8 916 123-45-67``,
``+79161234567``, ``9161234567``); it is read as ``phones.normalize`` reads a caller's number,
in each account's region. Digits that make no whole number (``4567``) search inside numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from connector_core.callstate import Outcome
from connector_core.phones import normalize

PAGE_SIZE = 50
MIN_PARTIAL_DIGITS = 3
_EXTENSION = re.compile(r"\d{1,8}")


class HookStatus(StrEnum):
    """Where an integration's hook calls for one call stand, worst first when combined."""

    DEAD = "dead"  # a hook call failed for good (dead letter)
    RETRYING = "retrying"  # a hook call failed and waits for its next attempt
    PENDING = "pending"  # a hook call waits for its first attempt
    DROPPED = "dropped"  # an operator gave a dead letter up
    DONE = "done"  # every hook call succeeded

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def of_row(cls, status: str, attempts: int) -> HookStatus:
        """The status of one dispatch row (as ``SEVERITY_SQL`` computes it in SQL)."""
        if status == "dead":
            return cls.DEAD
        if status == "pending":
            return cls.RETRYING if attempts > 0 else cls.PENDING
        if status == "dropped":
            return cls.DROPPED
        return cls.DONE

    @classmethod
    def by_severity(cls, severity: int) -> HookStatus:
        return next(s for s, n in _SEVERITY.items() if n == severity)

    @classmethod
    def worst(cls, statuses: list[HookStatus]) -> HookStatus | None:
        return max(statuses, key=lambda s: s.severity) if statuses else None


_SEVERITY = {
    HookStatus.DONE: 0,
    HookStatus.DROPPED: 1,
    HookStatus.PENDING: 2,
    HookStatus.RETRYING: 3,
    HookStatus.DEAD: 4,
}
# HookStatus.of_row as SQL: which dispatch rows have each status.
ROW_SQL = {
    HookStatus.DEAD: "status = 'dead'",
    HookStatus.RETRYING: "status = 'pending' AND attempts > 0",
    HookStatus.PENDING: "status = 'pending' AND attempts = 0",
    HookStatus.DROPPED: "status = 'dropped'",
    HookStatus.DONE: "status = 'done'",
}
# A row's severity in SQL: the calls page sums a call's rows up per integration with max().
SEVERITY_SQL = (
    "CASE " + " ".join(f"WHEN {ROW_SQL[s]} THEN {s.severity}" for s in HookStatus) + " ELSE 0 END"
)


class Period(StrEnum):
    """How far back the calls page looks (by when the service received each call)."""

    HOUR = "1h"
    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"
    ALL = "all"

    @property
    def seconds(self) -> float | None:
        return {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}.get(
            self.value
        )


@dataclass(frozen=True)
class CallFilter:
    """The calls page's filter. ``problems`` are i18n keys of inputs that could not be read
    (they filter nothing and are shown next to the form)."""

    account: str | None = None
    phone: str = ""  # as typed, to fill the form again
    phones: tuple[str, ...] = ()  # E.164 spellings to match exactly
    phone_digits: str | None = None  # or digits to find inside numbers
    extension: str | None = None
    outcome: Outcome | None = None
    status: HookStatus | None = None
    period: Period = Period.ALL
    before: int | None = None  # paging: only calls listed below this position
    problems: tuple[str, ...] = ()

    def query(self, *, before: int | None = None) -> dict[str, str]:
        """The query string that asks for this filter again (``before`` for the next page)."""
        values = {
            "account": self.account or "",
            "phone": self.phone,
            "extension": self.extension or "",
            "outcome": self.outcome.value if self.outcome else "",
            "status": self.status.value if self.status else "",
            "period": self.period.value if self.period is not Period.ALL else "",
            "before": str(before) if before is not None else "",
        }
        return {k: v for k, v in values.items() if v}


def _choice(enum: type[StrEnum], text: str, problem: str, problems: list[str]) -> StrEnum | None:
    if not text:
        return None
    try:
        return enum(text)
    except ValueError:
        problems.append(problem)
        return None


def parse_filter(query: Mapping[str, str], regions: Mapping[str, str]) -> CallFilter:
    """Read the calls page's query string; ``regions`` are the accounts' default regions."""
    problems: list[str] = []
    account = query.get("account", "").strip() or None
    if account is not None and account not in regions:
        problems.append("filter.bad_account")
        account = None
    phone = query.get("phone", "").strip()
    phones: tuple[str, ...] = ()
    digits: str | None = None
    if phone:
        wanted = [regions[account]] if account else sorted(set(regions.values()) or {"RU"})
        phones = tuple(sorted({n for r in wanted if (n := normalize(phone, r)) is not None}))
        if not phones:
            only = re.sub(r"\D", "", phone)
            if len(only) >= MIN_PARTIAL_DIGITS:
                digits = only
            else:
                problems.append("filter.bad_phone")
    extension = query.get("extension", "").strip() or None
    if extension is not None and not _EXTENSION.fullmatch(extension):
        problems.append("filter.bad_extension")
        extension = None
    outcome = _choice(Outcome, query.get("outcome", ""), "filter.bad_outcome", problems)
    status = _choice(HookStatus, query.get("status", ""), "filter.bad_status", problems)
    period = _choice(Period, query.get("period", ""), "filter.bad_period", problems)
    before_text = query.get("before", "")
    before = int(before_text) if before_text.isdigit() else None
    return CallFilter(
        account=account,
        phone=phone,
        phones=phones,
        phone_digits=digits,
        extension=extension,
        outcome=Outcome(outcome) if outcome else None,
        status=HookStatus(status) if status else None,
        period=Period(period) if period else Period.ALL,
        before=before,
        problems=tuple(problems),
    )
