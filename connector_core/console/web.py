"""The console as an aiohttp sub-application at ``/console/``, and the guards in front of it.

Every request passes one middleware, in this order: a client that is not this machine is
refused (403) unless ``[console] allow_remote``; a request without a live session gets the
login page (a page: 303) or 401 (a fragment, a form post, anything else); a form post
without the session's CSRF token is refused (403). Every answer says ``no-store``, forbids
framing, allows only the console's own script and style, and carries ``Server-Timing``
(the handler's time, which ``bench/console.py`` reads).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from connector_core.appkeys import CLOCK, CONFIG, CONSOLE
from connector_core.console.auth import PasswordHash, parse_hash
from connector_core.console.i18n import LANGUAGES, translator
from connector_core.console.links import web_link
from connector_core.console.sessions import COOKIE, LoginThrottle, Session, Sessions, same_token
from connector_core.console.settings import ConsoleConfig, Language
from connector_core.health import may_see_details

log = logging.getLogger(__name__)
PREFIX = "/console"
LANGUAGE_COOKIE = "connector_console_lang"
PUBLIC_ROUTES = frozenset({"login", "login_post", "static"})  # open without a session
PAGE_ROUTES = frozenset({"index", "calls", "call", "integrations", "setup"})  # GET → login page
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ConsoleState:
    """What the console's handlers share: its settings, sessions and templates."""

    settings: ConsoleConfig
    password: PasswordHash
    sessions: Sessions
    throttle: LoginThrottle
    templates: jinja2.Environment
    secure_cookies: bool  # set when server.public_url is https

    def set_cookie(
        self, response: web.StreamResponse, name: str, value: str, max_age: int | None = None
    ) -> None:
        """Set one of the console's cookies: HttpOnly, SameSite=Strict, for /console only,
        Secure when the service is reached over https."""
        response.set_cookie(
            name,
            value,
            path=PREFIX,
            max_age=max_age,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies,
        )


def install(app: web.Application) -> None:
    """Serve the console at ``/console/`` when ``[console] enabled = true``."""
    settings = app[CONFIG].console
    if not settings.enabled or settings.password_hash is None:
        return
    from connector_core.console import pages  # the handlers need this module's guards

    console = web.Application(middlewares=[_guard])
    console.add_routes(pages.routes())
    console.cleanup_ctx.append(_state_ctx(app))
    app.router.add_get(PREFIX, _to_index)  # before the sub-application, which would take it
    app.add_subapp(PREFIX, console)


async def _to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(PREFIX + "/")


def _state_ctx(
    parent: web.Application,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(console: web.Application) -> AsyncIterator[None]:
        config = parent[CONFIG]
        settings = config.console
        assert settings.password_hash is not None  # install() serves no console without one
        console[CONSOLE] = ConsoleState(
            settings=settings,
            password=parse_hash(settings.password_hash.get_secret_value()),
            sessions=Sessions(parent[CLOCK], settings.session_hours * 3600.0),
            throttle=LoginThrottle(parent[CLOCK]),
            templates=templates(ZoneInfo(settings.timezone)),
            secure_cookies=config.server.public_url.startswith("https://"),
        )
        yield
        # A restart logs everyone out; say so once rather than leave it a surprise.
        if count := len(console[CONSOLE].sessions):
            log.info("console: %d session(s) ended by the shutdown", count)

    return ctx


# --- templates ----------------------------------------------------------------------------------


def templates(zone: ZoneInfo) -> jinja2.Environment:
    """The page templates (this package's ``*.html``), escaping every value."""
    folder = files("connector_core.console")

    def load(name: str) -> str | None:
        resource = folder.joinpath(name)
        return resource.read_text(encoding="utf-8") if resource.is_file() else None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda value: _when(value, zone)
    env.filters["duration"] = _duration
    env.filters["ms"] = _milliseconds
    env.filters["web_link"] = web_link
    # Raw events as they came, Cyrillic readable (the ``tojson`` filter would escape it).
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    return env


def _when(value: datetime | float | None, zone: ZoneInfo) -> str:
    if value is None:
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, zone)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _milliseconds(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


# --- the guard ----------------------------------------------------------------------------------


def language(request: web.Request) -> Language:
    """``?lang=`` if given, else the language cookie, else ``[console] language``."""
    for given in (request.query.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
        if given in LANGUAGES:
            return given
    return request.app[CONSOLE].settings.language


def session_of(request: web.Request) -> Session | None:
    """The request's live session, if its cookie names one (the guard has let in no request
    to a non-public route without one)."""
    return request.app[CONSOLE].sessions.get(request.cookies.get(COOKIE))


def _refusal(request: web.Request, status: int, key: str) -> web.Response:
    text = translator(language(request))(key)
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await _checked(request, handler)
    except web.HTTPException as exc:  # a redirect or an error page: a response all the same
        _finish(request, exc, started)
        raise
    _finish(request, response, started)
    return response


def _finish(request: web.Request, response: web.StreamResponse, started: float) -> None:
    """The headers every console answer carries, and the language a ``?lang=`` chose."""
    if response.prepared:  # a streamed answer has sent its headers already
        return
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    given = request.query.get("lang")
    if given in LANGUAGES:
        request.app[CONSOLE].set_cookie(response, LANGUAGE_COOKIE, given, max_age=365 * 86400)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[CONSOLE]
    if not state.settings.allow_remote and not may_see_details(request, None):
        return _refusal(request, 403, "error.remote")
    route = request.match_info.route.name
    if route in PUBLIC_ROUTES:
        return await handler(request)
    session = state.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        if request.method == "GET" and route in PAGE_ROUTES:
            login = request.app.router["login"].url_for().with_query(next=request.path_qs)
            raise web.HTTPSeeOther(str(login))
        return _refusal(request, 401, "error.signed_out")
    if request.method not in ("GET", "HEAD"):
        form = await request.post()
        token = form.get("csrf")
        if not same_token(token if isinstance(token, str) else None, session.csrf):
            log.warning("console: %s %s refused: no valid CSRF token", request.method, route)
            return _refusal(request, 403, "error.csrf")
    return await handler(request)
