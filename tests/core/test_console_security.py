"""The console's guards, from outside: nothing without a session, no action without its CSRF
token, cookies a script cannot read nor another site send, loopback only unless opened, and
the password nowhere (pages, log, ``connector check``).

Routes are enumerated from the console's own route table, so a page or action added later is
covered without a change here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from connector_core import cli
from connector_core.appkeys import STORE, WORKER
from connector_core.clock import FakeClock
from connector_core.console import pages
from connector_core.console.sessions import FAILURE_WINDOW_SECONDS, MAX_FAILURES
from connector_core.console.web import PAGE_ROUTES, PUBLIC_ROUTES
from connector_core.simulator import scenarios
from tests.console_kit import (
    PASSWORD,
    Services,
    console_section,
    csrf_in,
    password_hash,
    sign_in,
)
from tests.harness import TOKEN

STUB = '[accounts.012345.integrations.amocrm_stub]\nusers = { "101" = 1 }\n'
SAMPLE = {
    "account": "012345",
    "call_id": "1717171700.1",
    "row_id": "1",
    "item_id": "1",
    "file": "console.css",
}

# {name} or {name:regex}, the regex possibly holding {n} counts.
PARAMETER = re.compile(r"\{(\w+)(?::(?:[^{}]|\{[^{}]*\})*)?\}")

Start = Callable[..., Awaitable[tuple[web.Application, TestClient]]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    services = Services(tmp_path)

    async def start(
        console: str | None = None, **kwargs: object
    ) -> tuple[web.Application, TestClient]:
        return await services.start(STUB, console=console, **kwargs)

    yield start
    await services.close()


def console_routes() -> list[tuple[str, str, str]]:
    """(route name, method, path with sample values) of every console route."""
    found = []
    for route in pages.routes():
        assert isinstance(route, web.RouteDef)
        path = PARAMETER.sub(lambda m: SAMPLE[m.group(1)], route.path)
        found.append((str(route.kwargs["name"]), route.method, "/console" + path))
    return found


async def dead_letter(app: web.Application, client: TestClient) -> int:
    """A call whose first hook call failed for good: its dispatch row id."""
    for params in scenarios.inbound_answered().events:
        await client.get(f"/sipuni/{TOKEN}", params=params)
    await app[WORKER].drain()
    store = app[STORE]
    [row, *_] = await store.pending_dispatches(10)
    await store.fail_dispatch(row.id, "the CRM refused it", None)
    return row.id


# --- nothing without a session ------------------------------------------------------------------


async def test_every_page_redirects_and_every_other_route_is_401_without_a_session(
    start: Start,
) -> None:
    _, client = await start()
    checked = 0
    for name, method, path in console_routes():
        if name in PUBLIC_ROUTES:
            continue
        response = await client.request(method, path, allow_redirects=False)
        if method == "GET" and name in PAGE_ROUTES:
            assert response.status == 303, (name, path)
            assert response.headers["Location"].startswith("/console/login?next=/console/")
        else:
            assert response.status == 401, (name, method, path)
            assert await response.text() == "Войдите в консоль."
        checked += 1
    assert checked == len(pages.routes()) - len(PUBLIC_ROUTES)
    # An address the console does not have is not a way around the login either.
    assert (await client.get("/console/no-such-page", allow_redirects=False)).status == 401


async def test_a_forged_or_stale_session_cookie_is_no_session(start: Start) -> None:
    _, client = await start()
    client.session.cookie_jar.update_cookies({"connector_console": "made-up-value"})
    response = await client.get("/console/calls", allow_redirects=False)
    assert response.status == 303


async def test_the_console_is_not_served_unless_enabled(start: Start) -> None:
    _, client = await start(console="")
    for path in ("/console", "/console/", "/console/login", "/console/calls"):
        assert (await client.get(path, allow_redirects=False)).status == 404, path


# --- CSRF -----------------------------------------------------------------------------------------


async def test_an_action_without_its_csrf_token_is_refused_and_changes_nothing(
    start: Start,
) -> None:
    app, client = await start()
    row_id = await dead_letter(app, client)
    csrf = await sign_in(client)
    retry = f"/console/dead-letters/{row_id}/retry"

    for form in ({}, {"csrf": ""}, {"csrf": csrf[:-1] + ("x" if csrf[-1] != "x" else "y")}):
        response = await client.post(retry, data=form, allow_redirects=False)
        assert response.status == 403, form
        assert "Форма устарела" in await response.text()
        assert (await app[STORE].get_dispatch(row_id)).status == "dead"  # type: ignore[union-attr]

    response = await client.post(retry, data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    assert (await app[STORE].get_dispatch(row_id)).status == "pending"  # type: ignore[union-attr]


async def test_another_sessions_token_does_not_pass(start: Start) -> None:
    app, client = await start()
    row_id = await dead_letter(app, client)
    mine = await sign_in(client)
    theirs_client = TestClient(client.server)
    await theirs_client.start_server()
    try:
        theirs = await sign_in(theirs_client)
        assert theirs != mine
        response = await client.post(
            f"/console/dead-letters/{row_id}/drop", data={"csrf": theirs}, allow_redirects=False
        )
        assert response.status == 403
        assert (await app[STORE].get_dispatch(row_id)).status == "dead"  # type: ignore[union-attr]
    finally:
        await theirs_client.close()


async def test_the_login_form_needs_its_own_token(start: Start) -> None:
    _, client = await start()
    response = await client.post("/console/login", data={"password": PASSWORD})
    assert response.status == 403
    assert "Форма устарела" in await response.text()
    assert "connector_console" not in {c.key for c in client.session.cookie_jar}


# --- cookies ------------------------------------------------------------------------------------


def set_cookie(response_headers: list[str], name: str) -> str:
    [line] = [h for h in response_headers if h.startswith(f"{name}=")]
    return line


async def test_the_session_cookie_is_httponly_samesite_strict_and_for_the_console_only(
    start: Start,
) -> None:
    _, client = await start()
    form = await client.get("/console/login")
    response = await client.post(
        "/console/login",
        data={"csrf": csrf_in(await form.text()), "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303
    cookie = set_cookie(response.headers.getall("Set-Cookie"), "connector_console")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes and "secure" not in attributes
    assert "SameSite=Strict" in cookie and "Path=/console" in cookie


async def test_the_session_cookie_is_secure_when_the_service_is_reached_over_https(
    start: Start,
) -> None:
    _, client = await start(console_section(public_url="https://connector.example.com"))
    form = await client.get("/console/login")
    login_cookie = set_cookie(form.headers.getall("Set-Cookie"), "connector_console_login")
    assert "Secure" in login_cookie and "HttpOnly" in login_cookie
    token = csrf_in(await form.text())
    # The test client speaks http, so it would keep a Secure cookie to itself: sent by hand.
    response = await client.post(
        "/console/login",
        data={"csrf": token, "password": PASSWORD},
        headers={"Cookie": f"connector_console_login={token}"},
        allow_redirects=False,
    )
    assert response.status == 303
    cookie = set_cookie(response.headers.getall("Set-Cookie"), "connector_console")
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


# --- loopback only ------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
async def test_a_client_behind_a_proxy_is_refused_unless_the_console_is_opened(
    start: Start, header: str
) -> None:
    _, client = await start()
    response = await client.get("/console/login", headers={header: "203.0.113.9"})
    assert response.status == 403
    assert "allow_remote = true" in await response.text()

    _, opened = await start(console_section(allow_remote=True))
    response = await opened.get("/console/login", headers={header: "203.0.113.9"})
    assert response.status == 200


# --- guessing and expiry ------------------------------------------------------------------------


async def test_too_many_wrong_passwords_lock_the_address_out_for_a_while(start: Start) -> None:
    clock = FakeClock()
    _, client = await start(clock=clock)

    async def attempt(password: str) -> int:
        form = await client.get("/console/login")
        response = await client.post(
            "/console/login",
            data={"csrf": csrf_in(await form.text()), "password": password},
            allow_redirects=False,
        )
        return response.status

    for _ in range(MAX_FAILURES):
        assert await attempt("not-the-password") == 401
    assert await attempt(PASSWORD) == 429  # even the right one, until the window has passed
    clock.advance(FAILURE_WINDOW_SECONDS + 1)
    assert await attempt(PASSWORD) == 303


async def test_a_session_ends_when_idle_too_long_and_at_logout(start: Start) -> None:
    clock = FakeClock()
    _, client = await start(console_section(session_hours=1), clock=clock)
    await sign_in(client)
    clock.advance(3000)
    assert (await client.get("/console/setup", allow_redirects=False)).status == 200
    clock.advance(3000)  # 50 min after the last visit: still on
    assert (await client.get("/console/setup", allow_redirects=False)).status == 200
    clock.advance(3601)
    assert (await client.get("/console/setup", allow_redirects=False)).status == 303

    csrf = await sign_in(client)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/console/"))
    response = await client.post("/console/logout", data={"csrf": csrf})
    assert response.url.path == "/console/login" and "Вы вышли." in await response.text()
    # The old cookie, sent again by someone who kept it, opens nothing.
    client.session.cookie_jar.update_cookies(
        {"connector_console": cookie["connector_console"].value}
    )
    assert (await client.get("/console/calls", allow_redirects=False)).status == 303


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/console/", "/console/..//evil", "/agent/"]
)
async def test_after_login_the_browser_goes_only_to_a_console_page(
    start: Start, target: str
) -> None:
    _, client = await start()
    form = await client.get("/console/login")
    response = await client.post(
        "/console/login",
        data={"csrf": csrf_in(await form.text()), "password": PASSWORD, "next": target},
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/console/calls"


async def test_every_page_forbids_framing_caching_and_foreign_scripts(start: Start) -> None:
    _, client = await start()
    await sign_in(client)
    for path in ("/console/login", "/console/calls", "/console/setup"):
        headers = (await client.get(path)).headers
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Frame-Options"] == "DENY"
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


# --- the password, nowhere ----------------------------------------------------------------------


async def test_the_password_and_its_hash_appear_in_no_page_and_no_log_line(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, client = await start()
    await dead_letter(app, client)
    form = await client.get("/console/login")
    await client.post(
        "/console/login", data={"csrf": csrf_in(await form.text()), "password": PASSWORD + "x"}
    )
    await sign_in(client)
    bodies = []
    for name, method, path in console_routes():
        if method == "GET" and name not in ("login", "static"):
            for lang in ("ru", "en"):
                response = await client.get(path, params={"lang": lang})
                bodies.append(await response.text())
    seen = "\n".join(bodies) + caplog.text
    assert "failed sign-in from 127.0.0.1" in caplog.text and "signed in from" in caplog.text
    assert PASSWORD not in seen
    assert password_hash() not in seen and password_hash().split("$")[2] not in seen
    assert "effective-config" in seen  # the setup page with the config was among them


def test_connector_check_prints_neither_the_password_nor_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "connector.toml"
    config.write_text(
        console_section()
        + f'[storage]\npath = "{tmp_path / "c.db"}"\n[accounts.012345]\ntoken = "{TOKEN}"\n'
        + STUB
    )
    assert cli.main(["check", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "configuration: ok" in printed
    assert PASSWORD not in printed and password_hash() not in printed
