"""Click-to-call: «Перезвонить» on the agent page and in the console.

The connector asks Sipuni (``callback/call_number``, ``reverse = 0``) to ring the agent's
extension first and then the client of a stored call. The call that follows arrives as
webhooks like any other; :func:`find_origin` links it back to the call it was started from.

Rules (pure, unit-tested): an agent's page token starts calls for that agent's extension only
(:func:`authorise`); each extension may start one call every ``spacing`` seconds and at most
``per_minute`` in a minute (:class:`RateLimit`, per process). The number is always the stored
call's client: a token cannot make the PBX dial an arbitrary number.

Each request that reaches Sipuni is kept on the call it was started from
(``callrecords.ClickToCall``: Sipuni's ``callbackId`` or its error), so ``connector trace``
and the console's one-call page show it.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from aiohttp import ChainMapProxy, web
from pydantic import SecretStr

from connector_core.appkeys import CLOCK, CONFIG, STORE
from connector_core.callrecords import CallRecord, ClickToCall, NewCallRecord
from connector_core.callstate import CallState, Direction
from connector_core.clock import Clock
from connector_core.config import Config
from connector_core.errors import AuthError, CrmError, TransientError
from connector_core.logcontext import call_context
from connector_core.sipuni_api import SipuniApi
from connector_core.store.base import CallQuery, Store

log = logging.getLogger(__name__)

RECORDS: Final = "click_to_call"  # the call records' ``integration`` column for these
SPACING_SECONDS: Final = 10.0
PER_MINUTE: Final = 3
SIPUNI_TIMEOUT: Final = 10.0
# How long after a click its call may start, when the webhooks carry no ``callbackId``.
MATCH_SECONDS: Final = 120.0
# How far back the call a click-to-call answers is looked for.
ORIGIN_LOOKBACK: Final = 7 * 86400.0
RECENT_CALLS: Final = 10
RECENT_SECONDS: Final = 86400.0


class Refused(Exception):
    """A click-to-call not started: ``status`` for HTTP, ``code`` for the page, ``message``
    for the person (what to do), ``retry_after`` seconds when waiting helps."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


@dataclass(frozen=True)
class Started:
    """Sipuni took the request: it rings ``extension``, then ``phone``."""

    account: str
    call_id: str  # the call it was started from
    extension: str
    phone: str
    callback_id: str | None


@dataclass(frozen=True)
class Origin:
    """The click-to-call a call came from: the call it was started from, and the request."""

    call_id: str
    at: float
    request: ClickToCall


# -- the rules -------------------------------------------------------------------------------


def token_owner(agents: Mapping[str, SecretStr], token: str) -> str | None:
    """The extension whose page token ``token`` is, if any. Every token is compared, in
    constant time, so the answer's timing does not tell which tokens exist."""
    given = token.encode()
    owner = None
    for extension, secret in agents.items():
        if hmac.compare_digest(given, secret.get_secret_value().encode()):
            owner = extension
    return owner if given else None


def authorise(account: str, agents: Mapping[str, SecretStr], extension: str, token: str) -> None:
    """Raise ``Refused`` (403) unless ``token`` is the page token of ``extension``."""
    owner = token_owner(agents, token)
    if owner is None:
        raise Refused(
            403,
            "not_authorised",
            f"the token is not an agent page token of account {account}"
            f" (accounts.{account}.agents): open the page from your own link",
        )
    if owner != extension:
        raise Refused(
            403,
            "not_your_extension",
            f"this is the page token of extension {owner}: it starts calls for extension"
            f" {owner} only, not {extension}",
        )


class RateLimit:
    """Per key (an account's extension): one start every ``spacing`` seconds, and at most
    ``per_minute`` in any 60 seconds. In memory, per process."""

    def __init__(self, spacing: float = SPACING_SECONDS, per_minute: int = PER_MINUTE) -> None:
        self.spacing, self.per_minute = spacing, per_minute
        self._starts: dict[tuple[str, str], deque[float]] = {}

    def acquire(self, key: tuple[str, str], now: float) -> float:
        """0 and the start counted, or the seconds to wait before the next one."""
        starts = self._starts.setdefault(key, deque())
        while starts and starts[0] <= now - 60.0:
            starts.popleft()
        waits = [0.0]
        if starts:
            waits.append(starts[-1] + self.spacing - now)
        if len(starts) >= self.per_minute:
            waits.append(starts[0] + 60.0 - now)
        wait = max(waits)
        if wait > 0:
            return wait
        starts.append(now)
        return 0.0


def unavailable(config: Config, account: str) -> str | None:
    """Why the account cannot click-to-call (no such account, no key), or ``None``."""
    table = config.accounts.get(account)
    if table is None:
        return f"account {account} is not in the config"
    if table.sipuni_api_key is None:
        return (
            f"click-to-call is off for account {account}: accounts.{account}.sipuni_api_key"
            " (Sipuni's integration key) is not set; see docs/sipuni.md"
        )
    return None


# -- starting a call -------------------------------------------------------------------------


class ClickToCallService:
    """Starts click-to-calls for one service: the rules above, Sipuni, and the records."""

    def __init__(self, config: Config, store: Store, clock: Clock, limit: RateLimit) -> None:
        self.config, self.store, self.clock, self.limit = config, store, clock, limit

    async def start(self, account: str, call_id: str, extension: str, by: str) -> Started:
        """Ask Sipuni to ring ``extension``, then the client of call ``call_id``.

        ``by`` says who asked (``agent 101``, ``console``). Raises ``Refused``.
        """
        reason = unavailable(self.config, account)
        if reason is not None:
            raise Refused(409, "no_api_key", reason)
        api = SipuniApi.of_account(self.config.accounts[account], timeout=SIPUNI_TIMEOUT)
        assert api is not None  # unavailable() said so
        if not extension.isdigit():
            raise Refused(400, "bad_request", f"extension must be digits, not {extension!r}")
        state = await self.store.load_call(account, call_id)
        if state is None:
            raise Refused(404, "no_call", f"account {account} has no stored call {call_id!r}")
        if not state.client_number:
            why = (
                "an internal call, between employees"
                if state.direction is Direction.INTERNAL
                else "the number was hidden"
            )
            raise Refused(
                422, "no_number", f"call {call_id} has no client number to call back ({why})"
            )
        wait = self.limit.acquire((account, extension), self.clock.now())
        if wait > 0:
            seconds = math.ceil(wait)
            raise Refused(
                429,
                "rate_limited",
                f"extension {extension} started a call moments ago: try again in {seconds} s"
                f" (one call every {self.limit.spacing:g} s, {self.limit.per_minute} a minute)",
                retry_after=seconds,
            )
        request = ClickToCall(
            by=by, extension=extension, phone=state.client_number, outcome="started"
        )
        with call_context(account, call_id):
            try:
                async with api:
                    started = await api.call_number(state.client_number, extension)
            except CrmError as exc:
                error = f"{type(exc).__name__}: {exc}"
                await self._keep(account, call_id, replace(request, outcome="failed", error=error))
                log.warning("click-to-call by %s for %s failed: %s", by, extension, exc)
                raise _sipuni_refusal(exc) from None
            await self._keep(account, call_id, replace(request, callback_id=started.callback_id))
            log.info(
                "click-to-call by %s: Sipuni rings %s, then the client (callbackId %s)",
                by,
                extension,
                started.callback_id,
            )
        return Started(account, call_id, extension, state.client_number, started.callback_id)

    async def _keep(self, account: str, call_id: str, entry: ClickToCall) -> None:
        record = NewCallRecord(RECORDS, entry, self.clock.now())
        await self.store.add_call_records(account, call_id, [record])


def _sipuni_refusal(exc: CrmError) -> Refused:
    if isinstance(exc, TransientError):
        wait = math.ceil(exc.retry_after) if exc.retry_after is not None else None
        return Refused(503, "sipuni_unavailable", f"Sipuni did not start the call: {exc}", wait)
    if isinstance(exc, AuthError):
        return Refused(502, "sipuni_refused", f"Sipuni refused the key: {exc}")
    return Refused(502, "sipuni_refused", f"Sipuni refused the call: {exc}")


# -- the call that followed ------------------------------------------------------------------


def requests_of(records: Sequence[CallRecord]) -> list[tuple[float, ClickToCall]]:
    """The click-to-calls started from a call, oldest first, with when each was asked."""
    return [(r.at, r.entry) for r in records if isinstance(r.entry, ClickToCall)]


def _answers(request: ClickToCall, at: float, state: CallState, callback_id: str | None) -> bool:
    if request.outcome != "started":
        return False
    if callback_id is not None and request.callback_id is not None:
        return callback_id == request.callback_id
    # Without Sipuni's id: the same employee dialled the same number shortly after.
    started = state.started_at or 0
    return (
        request.extension == state.employee
        and request.phone == state.client_number
        and at - 5.0 <= started <= at + MATCH_SECONDS
    )


async def find_origin(
    store: Store, state: CallState, events: Sequence[Mapping[str, Any]]
) -> Origin | None:
    """The click-to-call an outbound call came from: by the ``callbackId`` Sipuni put on its
    final webhook, or else by the same extension dialling the same number within
    ``MATCH_SECONDS`` of the click. ``None`` for any other call."""
    if state.direction is not Direction.OUTBOUND or not state.client_number:
        return None
    callback_id = next((str(e["callbackId"]) for e in events if e.get("callbackId")), None)
    started = state.started_at or 0
    earlier = await store.find_calls(
        CallQuery(
            limit=20,
            account=state.account,
            numbers=((state.account, state.client_number),),
            since=started - ORIGIN_LOOKBACK,
            before=started + 1,
        )
    )
    for row in earlier:
        if row.state.call_id == state.call_id:
            continue
        records = await store.call_records(state.account, row.state.call_id)
        for at, request in reversed(requests_of(records)):
            if _answers(request, at, state, callback_id):
                return Origin(row.state.call_id, at, request)
    return None


# -- HTTP: the agent page ----------------------------------------------------------------------

LIMIT = web.AppKey("click_to_call_limit", RateLimit)


def install(app: web.Application) -> None:
    """The agent page's routes, and the rate limit the page and the console share."""
    app[LIMIT] = RateLimit()
    app.add_routes(routes())


def service(app: web.Application | ChainMapProxy) -> ClickToCallService:
    """The service of ``app`` (or of a console request's ``config_dict``)."""
    return ClickToCallService(app[CONFIG], app[STORE], app[CLOCK], app[LIMIT])


def choices(state: CallState, agents: Iterable[str], answered_owner: str = "last") -> list[str]:
    """The extensions the console offers to ring first, the likeliest first: the call's owner,
    the first phone that rang, the others that rang or dialled, then every agent's."""
    first = state.legs[0].extension if state.legs else None
    found = [state.owner(answered_owner), first, *(leg.extension for leg in state.legs)]
    found += [state.employee, *agents]
    return list(dict.fromkeys(e for e in found if e and e.isdigit()))


def refusal_response(refused: Refused) -> web.Response:
    """The JSON answer of a refused click-to-call (``Retry-After`` when waiting helps)."""
    headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
    body: dict[str, Any] = {"success": False, "code": refused.code, "error": refused.message}
    if refused.retry_after:
        body["retry_after"] = refused.retry_after
    return web.json_response(body, status=refused.status, headers=headers)


async def _fields(request: web.Request) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise Refused(400, "bad_request", "the body must be a JSON object")
        return {k: str(v) for k, v in data.items() if v is not None}
    return {k: str(v) for k, v in (await request.post()).items()}


def _agent(app: web.Application, fields: Mapping[str, str]) -> tuple[str, str]:
    account, extension = fields.get("account", ""), fields.get("extension", "")
    table = app[CONFIG].accounts.get(account)
    if table is None:
        raise Refused(404, "no_account", f"account {account!r} is not in the config")
    authorise(account, table.agents, extension, fields.get("token", ""))
    return account, extension


async def agent_call(request: web.Request) -> web.Response:
    """``POST /agent/call`` (JSON or form: account, extension, token, call_id): Sipuni rings
    the agent's extension, then the client of ``call_id``."""
    try:
        fields = await _fields(request)
        account, extension = _agent(request.app, fields)
        call_id = fields.get("call_id", "")
        if not call_id:
            raise Refused(400, "bad_request", "call_id is missing: which call to call back")
        started = await service(request.app).start(
            account, call_id, extension, f"agent {extension}"
        )
    except Refused as refused:
        return refusal_response(refused)
    return web.json_response(
        {
            "success": True,
            "callback_id": started.callback_id,
            "message": f"Sipuni rings {extension}, then {started.phone}",
        }
    )


async def agent_calls(request: web.Request) -> web.Response:
    """``GET /agent/calls`` (account, extension, token): the agent's recent calls, and whether
    «Перезвонить» is available (``call_back``, else ``call_back_off`` says why)."""
    try:
        account, extension = _agent(request.app, request.query)
    except Refused as refused:
        return refusal_response(refused)
    app = request.app
    since = app[CLOCK].now() - RECENT_SECONDS
    rows = await app[STORE].find_calls(
        CallQuery(limit=RECENT_CALLS, account=account, extension=extension, since=since)
    )
    calls = [
        {
            "call_id": row.state.call_id,
            "caller": row.state.client_number or row.state.client_number_raw,
            "direction": row.state.direction.value,
            "outcome": row.state.outcome.value,
            "started_at": row.state.started_at,
        }
        for row in rows
    ]
    off = unavailable(app[CONFIG], account)
    return web.json_response(
        {"success": True, "call_back": off is None, "call_back_off": off, "calls": calls},
        headers={"Cache-Control": "no-store"},
    )


def routes() -> list[web.RouteDef]:
    return [web.post("/agent/call", agent_call), web.get("/agent/calls", agent_calls)]
