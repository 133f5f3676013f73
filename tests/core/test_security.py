"""Security: the webhook token, body limits, strict validation, the IP allow-list, secrets.

What ``tests/core/test_ingest.py`` already shows for one account (an unknown token is a 404,
a 413 with a Content-Length, the access log redacted) is not repeated here; these tests add
several accounts, chunked bodies, spoofed forwarding headers, every place a secret could
leak during a whole Usedesk run, and that recording links are passed on, never fetched.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core import ingest
from connector_core.appkeys import ACCOUNTS, CONFIG, INTEGRATIONS, STORE, AccountRuntime
from connector_core.cli import main
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.e2e.test_kill_loop import SandboxProcess
from tests.e2e.usedesk_world import USERS, World, call_comments
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle

OTHER_ACCOUNT, OTHER_TOKEN = "054321", "other-account-token-abcdefghijklmnop"
USEDESK_SECRET = "ud-api-key-Zq9xWv7Tt3Rr1"
WRONG_SECRET = "ud-wrong-key-Kk4Jj8Hh2Gg6"
RECORDER = '[accounts.012345.integrations.rec]\nplugin = "recorder"\n'
TWO_ACCOUNTS = RECORDER + f'[accounts.{OTHER_ACCOUNT}]\ntoken = "{OTHER_TOKEN}"\n'
RING = scenarios.inbound_answered().events[0]


@pytest.fixture
def start(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    async def start(integrations: str = TWO_ACCOUNTS, *, extra: str = ""):
        config, host = make_config(tmp_path, integrations, extra=extra)
        app = app_for(config, host)
        return app, await aiohttp_client(app)

    return start


# --- the token -------------------------------------------------------------------------------


def test_find_account_compares_every_account_in_constant_time(monkeypatch) -> None:
    """No early exit: the time taken does not say which account, or how much, matched."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ingest.hmac, "compare_digest", counting)
    accounts = [
        AccountRuntime(number, token, "RU", [], [])
        for number, token in [("000001", "a" * 20), ("000002", "b" * 20), ("000003", "c" * 24)]
    ]
    for given, found in [("a" * 20, "000001"), ("c" * 24, "000003"), ("a" * 19, None)]:
        compared.clear()
        account = ingest.find_account(accounts, given)
        assert (account.number if account else None) == found
        assert len(compared) == len(accounts)  # the first account matched: still all three
        assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in compared)
    assert "a" * 20 not in repr(accounts[0])  # the token is left out of the repr


async def test_wrong_tokens_of_any_kind_get_the_same_404(start) -> None:
    app, client = await start()
    same_length = "x" * len(TOKEN)
    wrong = [
        same_length,
        TOKEN[:-1],  # a prefix of a real token
        TOKEN[:4],
        OTHER_TOKEN[: len(TOKEN)],  # a prefix of the other account's token, our token's length
        TOKEN + OTHER_TOKEN,
        OTHER_TOKEN.upper(),
    ]
    answers = set()
    for token in wrong:
        for method in ("GET", "POST"):
            kwargs = {"params": RING} if method == "GET" else {"data": RING}
            response = await client.request(method, f"/sipuni/{token}", **kwargs)
            answers.add((response.status, response.content_type, await response.read()))
    assert answers == {(404, "application/json", b'{"success": false, "error": "not found"}')}
    assert await app[STORE].pending_events(10) == []
    for token, account in [(TOKEN, ACCOUNT), (OTHER_TOKEN, OTHER_ACCOUNT)]:
        response = await client.get(f"/sipuni/{token}", params=RING)
        assert await response.json() == {"success": True}
        assert (await app[STORE].pending_events(10))[-1].account == account


# --- body size -------------------------------------------------------------------------------


async def test_a_chunked_body_over_the_limit_is_refused_with_413(start) -> None:
    """No Content-Length to check up front: the limit holds while the body streams in."""
    app, client = await start(extra="[server]\nmax_body_bytes = 2048")
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"event=1&call_id=1717171700.1&timestamp=1717171700&roistat="
        for _ in range(64):
            sent += 1024
            yield b"x" * 1024

    response = await client.post(
        f"/sipuni/{TOKEN}",
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 413
    assert await response.json() == {
        "success": False,
        "error": "the body is larger than 2048 bytes",
    }
    assert await app[STORE].pending_events(10) == []
    [row] = await app[STORE].rejected()
    assert row.reason == "the body is larger than 2048 bytes"
    # Still serving, and a small body is fine.
    response = await client.post(f"/sipuni/{TOKEN}", data=RING)
    assert await response.json() == {"success": True}


async def test_a_body_that_stalls_is_refused_with_408_and_kept(start) -> None:
    """A sender that stops mid-body does not hold the handler: 408 once the timeout is up."""
    app, client = await start(extra="[server]\nbody_timeout_seconds = 0.2")
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        f"POST /sipuni/{TOKEN} HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\nevent=1&call_id=".encode()
    )
    answer = await asyncio.wait_for(reader.read(4096), 30)  # a guard, not a timing
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b'{"success": false, "error": "the body did not arrive within 0.2 s"}')
    [row] = await app[STORE].rejected()
    assert row.reason == "the body did not arrive within 0.2 s"
    assert await app[STORE].pending_events(10) == []


# --- strict validation -----------------------------------------------------------------------

LONG = "7" * 5000


@pytest.mark.parametrize(
    ("change", "reason_starts"),
    [
        ({"call_id": "1717171700.1\x00"}, "field 'call_id' contains control characters"),
        ({"call_id": "../../etc/passwd"}, "field 'call_id' must be 1-128 characters"),
        ({"call_id": "1' OR '1'='1"}, "field 'call_id' must be 1-128 characters"),
        ({"src_num": LONG}, "field 'src_num' is longer than 512 characters"),
        ({"timestamp": "1e309"}, "field 'timestamp' must be a whole number"),
        ({"timestamp": LONG}, "field 'timestamp' is longer than 512 characters"),
        ({"timestamp": "99999999999"}, "field 'timestamp' is not a plausible unix time"),
        ({"src_type": "3"}, "field 'src_type' must be 1 (external) or 2 (internal)"),
        ({"status": "<script>"}, "field 'status' is not a call status"),
        ({"call_record_link": "javascript:alert(1)"}, "field 'call_record_link' must be"),
        ({"call_record_link": "file:///etc/passwd"}, "field 'call_record_link' must be"),
        ({"event": "1; DROP TABLE inbox"}, "field 'event' must be a number"),
        ({f"x{i}": "1" for i in range(51)}, "too many unknown fields (51 > 50)"),
    ],
)
async def test_hostile_fields_are_refused_kept_and_not_echoed_whole(
    start, change: dict[str, str], reason_starts: str
) -> None:
    app, client = await start()
    response = await client.post(f"/sipuni/{TOKEN}", data={**RING, **change})
    assert response.status == 400
    body = await response.json()
    assert body["success"] is False and body["error"].startswith(reason_starts), body
    assert len(await response.read()) < 300  # a 5000-character value is not sent back
    assert LONG not in body["error"]
    assert await app[STORE].pending_events(10) == []
    [row] = await app[STORE].rejected()
    assert row.reason == body["error"]


# --- the IP allow-list -----------------------------------------------------------------------

SPOOFED = {
    "X-Forwarded-For": "10.1.2.3",
    "X-Real-IP": "10.1.2.3",
    "Forwarded": "for=10.1.2.3;proto=https",
    "Client-IP": "10.1.2.3",
}


async def test_forwarding_headers_cannot_get_past_the_allow_list(start) -> None:
    """Only the peer address counts: a sender outside the list cannot claim to be inside."""
    app, client = await start('allowed_ips = ["10.0.0.0/8"]\n' + RECORDER)
    for name, value in SPOOFED.items():
        response = await client.get(f"/sipuni/{TOKEN}", params=RING, headers={name: value})
        assert response.status == 404, name
    response = await client.post(f"/sipuni/{TOKEN}", data=RING, headers=SPOOFED)
    assert response.status == 404
    # The same answer as a wrong token: nothing tells an outsider the token was right.
    assert await response.json() == {"success": False, "error": "not found"}
    assert await app[STORE].pending_events(10) == []


async def test_the_allow_list_is_per_account_and_takes_single_addresses(start) -> None:
    app, client = await start(
        'allowed_ips = ["127.0.0.1", "::1"]\n'
        + TWO_ACCOUNTS
        + 'allowed_ips = ["192.0.2.0/24"]\n'  # the other account: a network we are not in
    )
    response = await client.get(f"/sipuni/{TOKEN}", params=RING)
    assert await response.json() == {"success": True}
    response = await client.get(f"/sipuni/{OTHER_TOKEN}", params=RING)
    assert response.status == 404
    assert [e.account for e in await app[STORE].pending_events(10)] == [ACCOUNT]


# --- secrets are never shown -----------------------------------------------------------------


@asynccontextmanager
async def usedesk_world(tmp_path: Path) -> AsyncIterator[World]:
    """The service (in-process) with a working and a refused Usedesk integration."""
    sandbox = UsedeskSandbox(api_token=USEDESK_SECRET)
    async with sandbox.serve() as base_url:
        config, host = make_config(
            tmp_path,
            f"""
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{USEDESK_SECRET}"
base_url = "{base_url}"
rate_limit_per_minute = 1000
burst_per_second = 100
users = {USERS}
on_duty_user = 4
[accounts.{ACCOUNT}.integrations.refused]
plugin = "usedesk"
api_token = "{WRONG_SECRET}"
base_url = "{base_url}"
""",
            extra='[logging]\nlevel = "DEBUG"',
        )
        app = app_for(config, host)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield World(app, client, sandbox)
        finally:
            await client.close()


def leaks(records: list[logging.LogRecord], secrets: list[str]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    found = []
    for record in records:
        # The fake CRM is not the service; the test server's access log is not the service's
        # (``RedactingAccessLogger`` is, see test_ingest.py).
        if record.name.startswith(("plugins.usedesk.sandbox", "aiohttp.access")):
            continue
        text = formatter.format(record)
        found += [f"{record.name}: {text[:200]}" for s in secrets if s in text]
    return found


async def test_no_secret_in_debug_logs_during_a_whole_usedesk_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with usedesk_world(tmp_path) as w:
        w.sandbox.set_faults(mode="500", count=1)  # a retry, with the error text logged
        await w.call(scenarios.inbound_answered(client="79160000101", call_id="1717171700.11"))
        w.sandbox.set_faults(mode="drop", count=1, paths=["/create/comment"], apply=True)
        await w.call(scenarios.inbound_missed(client="79160000102", call_id="1717171800.12"))
        await w.client.get(f"/sipuni/{TOKEN}", params={"event": "1", "call_id": "x" * 200})
        await w.client.get(f"/sipuni/{TOKEN}x", params=RING)
        await w.client.get("/readyz")
        await w.client.get("/metrics")
        await settle(w.app)
        retried = [r for r in caplog.records if "retry in" in r.getMessage()]
        assert len(retried) >= 2  # the failures were logged with Usedesk's answer
        refused = w.app[INTEGRATIONS][f"{ACCOUNT}/refused"]
        assert refused.auth.status.value == "auth_failed"  # the 401 was seen and logged
        client_lines = [r for r in caplog.records if r.name == "plugins.usedesk.client"]
        assert any(r.levelno == logging.DEBUG for r in client_lines)  # DEBUG really was on
    assert leaks(caplog.records, [USEDESK_SECRET, WRONG_SECRET, TOKEN]) == []


async def test_no_secret_in_reprs_of_config_integration_runtime_and_client(
    tmp_path: Path,
) -> None:
    async with usedesk_world(tmp_path) as w:
        config = w.app[CONFIG]
        integration = w.app[INTEGRATIONS][f"{ACCOUNT}/usedesk"]
        runtime = integration.runtime
        [account] = w.app[ACCOUNTS]
        texts = [
            repr(config),
            str(config),
            config.model_dump_json(),
            repr(config.accounts[ACCOUNT]),
            repr(integration),
            repr(integration.settings),
            str(integration.settings),
            integration.settings.model_dump_json(),
            repr(runtime),
            repr(runtime.client),
            repr(runtime.client.limiter),
            repr(account),
            repr(w.app[INTEGRATIONS]),
        ]
    for text in texts:
        for secret in (USEDESK_SECRET, WRONG_SECRET, TOKEN):
            assert secret not in text, text[:300]


def write_check_config(tmp_path: Path, base_url: str, token: str = TOKEN) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(f"""
[storage]
path = "connector.db"
[accounts.{ACCOUNT}]
token = "{token}"
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{USEDESK_SECRET}"
base_url = "{base_url}"
[accounts.{ACCOUNT}.integrations.refused]
plugin = "usedesk"
api_token = "{WRONG_SECRET}"
base_url = "{base_url}"
[accounts.{ACCOUNT}.integrations.unreachable]
plugin = "usedesk"
api_token = "{WRONG_SECRET}x"
base_url = "http://127.0.0.1:9"
request_timeout_seconds = 2
""")
    return path


@pytest.mark.e2e
def test_connector_check_shows_no_secret(tmp_path: Path, capsys) -> None:
    sandbox = SandboxProcess(tmp_path / "sandbox.log", token=USEDESK_SECRET)
    sandbox.start()
    try:
        code = main(["check", "--config", str(write_check_config(tmp_path, sandbox.url))])
    finally:
        sandbox.stop()
    out, err = capsys.readouterr()
    assert code == 1  # two of the three integrations fail their check
    assert f"{ACCOUNT}/usedesk [usedesk]: ok" in out
    assert f"{ACCOUNT}/refused [usedesk]: auth_failed" in out
    assert f"{ACCOUNT}/unreachable [usedesk]: cannot_connect" in out
    for secret in (USEDESK_SECRET, WRONG_SECRET, TOKEN):
        assert secret not in out + err


def test_connector_check_with_a_malformed_secret_does_not_print_it(tmp_path: Path, capsys) -> None:
    bad_token = "short secret!"  # not a valid token: the error must say why, not show it
    path = write_check_config(tmp_path, "http://127.0.0.1:9", token=bad_token)
    path.write_text(path.read_text().replace(f'"{USEDESK_SECRET}"', "12345678901"))
    assert main(["check", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert f"accounts.{ACCOUNT}.token" in err and "api_token" in err
    assert bad_token not in out + err and "12345678901" not in out + err


# --- recording links -------------------------------------------------------------------------


async def test_recording_links_are_passed_on_and_never_fetched(
    tmp_path: Path, aiohttp_server
) -> None:
    fetched: list[str] = []

    async def recording(request: web.Request) -> web.Response:
        fetched.append(str(request.rel_url))
        return web.Response(body=b"ID3 fake mp3", content_type="audio/mpeg")

    recordings = web.Application()
    recordings.router.add_route("*", "/{tail:.*}", recording)
    server = await aiohttp_server(recordings)
    call = scenarios.inbound_answered(client="79160000103", call_id="1717171900.13")
    link = str(server.make_url(f"/api/crm/record?id={call.call_id}&hash=0a1b&user={ACCOUNT}"))
    events: list[dict[str, Any]] = [
        {**e, "call_record_link": link} if "call_record_link" in e else e for e in call.events
    ]
    assert any("call_record_link" in e for e in events)
    async with usedesk_world(tmp_path) as w:
        await w.call(replace(call, events=events))
        await settle(w.app)
        [client] = w.clients_with("79160000103")
        [ticket] = w.tickets_of(client["id"])
        [comment] = call_comments(ticket)
    assert fetched == []  # nobody asked the recording server for anything
    assert link.replace("&", "&amp;") in comment["message"]  # the link went on, HTML-escaped
