"""Async client for the Usedesk REST API (the subset the Sipuni connector needs).

Facts come from the Usedesk API research notes (``usedesk-api.md`` in the shared reference folder);
"§2.7" and "pitfall 4" below refer to its sections and to the rows of its pitfall table (§5).

Transport
    Every call is ``POST {base_url}/{method}`` with a JSON body carrying ``api_token`` (§1.2-1.3).
    The client never retries by itself: most calls create things (tickets, comments, clients)
    and Usedesk has no idempotency key, so a blind retry after a timeout could duplicate them. It
    raises a classified :mod:`connector_core.errors` exception and leaves retrying to the
    dispatcher.

Error classification — the HTTP status decides the class, the body only refines a 2xx:

==========================================  ===========================================
what came back                              exception
==========================================  ===========================================
timeout (``timeout`` s, whole request)      ``TransientError``
connection refused/reset/dropped mid-body   ``TransientError``
HTTP 5xx, 408, 429 (any body, HTML or not)  ``TransientError`` (429: ``retry_after`` set)
HTTP 401, 403                               ``AuthError``
any other 4xx                               ``InvalidRequestError``
2xx + ``error`` key whose text is about     ``AuthError``
the token / authorisation
2xx + ``error`` naming an id Usedesk does   ``UnknownIdError`` (an ``InvalidRequestError``
not know ("The selected client_id is        naming the field: the caller may drop a
invalid.", "Ticket not found")              cached id and look it up again)
2xx + any other ``error`` key (§1.4, #13)   ``InvalidRequestError`` (carries Usedesk's text)
2xx + ``status`` that is not success        ``InvalidRequestError``
2xx + body that is not JSON                 ``InvalidRequestError``
2xx + JSON of the wrong shape               ``InvalidRequestError``
==========================================  ===========================================

A 2xx that is not JSON is treated as permanent on purpose: whoever answered gave a final answer,
and in practice it is a wrong ``base_url`` (a boxed install, §1.1, or the marketing site) that
returns the same HTML page on every retry. Dead-lettering it with "check base_url" surfaces the
misconfiguration at once instead of retrying for hours. An HTML page with a 5xx status (a proxy's
"Bad Gateway") is transient like any 5xx. Redirects (3xx) are not followed and are
``InvalidRequestError`` for the same reason.

No message ever contains the api_token: every text that reaches an exception or a log line passes
through :meth:`UsedeskClient._redact`, and ``repr`` leaves the token out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import aiohttp
from yarl import URL

from connector_core import phones
from connector_core.callrecords import CrmRequestObserver
from connector_core.clock import Clock, SystemClock
from connector_core.errors import AuthError, CrmError, InvalidRequestError, TransientError
from connector_core.plugin import SharedRate

from .ratelimit import DEFAULT_BURST_PER_SECOND, Sleep, SlidingWindowLimiter

__all__ = [
    "Agent",
    "ClientCard",
    "ClientSummary",
    "Outcome",
    "TicketComment",
    "TicketDetail",
    "TicketSummary",
    "UnknownIdError",
    "UsedeskClient",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

INTEGRATION: Final = "usedesk"
DEFAULT_BASE_URL: Final = "https://api.usedesk.ru"
# The shared windows' margin, wider than one process's: a grant there is a store round trip
# and another process's event loop away from its request, and on a busy host requests of
# several processes arrived up to 0.23 s later relative to each other than their grants
# (tests/e2e/test_cluster_rate_limit.py; with the 0.25 s of one process it saw 101 in 60 s).
SHARED_WINDOW_MARGIN: Final = 1.0

TICKET_TYPES: Final = frozenset({"question", "task", "problem", "incident"})
TICKET_PRIORITIES: Final = frozenset({"low", "medium", "urgent", "extreme"})
PHONE_TYPES: Final = frozenset({"home", "mobile", "stationary", "fax", "other"})
USER_TYPES: Final = ("employee", "admin", "support")
COMMENT_TYPES: Final = frozenset({"public", "private"})
# "trigger" is left out: it needs a trigger_id this client does not send.
COMMENT_AUTHORS: Final = frozenset({"user", "client"})
TICKET_STATUSES: Final = frozenset(range(1, 11))
SEARCH_TYPES: Final = frozenset({"partial_match", "full_match"})
TICKET_SORTS: Final = frozenset(
    {"id", "status_id", "client_id", "assignee_id", "group", "last_updated_at", "published_at"}
)

# List methods return at most 100 records per `offset` page (§1.5).
PAGE_SIZE: Final = 100
# find_clients_by_phone reads at most this many pages per query: a seven-digit %like% query that
# matches 200+ clients means the data is broken, and walking further would burn the rate budget.
MAX_PHONE_SEARCH_PAGES: Final = 2
# Fewer digits than this is an extension or garbage; `%like%` on it would match half the base.
MIN_PHONE_SEARCH_DIGITS: Final = 5
# Without Retry-After a 429 still means "stop"; a full window is the one wait certain to clear a
# per-minute counter.
DEFAULT_429_PAUSE: Final = 60.0
# A buggy or hostile Retry-After must not freeze the integration for days.
MAX_RETRY_AFTER: Final = 3600.0
_SNIPPET_CHARS: Final = 160

# The exact text Usedesk sends for a bad token is undocumented (§1.4), so this is a heuristic over
# the words any such message must contain, in English or Russian.
_AUTH_ERROR_RE: Final = re.compile(
    r"token|токен|unauthori[sz]|not authori[sz]|authenticat|авториз|аутентиф|api[ _-]?key|ключ",
    re.IGNORECASE,
)

# Usedesk's answers about an id it does not know (any more): Laravel's validation text for a
# reference field, and the lookups' own "… not found". Other "selected … is invalid" texts
# (a status, a type) are plain invalid requests.
_UNKNOWN_REF_RE: Final = re.compile(r"^The selected (\w+_id) is invalid\.?$", re.IGNORECASE)
_NOT_FOUND_RE: Final = re.compile(r"^(client|ticket|user) not found\.?$", re.IGNORECASE)

Outcome = Literal["ok", "timeout", "connection", "rate_limited", "server_error", "auth", "invalid"]
"""The ``outcome`` passed to ``on_request``; a small fixed set so it can be a metrics label."""


# on_request(method, seconds, outcome, status=, path=): the core's integration.on_crm_request.
OnRequest = CrmRequestObserver

# Awaited when a create's turn has come (the rate limiter's wait is over), just before it is
# sent: the caller's write-ahead record of it then says when Usedesk may start carrying it out.
# It runs in the request's turn: the next waiter's comes after it, so the limiter's order (the
# hang-up's work first) is the order the requests leave in.
BeforeSend = Callable[[], Awaitable[None]]


_E = TypeVar("_E", bound=CrmError)


def _in_turn(*steps: BeforeSend | None) -> BeforeSend | None:
    """The ``steps`` given, awaited one after the other in a request's turn."""
    todo = [step for step in steps if step is not None]
    if len(todo) < 2:
        return todo[0] if todo else None

    async def each() -> None:
        for step in todo:
            await step()

    return each


class UnknownIdError(InvalidRequestError):
    """Usedesk does not know the id sent in ``field`` (``client_id``, ``ticket_id``,
    ``assignee_id``, ``user_id``…): deleted, merged, or from another account.

    Still an :class:`InvalidRequestError`, so whoever does not handle it dead-letters the call
    as before; the plugin handles it for the ids it caches.
    """

    def __init__(self, message: str, *, field: str, integration: str | None = None) -> None:
        super().__init__(message, integration=integration)
        self.field = field


def unknown_id_field(text: str) -> str | None:
    """The id field an error text says Usedesk does not know, or ``None``."""
    text = text.strip()
    if (found := _UNKNOWN_REF_RE.match(text)) is not None:
        return found.group(1).lower()
    if (found := _NOT_FOUND_RE.match(text)) is not None:
        return f"{found.group(1).lower()}_id"
    return None


# --------------------------------------------------------------------------------------------
# Data types returned by the client. Usedesk quotes ids as strings in some replies and not in
# others (pitfall 11); every id below is already an ``int``.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientSummary:
    """One hit of ``/clients``.

    ``phones`` and ``emails`` are split from the flat comma-joined strings Usedesk returns there
    (pitfall 12); phones are kept exactly as stored (compare them with
    :func:`connector_core.phones.same_number`).
    ``ticket_ids`` are all of the client's tickets, in Usedesk's order.
    """

    id: int
    name: str
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    ticket_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClientCard(ClientSummary):
    """The full card from ``/client``: phones/emails flattened from their objects to strings."""

    note: str | None = None
    vip: bool = False
    spammer: bool = False


@dataclass(frozen=True, slots=True)
class TicketSummary:
    """One item of ``/tickets``. ``status_id`` is ``None`` only if Usedesk sent no status at all;
    optional references (assignee, group, channel) are ``None`` when absent or ``0``."""

    id: int
    subject: str
    status_id: int | None
    client_id: int | None = None
    assignee_id: int | None = None
    group_id: int | None = None
    channel_id: int | None = None
    type: str | None = None
    priority: str | None = None
    last_updated_at: str | None = None


@dataclass(frozen=True, slots=True)
class TicketComment:
    """One comment of a ticket. ``from_`` is ``user``/``client``/``trigger``."""

    id: int
    message: str
    type: str | None = None
    from_: str | None = None
    user_id: int | None = None
    published_at: str | None = None


@dataclass(frozen=True, slots=True)
class TicketDetail(TicketSummary):
    """``/ticket``: the ticket itself plus its tags and comments (history is not kept)."""

    additional_id: str | None = None
    tags: list[str] = field(default_factory=list)
    comments: list[TicketComment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NewClient:
    """A client for Usedesk to create together with a ticket (``client_id=new_client``)."""

    name: str
    phone_digits: str | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    """A Usedesk user (agent). ``role`` is ``admin``/``employee``/``support`` when known."""

    id: int
    name: str
    email: str | None = None
    role: str | None = None


# --------------------------------------------------------------------------------------------
# Small pure helpers (public ones are used by the plugin and by tests).
# --------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110).

    ``now`` is the wall-clock time (epoch seconds) an HTTP-date is measured against. Returns
    ``None`` for a missing or unparseable header; a date in the past gives ``0``. The result is
    capped at an hour so a broken header cannot stall the integration for days.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            # RFC 9110 dates are always GMT; email.utils leaves "-0000" naive.
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN from float("nan")
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _clean_text(value: str | None, what: str, *, max_len: int = 255, required: bool = True) -> str:
    text = (value or "").strip()
    if required and not text:
        raise InvalidRequestError(f"Usedesk {what} must not be empty", integration=INTEGRATION)
    if len(text) > max_len:
        raise InvalidRequestError(
            f"Usedesk {what} is {len(text)} characters long; the API accepts at most {max_len}",
            integration=INTEGRATION,
        )
    return text


def _join_tags(tag: str | Sequence[str] | None) -> str | None:
    """Usedesk takes tags as ONE ``"a, b"`` string (pitfall 8); a list is joined, never sent."""
    if tag is None:
        return None
    parts = [tag] if isinstance(tag, str) else list(tag)
    cleaned = [t.strip() for p in parts for t in p.split(",") if t.strip()]
    return ", ".join(cleaned) or None


# --------------------------------------------------------------------------------------------
# The client.
# --------------------------------------------------------------------------------------------


class UsedeskClient:
    """Typed, rate-limited access to the Usedesk API.

    ``session``: share an ``aiohttp.ClientSession`` (the client then never closes it); without one
    the client creates its own on first use and closes it in :meth:`close` / ``async with``.

    ``rate_limit_per_minute`` / ``burst_per_second``: see :mod:`plugins.usedesk.ratelimit`. The
    limit is per client instance; build one client per Usedesk account and share it. With
    ``shared_rate`` (``integration.shared_rate``: several connector processes) each request
    also takes a slot of the same windows shared by every client on this Usedesk account.

    ``timeout``: total seconds for one request (connect + send + read); waiting for the rate limiter
    does not count.

    ``clock``: a :class:`connector_core.clock.Clock`. When given it drives both the limiter and
    ``Retry-After`` dates, and ``sleep`` should be a matching fake. When omitted the limiter uses a
    monotonic clock and dates use the system clock.

    ``on_request(method, seconds, outcome)``: called once per HTTP request with the API method
    (``"create/ticket"``), the latency, and an :data:`Outcome`. It must be cheap; an exception in
    it is logged and swallowed so metrics can never fail a CRM call.
    """

    def __init__(
        self,
        *,
        api_token: str,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        rate_limit_per_minute: int = 100,
        timeout: float = 10.0,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        burst_per_second: int = DEFAULT_BURST_PER_SECOND,
        on_request: OnRequest | None = None,
        window_margin: float = 0.0,
        shared_rate: SharedRate | None = None,
    ) -> None:
        if not api_token or not api_token.strip():
            raise ValueError("Usedesk api_token must not be empty")
        url = URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"Usedesk base_url must be an http(s) URL, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._token = api_token.strip()
        self._base_url = str(url)
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout
        self._wall_clock: Clock = clock or SystemClock()
        self._on_request = on_request
        self.limiter = SlidingWindowLimiter(
            rate_limit_per_minute,
            burst_per_second=burst_per_second,
            clock=clock,
            sleep=sleep,
            margin=window_margin,
        )
        # Several connector processes (a shared store): the same windows, counted by all.
        self.shared_rate = shared_rate

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def account(self) -> str:
        """A short stable name of the Usedesk account behind this client, for keying what is
        cached from it: a hash of ``base_url`` and the token (the token itself never leaves)."""
        digest = hashlib.sha256(f"{self._base_url}\n{self._token}".encode())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"UsedeskClient(base_url={self._base_url!r}, "
            f"rate_limit_per_minute={self.limiter.per_minute}, timeout={self._timeout})"
        )

    async def __aenter__(self) -> UsedeskClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it; a shared session is left alone."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        if self._owns_session:
            self._session = None

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    async def check_auth(self) -> None:
        """Prove the token works with one cheap, read-only call (``/users``).

        Raises ``AuthError`` for a refused token, ``TransientError`` if Usedesk is unreachable.
        """
        data = await self._call("users", {})
        self._expect_list(data, "users")

    async def search_clients(
        self, query: str, *, search_type: str = "partial_match", offset: int = 0
    ) -> list[ClientSummary]:
        """``/clients``: search name, e-mail and phone. ``offset`` is a page index (pitfall 1)."""
        if search_type not in SEARCH_TYPES:
            raise InvalidRequestError(
                f"Usedesk search_type must be one of {sorted(SEARCH_TYPES)}, got {search_type!r}",
                integration=INTEGRATION,
            )
        _check_offset(offset)
        data = await self._call(
            "clients", {"query": query, "search_type": search_type, "offset": offset}
        )
        # Some deployments wrap the array as {"clients": [...]} (§2.7); accept both.
        if isinstance(data, dict) and "clients" in data:
            data = data["clients"]
        return [_parse_client_summary(item) for item in self._expect_list(data, "clients")]

    async def search_takes_wildcards(self) -> bool | None:
        """Whether ``/clients`` lets a query's ``%`` through as an SQL wildcard: one request.

        The query ``%`` alone then matches every client; taken literally it matches only a
        client with a ``%`` in its name, e-mail or phone. So a hit without any ``%`` proves
        wildcards work; no hit while the account has clients (a second request, listing them
        without a query) proves they do not; an account without clients gives ``None`` (ask
        again later). Usedesk documents the search as ``LIKE %…%`` but not
        whether it escapes the query, so the connector asks instead of assuming.
        """
        hits = await self.search_clients("%")
        if any("%" not in " ".join([h.name, *h.emails, *h.phones]) for h in hits):
            return True
        if hits:
            return False
        # Nothing matched: a literal search, or an account without clients. The list
        # without a query tells them apart.
        everyone = self._expect_list(await self._call("clients", {"offset": 0}), "clients")
        return False if everyone else None

    async def find_clients_by_phone(
        self, number: str, *, region: str = "RU", wildcards: bool = False
    ) -> list[ClientSummary]:
        """Clients with a phone that is the same number as ``number``, sorted by id.

        ``number`` is read as :func:`connector_core.phones.normalize` reads a caller's number in
        ``region`` (the integration's default region), and so are the stored phones: agents type
        them in any spelling (``"+7 916 123-45-67"``, ``"8 (916) 123-45-67"``, ``"9161234567"``).

        ``/clients`` is SQL ``LIKE %query%`` on the stored string (§2.7), so one query cannot
        find every spelling: :func:`~connector_core.phones.search_queries` gives the national
        number's last seven digits, then those digits grouped as the country writes them with
        ``-`` and with spaces. That is three requests for a Russian number (fewer where the
        grouping has no separators), each reading at most :data:`MAX_PHONE_SEARCH_PAGES` pages.
        With ``wildcards`` (the account's search takes them, :meth:`search_takes_wildcards`)
        one request does: :func:`~connector_core.phones.search_pattern`, ``123%45%67``.
        Every hit is then compared by the whole number (country code included), so a number
        that only ends the same, ``379161234567``, is never returned.
        """
        wanted = phones.normalize(number, region)
        queries = phones.search_queries(wanted) if wanted else []
        # The first query is the bare digit tail; shorter than this it would match half the base.
        if wanted is None or len(queries[0]) < MIN_PHONE_SEARCH_DIGITS:
            raise InvalidRequestError(
                f"cannot search Usedesk clients by phone {number!r}: it is not a phone number "
                f"with at least {MIN_PHONE_SEARCH_DIGITS} digits (read in region {region})",
                integration=INTEGRATION,
            )
        # One after another, not together: the dispatcher paces calls by the rate budget on
        # the understanding that a hook has one request waiting at a time (core pacing).
        if wildcards:
            queries = [phones.search_pattern(wanted)]
        merged: dict[int, ClientSummary] = {}
        for query in queries:
            merged.update((hit.id, hit) for hit in await self._phone_hits(query, wanted, region))
        return [merged[i] for i in sorted(merged)]

    async def _phone_hits(self, query: str, e164: str, region: str) -> list[ClientSummary]:
        """The hits of one phone query, page by page, that hold the number ``e164``."""
        kept: list[ClientSummary] = []
        for page in range(MAX_PHONE_SEARCH_PAGES):
            hits = await self.search_clients(query, search_type="partial_match", offset=page)
            kept += [h for h in hits if any(phones.same_number(p, e164, region) for p in h.phones)]
            if len(hits) < PAGE_SIZE:
                return kept
        log.warning(
            "Usedesk phone search %r filled %d pages; later pages were not read",
            query,
            MAX_PHONE_SEARCH_PAGES,
        )
        return kept

    async def get_client(self, client_id: int) -> ClientCard:
        """``/client``: the full card. The reply is a one-element array wrapping ``client``."""
        data = await self._call("client", {"client_id": int(client_id)})
        # Documented as [ {client: {...}, phones: [...], ...} ]; tolerate a bare object too.
        entry = data[0] if isinstance(data, list) and data else data
        if not isinstance(entry, dict):
            raise self._shape_error("client", "a one-element array holding the client", data)
        card = entry.get("client", entry)
        if not isinstance(card, dict):
            raise self._shape_error("client", "an object under 'client'", card)
        phones = _dedupe(
            _flatten_contacts(card.get("phones"), "phone")
            + _flatten_contacts(entry.get("phones") if entry is not card else None, "phone")
        )
        emails = _dedupe(
            _flatten_contacts(card.get("emails"), "email")
            + _flatten_contacts(entry.get("emails") if entry is not card else None, "email")
        )
        return ClientCard(
            id=_req_int(card.get("id"), "client.id"),
            name=_str(card.get("name")),
            phones=phones,
            emails=emails,
            ticket_ids=_int_list(card.get("tickets"), "client.tickets"),
            note=_opt_str(card.get("note")),
            vip=_truthy(card.get("vip")),
            spammer=_truthy(card.get("spammer")),
        )

    async def create_client(
        self,
        *,
        name: str,
        phone_digits: str | None,
        phone_type: str = "mobile",
        before_send: BeforeSend | None = None,
    ) -> int:
        """``/create/client`` with one phone (or none); returns the new client's id.

        ``phone_digits`` must already be 10–15 digits with nothing else (pitfall 6); this is checked
        before anything is sent. ``before_send``: see :data:`BeforeSend`.
        """
        body = {"name": _clean_text(name, "client name")}
        if phone_digits is not None:
            body["phone"] = _check_phone(phone_digits)
            body["phone_type"] = _check_choice(phone_type, PHONE_TYPES, "phone_type")
        data = self._expect_dict(
            await self._call("create/client", body, before_send), "create/client"
        )
        self._expect_success(data, "create/client")
        client_id = data.get("client_id")
        if client_id is None and isinstance(data.get("client"), dict):
            client_id = data["client"].get("id")
        return _req_int(client_id, "client_id", method="create/client")

    async def add_client_phone(
        self, client_id: int, phone_digits: str, *, phone_type: str = "mobile"
    ) -> None:
        """``/update/client`` with one ``phone``; Usedesk *appends* it to the card (pitfall 7)."""
        body = {
            "client_id": int(client_id),
            "phone": _check_phone(phone_digits),
            "phone_type": _check_choice(phone_type, PHONE_TYPES, "phone_type"),
        }
        data = self._expect_dict(await self._call("update/client", body), "update/client")
        self._expect_success(data, "update/client")

    async def list_tickets(
        self,
        *,
        client_id: int,
        statuses: Iterable[int] | None = None,
        sort: str = "id",
        order: str = "desc",
        offset: int = 0,
    ) -> list[TicketSummary]:
        """``/tickets`` of one client, optionally only in ``statuses`` (``fstatus="1,5,8"``).

        With the defaults the newest ticket comes first.
        """
        _check_offset(offset)
        body: dict[str, Any] = {
            "client_id": int(client_id),
            "sort": _check_choice(sort, TICKET_SORTS, "sort"),
            "order": _check_choice(order, frozenset({"asc", "desc"}), "order"),
            "offset": offset,
        }
        if statuses is not None:
            ids = [_check_status(s) for s in statuses]
            if not ids:
                # An empty fstatus would mean "no filter" to Usedesk: the opposite of the ask.
                return []
            body["fstatus"] = ",".join(str(s) for s in ids)
        data = await self._call("tickets", body)
        return [_parse_ticket_summary(item) for item in self._expect_list(data, "tickets")]

    async def get_ticket(self, ticket_id: int) -> TicketDetail:
        """``/ticket``: the ticket with its tags and comments."""
        data = self._expect_dict(
            await self._call("ticket", {"ticket_id": int(ticket_id)}), "ticket"
        )
        ticket = data.get("ticket")
        if not isinstance(ticket, dict):
            raise self._shape_error("ticket", "an object with a 'ticket' object", data)
        comments_raw = data.get("comments") or []
        if not isinstance(comments_raw, list):
            raise self._shape_error("ticket", "a 'comments' array", comments_raw)
        return TicketDetail(
            **_ticket_fields(ticket),
            additional_id=_opt_str(ticket.get("additional_id")),
            tags=_parse_tags(data.get("tags", ticket.get("tags"))),
            comments=[_parse_comment(c) for c in comments_raw if isinstance(c, dict)],
        )

    async def create_ticket(
        self,
        *,
        subject: str,
        message: str,
        client_id: int | NewClient,
        type: str = "question",
        status: int = 8,
        tag: str | Sequence[str] | None = None,
        assignee_id: int | None = None,
        private_comment: bool = True,
        additional_id: str | None = None,
        channel_id: int | None = None,
        user_id: int | None = None,
        before_send: BeforeSend | None = None,
    ) -> int:
        """``/create/ticket``; returns the ticket id.

        ``client_id`` is an existing client, or a :class:`NewClient` that Usedesk creates with
        the ticket (``client_id=new_client`` with its name and phone): one request instead of
        two. ``private_comment=True`` (default) makes the first message an internal note, so
        nothing is ever sent to the customer through a messenger or e-mail channel (pitfall
        10); ``user_id`` is the agent who authors it. ``tag`` may be a list; it is sent as one
        ``"a, b"`` string. ``additional_id`` is a hidden field, handy for the Sipuni call id.
        ``before_send``: see :data:`BeforeSend`.
        """
        body: dict[str, Any] = {
            "subject": _clean_text(subject, "ticket subject"),
            "message": _clean_text(message, "ticket message", max_len=64_000),
            "type": _check_choice(type, TICKET_TYPES, "ticket type"),
            "status": _check_status(status),
        }
        if isinstance(client_id, NewClient):
            body["client_id"] = "new_client"
            body["client_name"] = _clean_text(client_id.name, "client name")
            if client_id.phone_digits is not None:
                body["client_phone"] = _check_phone(client_id.phone_digits)
        else:
            body["client_id"] = int(client_id)
        if user_id is not None:
            body["from"] = "user"
            body["user_id"] = int(user_id)
        if private_comment:
            # The API knows only `true` here; sending false is undocumented, so omit instead.
            body["private_comment"] = True
        tags = _join_tags(tag)
        if tags is not None:
            body["tag"] = _clean_text(tags, "tag string")
        if assignee_id is not None:
            body["assignee_id"] = int(assignee_id)
        if additional_id is not None:
            body["additional_id"] = _clean_text(additional_id, "additional_id")
        if channel_id is not None:
            body["channel_id"] = int(channel_id)
        data = self._expect_dict(
            await self._call("create/ticket", body, before_send), "create/ticket"
        )
        self._expect_success(data, "create/ticket")
        ticket_id = data.get("ticket_id")
        if ticket_id is None and isinstance(data.get("ticket"), dict):
            ticket_id = data["ticket"].get("id")
        return _req_int(ticket_id, "ticket_id", method="create/ticket")

    async def update_ticket(
        self,
        ticket_id: int,
        *,
        assignee_id: int | None = None,
        status: int | None = None,
        tag: str | Sequence[str] | None = None,
        type: str | None = None,
        priority: str | None = None,
        silent: bool = True,
    ) -> None:
        """``/update/ticket``: change only the fields given.

        ``silent=True`` (default) stops Usedesk from flipping a *New* ticket to *Open* just because
        the connector touched it (pitfall 4). Whether ``tag`` replaces or appends to existing tags
        is undocumented (§2.5). With nothing to change no request is sent.
        """
        body: dict[str, Any] = {"ticket_id": int(ticket_id)}
        if assignee_id is not None:
            body["assignee_id"] = int(assignee_id)
        if status is not None:
            body["status"] = _check_status(status)
        tags = _join_tags(tag)
        if tags is not None:
            body["tag"] = _clean_text(tags, "tag string")
        if type is not None:
            body["type"] = _check_choice(type, TICKET_TYPES, "ticket type")
        if priority is not None:
            body["priority"] = _check_choice(priority, TICKET_PRIORITIES, "ticket priority")
        if len(body) == 1:
            log.debug("Usedesk update/ticket %s skipped: nothing to change", ticket_id)
            return
        if silent:
            body["silent"] = True
        data = self._expect_dict(await self._call("update/ticket", body), "update/ticket")
        self._expect_success(data, "update/ticket")

    async def create_comment(
        self,
        ticket_id: int,
        *,
        message: str,
        type: str = "private",
        from_: str = "user",
        user_id: int | None = None,
        before_send: BeforeSend | None = None,
    ) -> int:
        """``/create/comment``; returns the comment id.

        Private by default: a *public* comment from ``user`` on a messenger/e-mail ticket is
        delivered to the customer. Without ``user_id`` Usedesk credits the company's first user.
        ``before_send``: see :data:`BeforeSend`.
        """
        body: dict[str, Any] = {
            "ticket_id": int(ticket_id),
            "message": _clean_text(message, "comment message", max_len=64_000),
            "type": _check_choice(type, COMMENT_TYPES, "comment type"),
            "from": _check_choice(from_, COMMENT_AUTHORS, "comment author (from)"),
        }
        if user_id is not None:
            body["user_id"] = int(user_id)
        data = self._expect_dict(
            await self._call("create/comment", body, before_send), "create/comment"
        )
        self._expect_success(data, "create/comment")
        return _req_int(data.get("comment_id"), "comment_id", method="create/comment")

    async def list_users(self, user_type: str | None = None) -> list[Agent]:
        """``/users`` of one ``user_type``; ``None`` means Usedesk's default, *employee* only."""
        body: dict[str, Any] = {}
        if user_type is not None:
            body["user_type"] = _check_choice(user_type, frozenset(USER_TYPES), "user_type")
        data = await self._call("users", body)
        return [_parse_agent(item, user_type) for item in self._expect_list(data, "users")]

    async def users_all(self) -> list[Agent]:
        """Every agent: employees, admins and support merged by id, sorted by id.

        Three calls, as ``/users`` leaves admins out unless asked (pitfall 3). Cache the result.
        """
        merged: dict[int, Agent] = {}
        for user_type in USER_TYPES:
            for agent in await self.list_users(user_type):
                merged.setdefault(agent.id, agent)
        return [merged[i] for i in sorted(merged)]

    # ----------------------------------------------------------------------------------------
    # Transport
    # ----------------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so the client can be built outside a running event loop.
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _error(self, cls: type[_E], message: str, **kwargs: Any) -> _E:
        return cls(self._redact(message), integration=INTEGRATION, **kwargs)

    async def _shared_slot(self) -> None:
        assert self.shared_rate is not None
        # Named by the account, not the integration: two integrations (in any process)
        # on one token share one budget, as Usedesk counts them.
        await self.shared_rate.acquire(
            f"usedesk:{self.account}",
            per_minute=self.limiter.per_minute,
            per_second=self.limiter.burst_per_second,
            margin=max(self.limiter.margin, SHARED_WINDOW_MARGIN),
        )

    async def _call(
        self, method: str, params: Mapping[str, Any], before_send: BeforeSend | None = None
    ) -> Any:
        """POST one API method; return the decoded JSON or raise a classified error."""
        # The hook call's priority (the hang-up's work first) orders the waiters, through
        # the shared window's slot and ``before_send`` too: both are done before the next
        # local waiter's turn.
        shared = None if self.shared_rate is None else self._shared_slot
        await self.limiter.acquire(then=_in_turn(shared, before_send))
        url = f"{self._base_url}/{method}"
        body = {"api_token": self._token, **params}
        started = time.monotonic()
        outcome: Outcome = "ok"
        status: int | None = None
        try:
            session = self._get_session()
            try:
                # Redirects are not followed: aiohttp would turn the POST into a body-less GET.
                async with session.post(
                    url,
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
                    headers = resp.headers
                    content_type = resp.content_type
            # ServerTimeoutError is both a TimeoutError and a ClientConnectionError: test it first.
            except TimeoutError as exc:
                outcome = "timeout"
                raise self._error(
                    TransientError,
                    f"Usedesk did not answer within {self._timeout:g} s (POST /{method}); "
                    "if this call creates something, it may have been created anyway",
                    unanswered=True,
                ) from exc
            except aiohttp.ClientError as exc:
                # Refused/reset, DNS, or the connection dropped mid-body: all worth a retry.
                outcome = "connection"
                raise self._error(
                    TransientError,
                    f"could not reach Usedesk at {self._base_url} (POST /{method}): "
                    f"{type(exc).__name__}: {exc}",
                    unanswered=True,
                ) from exc
            try:
                return self._decode(method, status, headers, content_type, raw)
            except TransientError:
                outcome = "rate_limited" if status == 429 else "server_error"
                raise
            except AuthError:
                outcome = "auth"
                raise
            except InvalidRequestError:
                outcome = "invalid"
                raise
        finally:
            elapsed = time.monotonic() - started
            log.debug(
                "Usedesk POST /%s -> %s (%s) in %.3f s",
                method,
                status if status is not None else "-",
                outcome,
                elapsed,
            )
            self._report(method, elapsed, outcome, status)

    def _report(self, method: str, seconds: float, outcome: Outcome, status: int | None) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(method, seconds, outcome, status=status, path=f"POST /{method}")
        except Exception:
            log.exception("Usedesk on_request hook failed; ignoring it")

    def _decode(
        self,
        method: str,
        status: int,
        headers: Mapping[str, str],
        content_type: str,
        raw: bytes,
    ) -> Any:
        where = f"POST /{method}"
        data, parsed = _try_json(raw)
        usedesk_says = _error_text(data) if parsed else None
        if usedesk_says is not None:
            # Redact before classifying too: an echoed token must not steer the auth heuristic.
            usedesk_says = self._redact(usedesk_says)
        detail = f": {usedesk_says}" if usedesk_says else f" ({_snippet(content_type, raw)})"

        if status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"), now=self._wall_clock.now())
            self.limiter.pause_for(DEFAULT_429_PAUSE if retry_after is None else retry_after)
            wait = f"retry after {retry_after:g} s" if retry_after is not None else "no Retry-After"
            raise self._error(
                TransientError,
                f"Usedesk rate limit hit on {where} (HTTP 429, {wait}){detail}",
                retry_after=retry_after,
            )
        if status >= 500 or status == 408:
            raise self._error(
                TransientError, f"Usedesk server error on {where}: HTTP {status}{detail}"
            )
        if status in (401, 403):
            raise self._error(
                AuthError,
                f"Usedesk refused the API token on {where} (HTTP {status}){detail}; "
                "check the API channel's secret key",
            )
        if 300 <= status < 400:
            target = headers.get("Location", "an unknown address")
            raise self._error(
                InvalidRequestError,
                f"Usedesk redirected {where} (HTTP {status}) to {target}; "
                f"base_url {self._base_url} is probably wrong",
            )
        if status >= 400 or status < 200:
            message = f"Usedesk rejected {where}: HTTP {status}{detail}"
            # A 404/422 may carry the same "unknown id" text as the usual HTTP 200 refusal.
            if usedesk_says and (field := unknown_id_field(usedesk_says)) is not None:
                raise self._error(UnknownIdError, message, field=field)
            raise self._error(InvalidRequestError, message)
        if not parsed:
            raise self._error(
                InvalidRequestError,
                f"Usedesk answered {where} with HTTP {status} but the body is not JSON "
                f"({_snippet(content_type, raw)}); check base_url {self._base_url}",
            )
        if usedesk_says is not None:
            if _AUTH_ERROR_RE.search(usedesk_says) or _error_code(data) in (401, 403):
                raise self._error(
                    AuthError,
                    f"Usedesk refused the API token on {where}: {usedesk_says}; "
                    "check the API channel's secret key",
                )
            message = f"Usedesk rejected {where}: {usedesk_says}"
            if (field := unknown_id_field(usedesk_says)) is not None:
                raise self._error(UnknownIdError, message, field=field)
            raise self._error(InvalidRequestError, message)
        return data

    def _expect_list(self, data: Any, method: str) -> list[Any]:
        if not isinstance(data, list):
            raise self._shape_error(method, "an array", data)
        return data

    def _expect_dict(self, data: Any, method: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self._shape_error(method, "an object", data)
        return data

    def _expect_success(self, data: Mapping[str, Any], method: str) -> None:
        """Create/update replies carry ``status`` = ``"success"`` or ``true``; anything else is a
        refusal even without an ``error`` key (§1.4)."""
        if "status" not in data:
            return
        value = data["status"]
        if value is True or value == 1 or (isinstance(value, str) and value.lower() in _OK):
            return
        raise self._error(
            InvalidRequestError,
            f"Usedesk did not confirm POST /{method}: status={value!r}",
        )

    def _shape_error(self, method: str, expected: str, got: Any) -> InvalidRequestError:
        kind = type(got).__name__ if got is not None else "null"
        if isinstance(got, dict):
            kind = f"object with keys {sorted(map(str, got))[:8]}"
        return self._error(
            InvalidRequestError,
            f"Usedesk answered POST /{method} with {kind} where {expected} was expected",
        )


_OK: Final = frozenset({"success", "ok", "true", "1"})


# --------------------------------------------------------------------------------------------
# Response parsing helpers. They raise InvalidRequestError for a missing required id: a reply we
# cannot interpret will not become interpretable by asking again.
# --------------------------------------------------------------------------------------------


def _try_json(raw: bytes) -> tuple[Any, bool]:
    try:
        return json.loads(raw.decode("utf-8-sig")), True
    except (UnicodeDecodeError, ValueError):
        return None, False


def _error_text(data: Any) -> str | None:
    if not isinstance(data, dict) or "error" not in data:
        return None
    err = data["error"]
    if err is None or err is False or err == "":
        return None
    if isinstance(err, dict):
        err = err.get("message") or json.dumps(err, ensure_ascii=False)
    elif isinstance(err, list):
        err = "; ".join(str(e) for e in err)
    text = " ".join(str(err).split())[: _SNIPPET_CHARS * 2]
    code = data.get("code")
    return f"{text} (code {code})" if code is not None else text


def _error_code(data: Any) -> int | None:
    try:
        return int(data.get("code"))
    except (AttributeError, TypeError, ValueError):
        return None


def _snippet(content_type: str, raw: bytes) -> str:
    if not raw.strip():
        return f"{content_type or 'no content type'}, empty body"
    text = " ".join(raw[: _SNIPPET_CHARS * 2].decode("utf-8", "replace").split())
    if len(text) > _SNIPPET_CHARS:
        text = text[:_SNIPPET_CHARS] + "…"
    return f"{content_type or 'no content type'}, starts with {text!r}"


def _check_offset(offset: int) -> None:
    if not isinstance(offset, int) or offset < 0:
        raise InvalidRequestError(
            f"Usedesk offset is a page index ≥ 0, got {offset!r}", integration=INTEGRATION
        )


def _check_choice(value: str, allowed: frozenset[str], what: str) -> str:
    if value not in allowed:
        raise InvalidRequestError(
            f"Usedesk {what} must be one of {', '.join(sorted(allowed))}; got {value!r}",
            integration=INTEGRATION,
        )
    return value


def _check_status(status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or status not in TICKET_STATUSES:
        raise InvalidRequestError(
            f"Usedesk ticket status must be an id from 1 to 10, got {status!r}",
            integration=INTEGRATION,
        )
    return status


def _check_phone(phone_digits: str) -> str:
    text = phone_digits.strip() if isinstance(phone_digits, str) else ""
    if not (text.isascii() and text.isdigit() and 10 <= len(text) <= 15):
        raise InvalidRequestError(
            f"Usedesk accepts a phone only as 10-15 digits with no '+', spaces or brackets; "
            f"got {phone_digits!r}",
            integration=INTEGRATION,
        )
    return text


def _req_int(value: Any, what: str, *, method: str | None = None) -> int:
    result = _as_int(value)
    if result is None:
        where = f" in the reply to POST /{method}" if method else ""
        raise InvalidRequestError(
            f"Usedesk sent {value!r} as {what}{where}; expected an integer id",
            integration=INTEGRATION,
        )
    return result


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _opt_ref(value: Any) -> int | None:
    """An optional reference id; Usedesk writes "no group"/"no assignee" as ``0`` or null."""
    result = _as_int(value)
    return result if result is not None and result > 0 else None


def _int_list(value: Any, what: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"Usedesk sent {type(value).__name__} as {what}; expected an array of ids",
            integration=INTEGRATION,
        )
    return [_req_int(v, what) for v in value]


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true")


def _split_flat(value: Any, key: str) -> list[str]:
    """``/clients`` gives ``"a, b"``; tolerate a list of strings or of ``{key: …}`` objects too."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return _flatten_contacts(value, key)


def _flatten_contacts(value: Any, key: str) -> list[str]:
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for item in value:
        text = item.get(key) if isinstance(item, dict) else item
        if isinstance(text, str | int) and str(text).strip():
            out.append(str(text).strip())
    return out


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _parse_client_summary(item: Any) -> ClientSummary:
    if not isinstance(item, dict):
        raise InvalidRequestError(
            f"Usedesk sent {type(item).__name__} as a /clients item; expected an object",
            integration=INTEGRATION,
        )
    return ClientSummary(
        id=_req_int(item.get("id"), "client id", method="clients"),
        name=_str(item.get("name")),
        phones=_split_flat(item.get("phone", item.get("phones")), "phone"),
        emails=_split_flat(item.get("emails"), "email"),
        ticket_ids=_int_list(item.get("tickets"), "client tickets"),
    )


def _parse_status(ticket: Mapping[str, Any]) -> int | None:
    # `status_id` in /ticket and webhooks; `status` as an int or {id: …} in /tickets (pitfall 11).
    raw = ticket.get("status_id")
    if raw is None:
        raw = ticket.get("status")
    if isinstance(raw, dict):
        raw = raw.get("id")
    return _as_int(raw)


def _ticket_fields(ticket: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": _req_int(ticket.get("id"), "ticket id"),
        "subject": _str(ticket.get("subject")),
        "status_id": _parse_status(ticket),
        "client_id": _opt_ref(ticket.get("client_id")),
        "assignee_id": _opt_ref(ticket.get("assignee_id")),
        # Responses say `group`, requests say `group_id` (pitfall 16).
        "group_id": _opt_ref(ticket.get("group", ticket.get("group_id"))),
        "channel_id": _opt_ref(ticket.get("channel_id")),
        "type": _opt_str(ticket.get("type")),
        "priority": _opt_str(ticket.get("priority")),
        "last_updated_at": _opt_str(ticket.get("last_updated_at")),
    }


def _parse_ticket_summary(item: Any) -> TicketSummary:
    if not isinstance(item, dict):
        raise InvalidRequestError(
            f"Usedesk sent {type(item).__name__} as a /tickets item; expected an object",
            integration=INTEGRATION,
        )
    return TicketSummary(**_ticket_fields(item))


def _parse_tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for tag in value:
        name = tag.get("name") if isinstance(tag, dict) else tag
        if isinstance(name, str) and name.strip():
            out.append(name.strip())
    return out


def _parse_comment(item: Mapping[str, Any]) -> TicketComment:
    return TicketComment(
        id=_req_int(item.get("id"), "comment id"),
        message=_str(item.get("message")),
        type=_opt_str(item.get("type")),
        from_=_opt_str(item.get("from")),
        user_id=_opt_ref(item.get("user_id")),
        published_at=_opt_str(item.get("published_at")),
    )


def _parse_agent(item: Any, user_type: str | None) -> Agent:
    if not isinstance(item, dict):
        raise InvalidRequestError(
            f"Usedesk sent {type(item).__name__} as a /users item; expected an object",
            integration=INTEGRATION,
        )
    return Agent(
        id=_req_int(item.get("id"), "user id", method="users"),
        name=_str(item.get("name")),
        email=_opt_str(item.get("email")),
        role=_opt_str(item.get("role")) or user_type,
    )
