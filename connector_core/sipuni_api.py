"""Async client for Sipuni's own API: click-to-call, the account's schemes, the call history.

Facts come from ``shared/reference/sipuni-events.md`` §3; what the reference leaves open is
decided here and marked [INF] (docs/sipuni.md lists the same decisions).

Transport
    ``POST {base_url}/{method}`` with the parameters as form fields, plus ``user`` (the
    6-digit account number) and ``hash``: the md5 of the values of every other parameter,
    ``user`` included, in the alphabetical order of their names, joined by ``+``, then ``+``
    and the account's integration key (:func:`signature`). The key itself never travels.
    [INF] The reference allows the query string or form fields; form fields keep the
    parameters (a client's phone number) out of proxies' access logs.

Error classification (as the CRM clients do, :mod:`connector_core.errors`):

=========================================  ==================================================
what came back                             exception
=========================================  ==================================================
timeout, refused or dropped connection     ``TransientError`` (``unanswered``): can't connect
HTTP 429                                   ``TransientError`` with ``retry_after``
HTTP 5xx, 408                              ``TransientError``: Sipuni's server error
HTTP 401, 403                              ``AuthError``: the key or the account is wrong
``success: false`` about the hash / key    ``AuthError`` [INF: Sipuni's wording is unknown]
any other 4xx, ``success: false``          ``InvalidRequestError`` with Sipuni's text
a body of the wrong shape                  ``InvalidRequestError`` (check ``sipuni_api_url``)
=========================================  ==================================================

No message ever contains the key: Sipuni's own texts pass through a redactor first.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import aiohttp
from yarl import URL

from connector_core.errors import AuthError, InvalidRequestError, TransientError
from connector_core.httplog import Redactor

if TYPE_CHECKING:  # the config names this module's default address
    from connector_core.config import AccountConfig

__all__ = [
    "DEFAULT_API_URL",
    "SIPUNI_TZ",
    "CallbackStarted",
    "HistoryRow",
    "SchemeKind",
    "SipuniApi",
    "SipuniScheme",
    "history_csv",
    "parse_history",
    "signature",
]

INTEGRATION: Final = "sipuni_api"
DEFAULT_API_URL: Final = "https://sipuni.com/api"
# [INF] The history's times and the export's dates are in the cabinet's time zone; Sipuni is
# a Moscow company and its cabinet shows Moscow time unless the account says otherwise.
SIPUNI_TZ: Final = ZoneInfo("Europe/Moscow")
DEFAULT_429_PAUSE: Final = 60.0
MAX_RETRY_AFTER: Final = 3600.0
_SNIPPET: Final = 160
_AUTH_WORDS: Final = re.compile(r"hash|auth|key|ключ|подпис|авториз|доступ", re.IGNORECASE)
_TIME_FORMATS: Final = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M:%S")


def signature(params: Mapping[str, str], key: str) -> str:
    """The ``hash`` of a request: md5 over the values sorted by their names, then the key.

    ``params`` holds every parameter sent except ``hash`` (``user`` included). For
    ``callback/call_number`` that is antiaon, phone, reverse, sipnumber, user:
    ``md5("0+79031234567+0+101+012345+<key>")`` (the reference's worked example).
    """
    text = "+".join([*(params[name] for name in sorted(params)), key])
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class SchemeKind(StrEnum):
    """``schema/list``'s ``type``: 0 inbound, 1 outbound."""

    INBOUND = "0"
    OUTBOUND = "1"


@dataclass(frozen=True, slots=True)
class SipuniScheme:
    """One of the account's schemes («схемы»), as ``schema/list`` returns it."""

    id: str
    name: str
    kind: SchemeKind | None = None

    def matches(self, selector: str) -> bool:
        """Whether a ``schemes`` entry names this scheme: its exact name, or its number.

        [INF] ``schema/list`` gives a bare id (``913898``) where webhooks carry the
        ``treeNumber`` (``000-913898``, old accounts ``000913898``): numbers are compared by
        their digits without the leading zeros.
        """
        if selector == self.name:
            return True
        digits = selector.replace("-", "")
        return digits.isdigit() and digits.lstrip("0") == self.id.lstrip("0")

    @property
    def tree_number(self) -> str:
        """[INF] The id as webhooks spell it (``000-<id>``)."""
        return f"000-{self.id}"


@dataclass(frozen=True, slots=True)
class CallbackStarted:
    """Sipuni accepted a ``callback/call_number``; the call's webhooks follow."""

    callback_id: str | None


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


# The history CSV's columns (reference §3), by the name this module gives each. Only
# ``started_at`` and ``record_id`` are required: the rest may be absent on some accounts.
COLUMNS: Final[dict[str, str]] = {
    "kind": "Тип",
    "status": "Статус",
    "started_at": "Время",
    "scheme": "Схема",
    "source": "Откуда",
    "destination": "Куда",
    "answered_by": "Кто ответил",
    "call_seconds": "Длительность звонка",
    "talk_seconds": "Длительность разговора",
    "answer_seconds": "Время ответа",
    "record_id": "ID записи",
    "new_client": "Новый клиент",
    "callback_state": "Состояние перезвона",
    "crm_info": "Информация из CRM",
    "crm_owner": "Ответственный из CRM",
}
_REQUIRED: Final = ("started_at", "record_id")
# [INF] Words of the «Тип» column; Sipuni's exact spelling is unknown, so stems are matched.
_DIRECTIONS: Final = (("вход", Direction.INBOUND), ("исход", Direction.OUTBOUND))
_INTERNAL: Final = "внутр"


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One call of ``statistic/export``.

    ``record_id`` («ID записи») is [INF] the call's ``call_id``: the recording link of the
    webhooks is ``…/record?id=<call_id>``. Durations are seconds; ``answered`` is whether
    someone answered (a talk longer than zero, or a name in «Кто ответил»).
    """

    record_id: str
    started_at: datetime
    direction: Direction | None
    status: str
    scheme: str
    source: str
    destination: str
    answered_by: str
    call_seconds: int
    talk_seconds: int
    answer_seconds: int
    new_client: bool
    callback_state: str
    crm_owner: str

    @property
    def answered(self) -> bool:
        return self.talk_seconds > 0 or bool(self.answered_by)


def _seconds(text: str) -> int:
    """``125``, ``2:05`` or ``0:02:05`` → 125; empty or unreadable → 0."""
    text = text.strip()
    if not text:
        return 0
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        return 0
    total = 0
    for part in parts:
        total = total * 60 + int(part)
    return total


def _direction(text: str) -> Direction | None:
    lowered = text.strip().lower()
    if lowered.startswith(_INTERNAL):
        return Direction.INTERNAL
    return next((d for stem, d in _DIRECTIONS if lowered.startswith(stem)), None)


def _time(text: str, tz: ZoneInfo) -> datetime:
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    raise ValueError(text)


def parse_history(text: str, tz: ZoneInfo = SIPUNI_TZ) -> list[HistoryRow]:
    """The calls of a ``statistic/export`` CSV (``;``-separated, a header line first).

    Columns are found by their header, in any order. Raises ``InvalidRequestError`` naming
    what is wrong (a missing column, an unreadable time) so an operator can tell a changed
    format from a wrong ``sipuni_api_url``.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";")
    header = [h.strip() for h in next(reader, [])]
    if not any(header):
        return []
    where = {name: header.index(col) for name, col in COLUMNS.items() if col in header}
    missing = [COLUMNS[name] for name in _REQUIRED if name not in where]
    if missing:
        raise InvalidRequestError(
            f"Sipuni's call history has no column {', '.join(map(repr, missing))}"
            f" (columns: {'; '.join(header)[:_SNIPPET]}); is sipuni_api_url Sipuni's API?",
            integration=INTEGRATION,
        )
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue

        def cell(name: str, cells: list[str] = cells) -> str:
            i = where.get(name)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        try:
            started = _time(cell("started_at"), tz)
        except ValueError:
            raise InvalidRequestError(
                f"Sipuni's call history, line {line}: unreadable time {cell('started_at')!r}"
                " (expected DD.MM.YYYY HH:MM:SS)",
                integration=INTEGRATION,
            ) from None
        rows.append(
            HistoryRow(
                record_id=cell("record_id"),
                started_at=started,
                direction=_direction(cell("kind")),
                status=cell("status"),
                scheme=cell("scheme"),
                source=cell("source"),
                destination=cell("destination"),
                answered_by=cell("answered_by"),
                call_seconds=_seconds(cell("call_seconds")),
                talk_seconds=_seconds(cell("talk_seconds")),
                answer_seconds=_seconds(cell("answer_seconds")),
                new_client=cell("new_client").lower() in ("да", "yes", "1", "true"),
                callback_state=cell("callback_state"),
                crm_owner=cell("crm_owner"),
            )
        )
    return rows


def history_csv(rows: Sequence[Mapping[str, str]]) -> str:
    """A ``statistic/export`` CSV of ``rows`` (each by this module's column names; absent
    ones are empty): what the sandbox answers, so the parser and it share one layout."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(COLUMNS.values())
    for row in rows:
        writer.writerow(row.get(name, "") for name in COLUMNS)
    return out.getvalue()


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value else DEFAULT_429_PAUSE
    except ValueError:
        seconds = DEFAULT_429_PAUSE
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class SipuniApi:
    """Signed access to Sipuni's API for one account.

    ``session``: share an ``aiohttp.ClientSession`` (never closed here); without one the
    client makes its own and closes it in :meth:`close` / ``async with``. ``timeout``: total
    seconds per request. ``tz``: the cabinet's time zone, for the history's dates and times.
    """

    def __init__(
        self,
        *,
        account: str,
        key: str,
        base_url: str = DEFAULT_API_URL,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 15.0,
        tz: ZoneInfo = SIPUNI_TZ,
    ) -> None:
        if not key.strip():
            raise ValueError("the Sipuni integration key must not be empty")
        url = URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("sipuni_api_url must be an http(s) URL")
        self.account = account
        self._key = key.strip()
        self.base_url = str(url)
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout
        self.tz = tz
        self._redact = Redactor([self._key])

    def __repr__(self) -> str:
        return f"SipuniApi(account={self.account!r}, base_url={self.base_url!r})"

    @classmethod
    def of_account(cls, account: AccountConfig, *, timeout: float = 15.0) -> SipuniApi | None:
        """The client of a configured account (its key and API address); ``None`` when the
        account has no ``sipuni_api_key``."""
        if account.sipuni_api_key is None:
            return None
        return cls(
            account=account.number,
            key=account.sipuni_api_key.get_secret_value(),
            base_url=account.sipuni_api_url,
            timeout=timeout,
        )

    async def __aenter__(self) -> SipuniApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        if self._owns_session:
            self._session = None

    # --- the methods ----------------------------------------------------------------------

    async def call_number(
        self, phone: str, extension: str, *, client_first: bool = False, hide_number: bool = False
    ) -> CallbackStarted:
        """``callback/call_number``: ring ``extension`` first, then ``phone`` (``reverse=0``),
        or the client first with ``client_first``. ``hide_number``: ``antiaon=1`` [INF: the
        reference names the flag, not its meaning; «антиАОН» hides the caller's number].

        The call's webhooks come later, as for any call.
        """
        digits = re.sub(r"\D", "", phone)
        if not digits:
            raise InvalidRequestError(
                "a click-to-call needs the client's phone number", integration=INTEGRATION
            )
        if not extension.isdigit():
            raise InvalidRequestError(
                f"a click-to-call needs the employee's extension (digits), got {extension!r}",
                integration=INTEGRATION,
            )
        params = {
            "antiaon": "1" if hide_number else "0",
            "phone": digits,
            "reverse": "1" if client_first else "0",
            "sipnumber": extension,
        }
        data = self._json(await self._post("callback/call_number", params), "callback/call_number")
        nested = data.get("data")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else {}
        found = data.get("callbackId", inner.get("callbackId", inner.get("id")))
        return CallbackStarted(str(found) if found not in (None, "") else None)

    async def schemes(self, kind: SchemeKind | None = None) -> list[SipuniScheme]:
        """``schema/list``: the account's schemes (of one ``kind``, or all)."""
        body = await self._post("schema/list", {"type": kind.value if kind else ""})
        data = self._json(body, "schema/list")
        items = data.get("data")
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and "name" in i and "id" in i for i in items
        ):
            raise InvalidRequestError(
                "Sipuni's schema/list answer has no list of schemes with id and name"
                f" ({self._snippet(body)}); is sipuni_api_url Sipuni's API?",
                integration=INTEGRATION,
            )
        kinds = {k.value: k for k in SchemeKind}
        return [
            SipuniScheme(str(i["id"]), str(i["name"]), kinds.get(str(i.get("type", ""))))
            for i in items
        ]

    async def calls_since(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        direction: Direction | None = None,
        missed_only: bool = False,
    ) -> list[HistoryRow]:
        """``statistic/export``: the calls that started in [``since``, ``until``] (``until``:
        now), optionally of one ``direction`` or only the missed ones.

        The API takes whole days, so the days around the window are asked for and the rows
        outside it dropped here.
        """
        until = until or datetime.now(self.tz)
        first, last = since.astimezone(self.tz).date(), until.astimezone(self.tz).date()
        types = {None: "0", Direction.INBOUND: "1", Direction.OUTBOUND: "2"}
        params = {
            "anonymous": "1",
            "firstTime": "0",
            "from": _day(first),
            "fromNumber": "",
            "state": "1" if missed_only else "0",
            "to": _day(last),
            "toAnswer": "",
            "toNumber": "",
            "tree": "",
            "type": types.get(direction, "3"),
        }
        body = await self._post("statistic/export", params)
        if body.lstrip().startswith(("{", "[")):
            self._json(body, "statistic/export")  # an error in JSON raises here
        rows = parse_history(body, self.tz)
        return [r for r in rows if since <= r.started_at <= until]

    # --- transport ------------------------------------------------------------------------

    def signed(self, params: Mapping[str, str]) -> dict[str, str]:
        """``params`` with ``user`` and ``hash`` added."""
        full = {**params, "user": self.account}
        return {**full, "hash": signature(full, self._key)}

    async def _post(self, method: str, params: Mapping[str, str]) -> str:
        url = f"{self.base_url}/{method}"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=self.signed(params),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                body = await response.text(errors="replace")
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            raise TransientError(
                f"Sipuni's API at {self.base_url} did not answer {method} within"
                f" {self._timeout:g} s",
                integration=INTEGRATION,
                unanswered=True,
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"cannot connect to Sipuni's API at {self.base_url} ({type(exc).__name__});"
                " check sipuni_api_url and the network",
                integration=INTEGRATION,
                unanswered=True,
            ) from None
        self._classify(method, status, body, retry_after)
        return body

    def _classify(self, method: str, status: int, body: str, retry_after: str | None) -> None:
        said = self._snippet(body)
        if status == 429:
            raise TransientError(
                f"Sipuni rate-limited {method} (HTTP 429); retrying later",
                retry_after=_retry_after(retry_after),
                integration=INTEGRATION,
            )
        if status >= 500 or status == 408:
            raise TransientError(
                f"Sipuni's API answered {method} with HTTP {status} (a server error on"
                f" Sipuni's side; retrying later): {said}",
                integration=INTEGRATION,
            )
        if status in (401, 403):
            raise AuthError(self._auth_message(method, status, said), integration=INTEGRATION)
        if status == 404:
            # Sipuni answers every method it has: a 404 is a wrong address, not a refusal.
            raise InvalidRequestError(
                f"no Sipuni API method {method} at {self.base_url} (HTTP 404: {said});"
                f" is sipuni_api_url Sipuni's API ({DEFAULT_API_URL})?",
                integration=INTEGRATION,
            )
        if not 200 <= status < 300:
            raise InvalidRequestError(
                f"Sipuni refused {method} (HTTP {status}): {said}", integration=INTEGRATION
            )

    def _auth_message(self, method: str, status: int | None, said: str) -> str:
        code = f"HTTP {status}" if status else "success: false"
        return (
            f"Sipuni refused {method} for account {self.account} ({code}: {said}): check the"
            " account number and sipuni_api_key (the integration key of Sipuni's cabinet,"
            " «Настройки» → «API»; docs/sipuni.md)"
        )

    def _json(self, body: str, method: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            raise InvalidRequestError(
                f"Sipuni's answer to {method} is not JSON ({self._snippet(body)});"
                " is sipuni_api_url Sipuni's API?",
                integration=INTEGRATION,
            ) from None
        if not isinstance(data, dict):
            raise InvalidRequestError(
                f"Sipuni's answer to {method} is not a JSON object ({self._snippet(body)})",
                integration=INTEGRATION,
            )
        if data.get("success") is False:
            said = self._snippet(str(data.get("message") or data.get("error") or body))
            if _AUTH_WORDS.search(said):
                raise AuthError(self._auth_message(method, None, said), integration=INTEGRATION)
            raise InvalidRequestError(f"Sipuni refused {method}: {said}", integration=INTEGRATION)
        return data

    def _snippet(self, text: str) -> str:
        text = " ".join(text.split())
        text = self._redact(text)
        return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "") if text else "empty body"


def _day(day: date) -> str:
    return day.strftime("%d.%m.%Y")
