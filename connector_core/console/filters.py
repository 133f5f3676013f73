"""What the calls page is asked for: the filter in its query string, read once into a type,
and the store query it stands for (``calls_view.store_query``, the one the CLI's
``connector calls`` uses too).

Pure: no I/O. A phone number may be typed in any spelling (``8 916 123-45-67``,
``+79161234567``, ``9161234567``); it is read as ``phones.normalize`` reads a caller's number,
in each account's region. Digits that make no whole number (``4567``) search inside numbers.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from connector_core import calls_view
from connector_core.callstate import Outcome
from connector_core.phones import normalize
from connector_core.store.base import CallQuery, DeliveryStatus

PAGE_SIZE = 50
MIN_PARTIAL_DIGITS = 3
_EXTENSION = re.compile(r"\d{1,8}")
_SEVERITY = list(DeliveryStatus)  # worst first, as the store lists them


def row_status(status: str, attempts: int) -> DeliveryStatus:
    """Where one dispatch row stands: a pending row tried before is retrying."""
    if status == "pending" and attempts > 0:
        return DeliveryStatus.RETRYING
    return DeliveryStatus(status)


def worst(statuses: Collection[DeliveryStatus]) -> DeliveryStatus | None:
    """The worst of ``statuses`` (dead, retrying, pending, dropped, done), or ``None``."""
    return min(statuses, key=_SEVERITY.index) if statuses else None


class Period(StrEnum):
    """How far back the calls page looks (by when each call started)."""

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
class Cursor:
    """Where a page of calls ended: the next page lists the calls after this one."""

    started_at: float
    call_id: str


@dataclass(frozen=True)
class CallFilter:
    """The calls page's filter. ``problems`` are i18n keys of inputs that could not be read
    (they filter nothing and are shown next to the form)."""

    account: str | None = None
    phone: str = ""  # as typed, to fill the form again
    whole_number: bool = False  # ``phone`` reads as a number: found in any spelling
    phone_digits: str | None = None  # or not: digits to find inside numbers
    extension: str | None = None
    outcome: Outcome | None = None
    status: DeliveryStatus | None = None
    integration: str | None = None  # <account>/<name>: whose status ``status`` is
    period: Period = Period.ALL
    after: Cursor | None = None  # paging: only the calls listed after this one
    problems: tuple[str, ...] = ()

    def query(self, *, after: Cursor | None = None) -> dict[str, str]:
        """The query string that asks for this filter again (``after``: the next page)."""
        values = {
            "account": self.account or "",
            "phone": self.phone,
            "extension": self.extension or "",
            "outcome": self.outcome.value if self.outcome else "",
            "status": self.status.value if self.status else "",
            "integration": self.integration or "",
            "period": self.period.value if self.period is not Period.ALL else "",
            "before": repr(after.started_at) if after else "",
            "before_call": after.call_id if after else "",
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


def parse_filter(
    query: Mapping[str, str], regions: Mapping[str, str], integrations: Collection[str] = ()
) -> CallFilter:
    """Read the calls page's query string; ``regions`` are the accounts' default regions,
    ``integrations`` the configured integrations' keys."""
    problems: list[str] = []
    account = query.get("account", "").strip() or None
    if account is not None and account not in regions:
        problems.append("filter.bad_account")
        account = None
    phone = query.get("phone", "").strip()
    digits: str | None = None
    # As calls_view reads a number: in the account's region, or in each account's.
    wanted = [regions[account]] if account else sorted(set(regions.values()))
    whole = bool(phone) and any(normalize(phone, region) is not None for region in wanted)
    if phone and not whole:
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
    status = _choice(DeliveryStatus, query.get("status", ""), "filter.bad_status", problems)
    integration = query.get("integration", "").strip() or None
    if integration is not None and integration not in integrations:
        problems.append("filter.bad_integration")
        integration = None
    period = _choice(Period, query.get("period", ""), "filter.bad_period", problems)
    return CallFilter(
        account=account,
        phone=phone,
        whole_number=whole,
        phone_digits=digits,
        extension=extension,
        outcome=Outcome(outcome) if outcome else None,
        status=DeliveryStatus(status) if status else None,
        integration=integration,
        period=Period(period) if period else Period.ALL,
        after=_cursor(query.get("before", ""), query.get("before_call", "")),
        problems=tuple(problems),
    )


def _cursor(started_at: str, call_id: str) -> Cursor | None:
    try:
        return Cursor(float(started_at), call_id) if started_at and call_id else None
    except ValueError:
        return None  # an edited link: the first page


def store_query(f: CallFilter, regions: Mapping[str, str], *, now: float, limit: int) -> CallQuery:
    """The store query for ``f`` at ``now``: the one ``connector calls`` would make, and the
    search inside numbers that only the page offers."""
    seconds = f.period.seconds
    wanted = calls_view.CallFilter(
        limit=limit,
        since=None if seconds is None else now - seconds,
        before=f.after.started_at if f.after else None,
        before_call_id=f.after.call_id if f.after else None,
        account=f.account,
        phone=f.phone if f.whole_number else None,
        extension=f.extension,
        outcome=f.outcome.value if f.outcome else None,
        status=f.status.value if f.status else None,
        integration=f.integration,
    )
    query = calls_view.store_query(wanted, regions)
    return replace(query, number_digits=f.phone_digits) if f.phone_digits else query
