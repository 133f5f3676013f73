"""The console's HTTP handlers: each page renders its view (``views``), each button runs its
action (``actions``) and sends the browser back where it was."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from aiohttp import ChainMapProxy, web
from yarl import URL

from connector_core import click_to_call
from connector_core.appkeys import (
    CLOCK,
    CONFIG,
    CONSOLE,
    DISPATCHER,
    HOST,
    INTEGRATIONS,
    STORE,
    WORKER,
)
from connector_core.callstate import Outcome
from connector_core.console import actions, views
from connector_core.console.actions import Done
from connector_core.console.auth import verify_password
from connector_core.console.filters import CallFilter, Period, parse_filter
from connector_core.console.i18n import LANGUAGES, translator
from connector_core.console.sessions import COOKIE, LOGIN_COOKIE, same_token
from connector_core.console.web import PREFIX, language, session_of
from connector_core.store.base import DeliveryStatus

log = logging.getLogger(__name__)
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
CALL_ID = r"[0-9A-Za-z._:-]{1,128}"  # as events.CALL_ID accepts it


def sources(app: web.Application | ChainMapProxy) -> views.Sources:
    """What the pages read, from the service's app (or a request's ``config_dict``)."""
    return views.Sources(
        store=app[STORE],
        config=app[CONFIG],
        clock=app[CLOCK],
        host=app[HOST],
        integrations=app[INTEGRATIONS],
        dispatcher=app[DISPATCHER],
    )


def url(request: web.Request, route: str, /, **parts: str | int) -> str:
    return str(request.app.router[route].url_for(**{k: str(v) for k, v in parts.items()}))


def render(
    request: web.Request,
    template: str,
    *,
    page: str = "",
    title: str = "",
    status: int = 200,
    flash: list[str] | None = None,
    **context: Any,
) -> web.Response:
    """A page (``page`` names it in the navigation) or a fragment, in the request's language.

    A page shows the messages the session's last actions left, once.
    """
    state = request.app[CONSOLE]
    lang = language(request)
    t = translator(lang)
    session = session_of(request)
    if flash is None:
        flash = []
        if session is not None and page:
            flash, session.flash[:] = list(session.flash), []
    body = state.templates.get_template(template).render(
        t=t,
        lang=lang,
        languages=[(code, str(request.rel_url.update_query(lang=code))) for code in LANGUAGES],
        url=lambda route, /, **parts: url(request, route, **parts),
        csrf=session.csrf if session else "",
        signed_in=session is not None,
        flash=flash,
        page=page,
        title=t(title) if title else "connector",
        **context,
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _back(request: web.Request, given: object, fallback: str) -> str:
    """Where a form sends the browser back to: a console page, never another site."""
    if isinstance(given, str) and given.startswith(PREFIX + "/") and "//" not in given:
        if "\\" not in given and URL(given).host is None:
            return given
    return fallback


# --- signing in and out -------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    if session_of(request) is not None:
        raise web.HTTPSeeOther(url(request, "calls"))
    return _login_page(request, _back(request, request.query.get("next"), url(request, "calls")))


def _login_page(
    request: web.Request, next_page: str, error: str = "", status: int = 200
) -> web.Response:
    state = request.app[CONSOLE]
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        title="login.title",
        status=status,
        error=error,
        login_csrf=token,
        next=next_page,
        flash=["flash.logged_out"] if "out" in request.query else [],
    )
    state.set_cookie(response, LOGIN_COOKIE, token)
    return response


async def login(request: web.Request) -> web.Response:
    state = request.app[CONSOLE]
    form = await request.post()
    next_page = _back(request, form.get("next"), url(request, "calls"))
    given, expected = form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not same_token(given if isinstance(given, str) else None, expected):
        return _login_page(request, next_page, "login.expired_form", 403)
    address = request.remote or "-"
    if state.throttle.blocked_for(address) > 0:
        log.warning("console: sign-in from %s refused: too many failed attempts", address)
        return _login_page(request, next_page, "login.throttled", 429)
    password = form.get("password")
    ok = isinstance(password, str) and await asyncio.to_thread(
        verify_password, password, state.password
    )
    if not ok:
        state.throttle.failed(address)
        log.warning("console: failed sign-in from %s", address)
        return _login_page(request, next_page, "login.wrong", 401)
    state.throttle.succeeded(address)
    cookie, _ = state.sessions.create()
    log.info("console: signed in from %s", address)
    response = web.HTTPSeeOther(next_page)
    state.set_cookie(response, COOKIE, cookie)
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    raise response


async def logout(request: web.Request) -> web.Response:
    state = request.app[CONSOLE]
    state.sessions.end(request.cookies.get(COOKIE))
    log.info("console: signed out from %s", request.remote or "-")
    response = web.HTTPSeeOther(str(request.app.router["login"].url_for().with_query(out="1")))
    response.del_cookie(COOKIE, path=PREFIX)
    raise response


# --- pages --------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(url(request, "calls"))


def _calls_filter(request: web.Request) -> CallFilter:
    read = sources(request.config_dict)
    return parse_filter(request.query, read.regions(), read.integrations)


async def calls_page(request: web.Request) -> web.Response:
    f = _calls_filter(request)
    view = await views.calls_view(sources(request.config_dict), f)
    rows_url = request.app.router["calls_rows"].url_for().with_query(f.query())
    next_url = None
    if view.next_page is not None:
        next_url = str(
            request.app.router["calls"].url_for().with_query(f.query(after=view.next_page))
        )
    return render(
        request,
        "calls.html",
        page="calls",
        title="calls.title",
        view=view,
        live_url=str(rows_url) if f.after is None else None,
        next_url=next_url,
        outcomes=[o.value for o in Outcome],
        statuses=[s.value for s in DeliveryStatus],
        periods=[p.value for p in Period],
    )


async def calls_rows(request: web.Request) -> web.Response:
    view = await views.calls_view(sources(request.config_dict), _calls_filter(request))
    return render(request, "calls_rows.html", view=view)


async def _call(request: web.Request) -> views.CallView:
    found = await views.call_view(
        sources(request.config_dict), request.match_info["account"], request.match_info["call_id"]
    )
    if found is None:
        raise web.HTTPNotFound(
            text=translator(language(request))("call.not_found"), content_type="text/plain"
        )
    return found


def _call_url(request: web.Request) -> str:
    return url(
        request,
        "call",
        account=request.match_info["account"],
        call_id=request.match_info["call_id"],
    )


async def call_page(request: web.Request) -> web.Response:
    view = await _call(request)
    return render(
        request, "call.html", page="calls", title="call.title", view=view, back=_call_url(request)
    )


async def call_hooks(request: web.Request) -> web.Response:
    view = await _call(request)
    return render(request, "call_hooks.html", view=view, back=_call_url(request))


async def integrations_page(request: web.Request) -> web.Response:
    view = await views.integrations_view(sources(request.config_dict))
    return render(
        request,
        "integrations.html",
        page="integrations",
        title="integrations.title",
        view=view,
        back=url(request, "integrations"),
    )


async def setup_page(request: web.Request) -> web.Response:
    view = await views.setup_view(sources(request.config_dict))
    return render(request, "setup.html", page="setup", title="setup.title", view=view)


async def static(request: web.Request) -> web.Response:
    file = request.match_info["file"]
    if file not in STATIC:
        raise web.HTTPNotFound()
    body = files("connector_core.console").joinpath(file).read_bytes()
    return web.Response(body=body, content_type=STATIC[file], charset="utf-8")


# --- actions ------------------------------------------------------------------------------------


async def _after(request: web.Request, done: Done, fallback: str) -> web.Response:
    session = session_of(request)
    if session is not None:
        session.flash.append(done.message)
    form = await request.post()
    raise web.HTTPSeeOther(_back(request, form.get("back"), fallback))


def _button(
    run: Callable[[ChainMapProxy, int], Awaitable[Done]], row: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A dead letter's or a quarantined webhook's button: ``run(app, row id)``, then back."""

    async def handler(request: web.Request) -> web.Response:
        done = await run(request.config_dict, int(request.match_info[row]))
        return await _after(request, done, url(request, "integrations"))

    return handler


dead_retry = _button(
    lambda app, row: actions.retry_dead_letter(app[STORE], app[DISPATCHER], row), "row_id"
)
dead_drop = _button(lambda app, row: actions.drop_dead_letter(app[STORE], row), "row_id")
quarantine_retry = _button(
    lambda app, item: actions.retry_quarantined(app[STORE], app[WORKER], item), "item_id"
)
quarantine_drop = _button(lambda app, item: actions.drop_quarantined(app[STORE], item), "item_id")


async def replay(request: web.Request) -> web.Response:
    app = request.config_dict
    done = await actions.replay_call(
        app[STORE],
        app[WORKER],
        app[DISPATCHER],
        request.match_info["account"],
        request.match_info["call_id"],
    )
    return await _after(request, done, _call_url(request))


async def call_back(request: web.Request) -> web.Response:
    form = await request.post()
    extension = form.get("extension")
    done = await actions.call_back(
        click_to_call.service(request.config_dict),
        request.match_info["account"],
        request.match_info["call_id"],
        extension if isinstance(extension, str) else "",
    )
    return await _after(request, done, _call_url(request))


def routes() -> list[web.RouteDef]:
    call = f"/calls/{{account:\\d{{6}}}}/{{call_id:{CALL_ID}}}"
    return [
        web.get("/", index, name="index"),
        web.get("/login", login_form, name="login"),
        web.post("/login", login, name="login_post"),
        web.post("/logout", logout, name="logout"),
        web.get("/calls", calls_page, name="calls"),
        web.get("/calls/rows", calls_rows, name="calls_rows"),
        web.get(call, call_page, name="call"),
        web.get(call + "/hooks", call_hooks, name="call_hooks"),
        web.post(call + "/replay", replay, name="replay"),
        web.post(call + "/call-back", call_back, name="call_back"),
        web.post(r"/dead-letters/{row_id:\d+}/retry", dead_retry, name="dead_retry"),
        web.post(r"/dead-letters/{row_id:\d+}/drop", dead_drop, name="dead_drop"),
        web.post(r"/quarantine/{item_id:\d+}/retry", quarantine_retry, name="quarantine_retry"),
        web.post(r"/quarantine/{item_id:\d+}/drop", quarantine_drop, name="quarantine_drop"),
        web.get("/integrations", integrations_page, name="integrations"),
        web.get("/setup", setup_page, name="setup"),
        web.get("/static/{file}", static, name="static"),
    ]
