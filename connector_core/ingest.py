"""Ingest: the ``/sipuni/{token}`` endpoint Sipuni's webhooks arrive at.

Sipuni suspends a URL that does not answer properly, so the endpoint does as little as it
can: authenticate the account by the token in the path, read GET query / POST form / POST
JSON parameters, validate them, store the raw event durably, then answer
``{"success": true}``. Everything else happens in the worker, after the answer.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

from connector_core import refusals
from connector_core.appkeys import (
    ACCOUNTS,
    CLOCK,
    CONFIG,
    METRICS,
    REFUSALS,
    STORE,
    AccountRuntime,
)
from connector_core.events import CALL_ID, EventError, Probe, UnknownEvent, parse_event
from connector_core.logcontext import call_context
from connector_core.store.base import is_store_failure

log = logging.getLogger(__name__)


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


# The answer to almost every request, encoded once: json.dumps per webhook showed up in profiles.
_SUCCESS_BODY = json.dumps({"success": True}).encode()


def _reply(status: int = 200, error: str | None = None) -> web.Response:
    if error is None and status == 200:
        return web.Response(body=_SUCCESS_BODY, content_type="application/json", charset="utf-8")
    body: dict[str, Any] = {"success": error is None}
    if error is not None:
        body["error"] = error
    return web.json_response(body, status=status)


def loggable_call_id(value: object) -> str:
    """A refused request's call id, fit for a log line (it may be anything)."""
    text = str(value) if value is not None else "-"
    return text if CALL_ID.fullmatch(text) else "(invalid)"


def find_account(accounts: list[AccountRuntime], token: str) -> AccountRuntime | None:
    """The account whose secret token is ``token``.

    Every account is compared, in constant time each, so the answer's timing says nothing
    about how much of a token was right or which account it was close to.
    """
    found = None
    given = token.encode()
    for account in accounts:
        if hmac.compare_digest(given, account.token.encode()):
            found = account
    return found


async def read_params(request: web.Request) -> dict[str, Any]:
    """Merge the query string with a form or JSON body; the body wins on clashes."""
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    try:
        content_type = request.content_type
    except (ValueError, IndexError):  # the stdlib's header parser fails on e.g. ";0*"
        raise BadRequest(415, "the Content-Type header cannot be read") from None
    try:
        if content_type == "application/json":
            # Numbers keep their exact digits: a JSON 1717171700.52010 is the call id
            # "1717171700.52010", not the float 1717171700.5201.
            body = json.loads(await request.text(), parse_float=str, parse_int=str)
            if not isinstance(body, dict):
                raise BadRequest(400, "a JSON body must be an object of Sipuni fields")
            for name, value in body.items():
                if value is not None and not isinstance(value, str | bool):
                    raise BadRequest(400, f"field '{name}' must be a string or a number")
                if _surrogates(name) or (isinstance(value, str) and _surrogates(value)):
                    raise BadRequest(400, "the body has text that is not valid Unicode")
                # Stored as Sipuni sends it everywhere else: text ("1" for true).
                params[name] = str(int(value)) if isinstance(value, bool) else value
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = [(k, v) for k, v in (await request.post()).items() if isinstance(v, str)]
            # A form decoded with the sender's charset (unicode_escape, say) may carry them too.
            if any(_surrogates(k) or _surrogates(v) for k, v in form):
                raise BadRequest(400, "the body has text that is not valid Unicode")
            params.update(form)
        else:
            raise BadRequest(
                415,
                f"unsupported content type {content_type!r}: send a query string,"
                " a form (application/x-www-form-urlencoded) or JSON",
            )
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].server.max_body_bytes
        raise BadRequest(413, f"the body is larger than {limit} bytes") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadRequest(400, "the body is not valid JSON") from None
    except LookupError:
        raise BadRequest(415, f"unknown charset {request.charset!r}") from None
    except (ValueError, HttpProcessingError):  # a malformed form or multipart body
        raise BadRequest(400, "the body is not a valid form") from None
    return params


async def read_params_in_time(request: web.Request) -> dict[str, Any]:
    """``read_params``, or a 408 when the body has not arrived within the body timeout: a
    sender that stalls mid-body would otherwise hold its connection for ever."""
    if request.method != "POST" or not request.can_read_body:
        return dict(request.query)  # nothing to wait for: no timer to arm (Sipuni's GETs)
    seconds = request.app[CONFIG].server.body_timeout_seconds
    try:
        async with asyncio.timeout(seconds):
            return await read_params(request)
    except TimeoutError:
        raise BadRequest(408, f"the body did not arrive within {seconds:g} s") from None


def _surrogates(text: str) -> bool:
    """Lone surrogates (JSON's "\\ud800"): not Unicode text, and not storable as UTF-8."""
    return not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text)


def _allowed(account: AccountRuntime, remote: str | None) -> bool:
    if not account.allowed_networks:
        return True
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    return any(address in network for network in account.allowed_networks)


async def sipuni_webhook(request: web.Request) -> web.Response:
    app = request.app
    token = request.match_info["token"]
    account = find_account(app[ACCOUNTS], token)
    if account is None:
        app[METRICS].webhooks_refused.labels(refusals.UNKNOWN_TOKEN).inc()
        address = request.remote or "-"
        refusals.log_unknown_token(app[REFUSALS], address, token, app[CLOCK].now())
        # The same answer for every wrong token: nothing to learn from probing.
        return _reply(404, "not found")
    if not _allowed(account, request.remote):
        app[METRICS].webhooks_refused.labels(refusals.ADDRESS_NOT_ALLOWED).inc()
        with call_context(account.number, None):
            refusals.log_address_not_allowed(
                app[REFUSALS], account.number, request.remote or "-", app[CLOCK].now()
            )
        # The same answer as a wrong token: an outsider cannot tell a right token from one.
        return _reply(404, "not found")
    store, now = app[STORE], app[CLOCK].now()
    try:
        params = await read_params_in_time(request)
        parsed = parse_event(params)
    except BadRequest as exc:
        app[METRICS].events_rejected.labels(account.number).inc()
        await store.record_rejected(account.number, dict(request.query), exc.reason, now)
        with call_context(account.number, None):
            log.warning("webhook refused: %s", exc.reason)
        return _reply(exc.status, exc.reason)
    except EventError as exc:
        app[METRICS].events_rejected.labels(account.number).inc()
        await store.record_rejected(account.number, params, str(exc), now)
        with call_context(account.number, loggable_call_id(params.get("call_id"))):
            log.warning("webhook refused: %s", exc)
        return _reply(400, str(exc))
    if isinstance(parsed, Probe):
        return _reply()
    if isinstance(parsed, UnknownEvent):
        with call_context(account.number, parsed.call_id):
            refusals.log_ignored_event(app[REFUSALS], account.number, parsed.event)
        return _reply()
    try:
        # What was parsed is stored with the raw fields: the worker does not parse it again.
        await store.append_event(account.number, params, now, parsed)
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        with call_context(account.number, parsed.call_id):
            reason = f"{type(exc).__name__}: {exc}"
            log.error("webhook not stored (%s); the PBX sends it again", reason)
        return _reply(503, "the event could not be stored; send it again later")
    # The store announced it on INBOX_CHANNEL: the worker may be in another process.
    _received(app[METRICS].events_received, account.number, parsed.event).inc()
    return _reply()


@functools.lru_cache(maxsize=1024)
def _received(counter: Counter, account: str, event: int) -> Counter:
    """The counter of ``account``'s events of type ``event``: looking a labelled child up
    (its label values checked and joined) on every webhook showed in profiles."""
    return counter.labels(account, str(event))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/sipuni/{token:[^/]+}", sipuni_webhook),
        web.post("/sipuni/{token:[^/]+}", sipuni_webhook),
        # Sipuni's own examples end the URL with a slash; accept both spellings.
        web.get("/sipuni/{token:[^/]+}/", sipuni_webhook),
        web.post("/sipuni/{token:[^/]+}/", sipuni_webhook),
    ]
