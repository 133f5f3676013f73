"""Ingest over real HTTP: what Sipuni's webhook gets back, and what the service keeps.

The service runs in-process (``tests.harness.app_for``) behind pytest-aiohttp's test server
on a loopback port; requests go over HTTP exactly as Sipuni sends them: GET query strings,
POST forms, and (defensively accepted) POST JSON. Each test reads the store back: accepted
events wait in the inbox, refused ones are kept in ``rejected`` with the reason the sender
was given, ignored ones (probes, unknown event types) leave no trace in either.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from connector_core import ingest, refusals
from connector_core.app import RedactingAccessLogger, check_authorization
from connector_core.appkeys import HOST, INTEGRATIONS, STORE, AccountRuntime
from connector_core.clock import FakeClock
from connector_core.events import parse_event
from connector_core.httplog import Redactor
from connector_core.logcontext import FORMAT, ContextFilter
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen, settle

RECORDER = """
[accounts.012345.integrations.rec]
plugin = "recorder"
"""
CALL_ID = "1717171700.52001"
TS = "1717171700"
RING = {
    "event": "1",
    "call_id": CALL_ID,
    "src_num": "79161234567",
    "src_type": "1",
    "dst_num": "012345101",
    "dst_type": "2",
    "short_dst_num": "101",
    "timestamp": TS,
    "treeName": "Входящая",
    "treeNumber": "000-913898",
}
URL = f"/sipuni/{TOKEN}"
NOT_FOUND = {"success": False, "error": "not found"}
SUCCESS = {"success": True}
# Fields that are numbers by meaning; numbers with leading zeros (dst_num…) stay strings.
NUMERIC = (
    "event",
    "timestamp",
    "src_type",
    "dst_type",
    "call_start_timestamp",
    "call_answer_timestamp",
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing a test does may write into the repo


@pytest.fixture
def start_service(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    """Start the service with ``integrations`` (and more account keys) for account 012345."""

    async def start(integrations: str = RECORDER, *, extra: str = ""):
        config, host = make_config(tmp_path, integrations, extra=extra)
        app = app_for(config, host)
        return app, await aiohttp_client(app)

    return start


@pytest.fixture
async def service(start_service):
    return await start_service()


async def inbox(app: web.Application) -> list:
    return await app[STORE].pending_events(100)


async def rejected(app: web.Application) -> list:
    return await app[STORE].rejected()


# --- accepted --------------------------------------------------------------------------------


async def test_get_query_is_accepted_and_stored(service) -> None:
    app, client = service
    response = await client.get(URL, params=RING)
    assert response.status == 200
    assert await response.json() == SUCCESS
    [item] = await inbox(app)
    assert item.account == ACCOUNT
    assert item.params == RING
    assert await rejected(app) == []


async def test_post_form_is_accepted_and_stored(service) -> None:
    app, client = service
    response = await client.post(URL, data=RING)
    assert response.status == 200
    assert await response.json() == SUCCESS
    [item] = await inbox(app)
    assert (item.account, item.params) == (ACCOUNT, RING)


async def test_post_json_with_strings_is_accepted_and_stored(service) -> None:
    app, client = service
    response = await client.post(URL, json=RING)
    assert response.status == 200
    assert await response.json() == SUCCESS
    [item] = await inbox(app)
    assert item.params == RING


async def test_post_json_with_numbers_is_accepted_and_parses_like_strings(service) -> None:
    app, client = service
    body = {k: int(v) if k in NUMERIC else v for k, v in RING.items()}
    response = await client.post(URL, json=body)
    assert response.status == 200
    assert await response.json() == SUCCESS
    [item] = await inbox(app)
    assert item.account == ACCOUNT
    # The stored event means exactly what the same request sent as strings means.
    assert parse_event(item.params) == parse_event(RING)


async def test_a_whole_call_sent_as_json_numbers_becomes_one_call(service) -> None:
    app, client = service
    call = scenarios.inbound_answered()
    for params in call.events:
        body = {k: int(v) if k in NUMERIC else v for k, v in params.items()}
        response = await client.post(URL + "/", json=body)
        assert await response.json() == SUCCESS
    await settle(app)
    journal = [k for k in await seen(app, "rec") if k.startswith(f"seen:{call.call_id}:")]
    assert journal == [
        f"seen:{call.call_id}:started:",
        f"seen:{call.call_id}:answered:101",
        f"seen:{call.call_id}:finished:answered",
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_trailing_slash_is_the_same_endpoint(service, method: str) -> None:
    app, client = service
    if method == "GET":
        response = await client.get(URL + "/", params=RING)
    else:
        response = await client.post(URL + "/", data=RING)
    assert response.status == 200
    assert await response.json() == SUCCESS
    assert [i.params for i in await inbox(app)] == [RING]


async def test_query_and_body_are_merged_and_the_body_wins(service) -> None:
    app, client = service
    form = {**RING, "event": "3"}
    response = await client.post(URL, params={"event": "1", "user_id": "012345"}, data=form)
    assert await response.json() == SUCCESS
    [item] = await inbox(app)
    assert item.params["event"] == "3"
    assert item.params["user_id"] == "012345"


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", ["no-such-token-at-all", "x", "тест-токен-0123456789", TOKEN[:-1], TOKEN + "0"]
)
async def test_unknown_token_is_not_found(service, token: str) -> None:
    app, client = service
    response = await client.get(f"/sipuni/{token}", params=RING)
    assert response.status == 404
    assert await response.json() == NOT_FOUND
    assert await inbox(app) == []


@pytest.mark.parametrize("position", [0, len(TOKEN) // 2, len(TOKEN) - 1])
async def test_a_token_one_character_off_gets_the_same_answer(service, position: int) -> None:
    app, client = service
    wrong = TOKEN[:position] + ("x" if TOKEN[position] != "x" else "y") + TOKEN[position + 1 :]
    unknown = await client.get("/sipuni/no-such-token-at-all", params=RING)
    close = await client.post(f"/sipuni/{wrong}/", data=RING)
    assert (close.status, await close.read()) == (unknown.status, await unknown.read())
    assert await close.json() == NOT_FOUND
    assert await inbox(app) == []


async def test_a_wrong_token_is_logged_without_it_and_counted(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client, caplog: pytest.LogCaptureFixture
) -> None:
    """A Sipuni URL typed with a wrong token leaves a trace for the operator (the log and
    /metrics), never the token itself, and a scanner's many tries cost one line a minute."""
    clock = FakeClock()
    config, host = make_config(tmp_path, RECORDER)
    client = await aiohttp_client(app_for(config, host, clock=clock))
    typo = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
    with caplog.at_level(logging.WARNING, logger="connector_core.ingest"):
        for _ in range(3):
            assert (await client.get(f"/sipuni/{typo}", params=RING)).status == 404
        clock.advance(61)
        assert (await client.get(f"/sipuni/{typo}", params=RING)).status == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "connector_core.ingest"]
    assert lines == [
        "webhook refused from 127.0.0.1: no account has the token its URL ends with"
        f" ({len(typo)} characters), so it got 404; if Sipuni sends it, the URL in"
        " Sipuni's settings must end with the account's token (accounts.<number>.token in"
        " the config)",
        lines[0] + " (2 more like it in the last minute not logged)",
    ]
    # As the operator reads it: the service's redaction leaves the line whole.
    assert Redactor(config.secrets())(lines[0]) == lines[0]
    assert not any(TOKEN[:8] in line for line in lines)
    metrics = await (await client.get("/metrics")).text()
    assert 'connector_webhooks_refused_total{reason="unknown_token"} 4.0' in metrics


def test_refusals_forget_addresses_past_their_bound() -> None:
    """Many addresses (a scanner) cannot grow the log's memory past its bound."""
    kept = refusals.Refusals(max_addresses=3)
    assert [kept.held_back("unknown_token", f"10.0.0.{i}", 0.0) for i in range(5)] == [0] * 5
    assert len(kept._last) <= 3
    assert kept.held_back("unknown_token", "10.0.0.4", 1.0) is None  # still remembered


async def test_allowed_ips_lets_a_listed_network_in(start_service) -> None:
    app, client = await start_service('allowed_ips = ["127.0.0.0/8"]\n' + RECORDER)
    response = await client.get(URL, params=RING)  # the test client comes from 127.0.0.1
    assert response.status == 200
    assert await response.json() == SUCCESS
    assert len(await inbox(app)) == 1


async def test_allowed_ips_refuses_other_addresses(start_service) -> None:
    app, client = await start_service('allowed_ips = ["10.0.0.0/8"]\n' + RECORDER)
    response = await client.get(URL, params=RING)
    assert response.status == 404
    # The same answer as a wrong token: nothing tells an outsider the token was right.
    assert await response.json() == {"success": False, "error": "not found"}
    assert await inbox(app) == []
    metrics = await (await client.get("/metrics")).text()
    assert 'connector_webhooks_refused_total{reason="address_not_allowed"} 1.0' in metrics


def test_allow_list_fails_closed_when_the_address_is_unknown() -> None:
    """A request whose peer address cannot be read (None, a unix socket) is refused."""
    account = AccountRuntime(
        number=ACCOUNT,
        token=TOKEN,
        region="RU",
        allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
        integrations=[],
    )
    assert ingest._allowed(account, "127.0.0.1") is True
    assert ingest._allowed(account, None) is False
    assert ingest._allowed(account, "") is False
    open_account = AccountRuntime(ACCOUNT, TOKEN, "RU", [], [])
    assert ingest._allowed(open_account, None) is True  # no allow-list: anyone


# --- refused ---------------------------------------------------------------------------------

WITH_CALL = {"event": "1", "call_id": CALL_ID, "timestamp": TS}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        pytest.param(
            {"event": "2", "timestamp": TS, "status": "ANSWER"},
            "field 'call_id' is missing",
            id="no-call-id",
        ),
        pytest.param(
            {**WITH_CALL, "event": "hangup"},
            "field 'event' must be a number, got 'hangup'",
            id="event-not-a-number",
        ),
        pytest.param(
            {"call_id": CALL_ID, "timestamp": TS},
            "field 'event' is missing",
            id="no-event",
        ),
        pytest.param(
            {**WITH_CALL, "timestamp": "yesterday"},
            "field 'timestamp' must be a whole number, got 'yesterday'",
            id="timestamp-not-a-number",
        ),
        pytest.param(
            {**WITH_CALL, "timestamp": "17171717"},
            "field 'timestamp' is not a plausible unix time in seconds: 17171717",
            id="timestamp-implausible",
        ),
        pytest.param(
            {"event": "1", "call_id": CALL_ID},
            "field 'timestamp' is missing",
            id="no-timestamp",
        ),
        pytest.param(
            {**WITH_CALL, "src_type": "3"},
            "field 'src_type' must be 1 (external) or 2 (internal), got 3",
            id="bad-src-type",
        ),
        pytest.param(
            {**WITH_CALL, "event": "2", "call_record_link": "ftp://sipuni.com/record?id=1"},
            "field 'call_record_link' must be an http(s) URL",
            id="record-link-not-http",
        ),
        pytest.param(
            {**WITH_CALL, "call_id": "1717171700 52001"},
            "field 'call_id' must be 1-128 characters of [0-9A-Za-z._:-]",
            id="call-id-with-space",
        ),
    ],
)
async def test_malformed_query_is_refused_with_its_reason_and_kept(
    service, params: dict[str, str], reason: str
) -> None:
    app, client = service
    response = await client.get(URL, params=params)
    assert response.status == 400
    assert await response.json() == {"success": False, "error": reason}
    assert await inbox(app) == []
    [row] = await rejected(app)
    assert (row.account, row.reason, row.params) == (ACCOUNT, reason, params)


async def test_malformed_form_is_refused_the_same_way(service) -> None:
    app, client = service
    response = await client.post(URL + "/", data={**WITH_CALL, "dst_type": "external"})
    assert response.status == 400
    reason = "field 'dst_type' must be a whole number, got 'external'"
    assert await response.json() == {"success": False, "error": reason}
    [row] = await rejected(app)
    assert row.reason == reason
    assert row.params["dst_type"] == "external"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        pytest.param(
            json.dumps([RING]),
            "application/json",
            400,
            "a JSON body must be an object of Sipuni fields",
            id="json-array",
        ),
        pytest.param(
            json.dumps({**WITH_CALL, "roistat": {"visit": "1"}}),
            "application/json",
            400,
            "field 'roistat' must be a string or a number",
            id="json-nested-object",
        ),
        pytest.param(
            json.dumps({**WITH_CALL, "last_called": ["101", "102"]}),
            "application/json; charset=utf-8",
            400,
            "field 'last_called' must be a string or a number",
            id="json-nested-list",
        ),
        pytest.param(
            '{"event": "1", "call_id": ',
            "application/json",
            400,
            "the body is not valid JSON",
            id="invalid-json",
        ),
        pytest.param(
            "event=1&call_id=1.2",
            "text/plain",
            415,
            "unsupported content type 'text/plain': send a query string,"
            " a form (application/x-www-form-urlencoded) or JSON",
            id="text-plain",
        ),
        pytest.param(
            "<event>1</event>",
            "application/xml",
            415,
            "unsupported content type 'application/xml': send a query string,"
            " a form (application/x-www-form-urlencoded) or JSON",
            id="xml",
        ),
    ],
)
async def test_malformed_body_is_refused_with_its_reason_and_kept(
    service, body: str, content_type: str, status: int, reason: str
) -> None:
    app, client = service
    response = await client.post(URL, data=body.encode(), headers={"Content-Type": content_type})
    assert response.status == status
    assert await response.json() == {"success": False, "error": reason}
    assert await inbox(app) == []
    [row] = await rejected(app)
    assert (row.account, row.reason) == (ACCOUNT, reason)


@pytest.mark.parametrize("encoding", ["form", "json"])
async def test_oversized_body_is_refused_with_the_limit(start_service, encoding: str) -> None:
    app, client = await start_service(extra="[server]\nmax_body_bytes = 1024")
    padded = {**RING, "roistat": "x" * 2000}
    if encoding == "form":
        response = await client.post(URL, data=padded)
    else:
        response = await client.post(URL, json=padded)
    assert response.status == 413
    reason = "the body is larger than 1024 bytes"
    assert await response.json() == {"success": False, "error": reason}
    assert await inbox(app) == []
    [row] = await rejected(app)
    assert (row.account, row.reason) == (ACCOUNT, reason)


async def test_a_body_under_a_small_limit_is_served(start_service) -> None:
    app, client = await start_service(extra="[server]\nmax_body_bytes = 1024")
    response = await client.post(URL, data={**RING, "roistat": "x" * 500})
    assert await response.json() == SUCCESS
    assert len(await inbox(app)) == 1


async def test_a_refused_webhook_does_not_stop_the_next_one(service) -> None:
    app, client = service
    for body in ("[", "[]", "{}"):
        await client.post(URL, data=body, headers={"Content-Type": "application/json"})
    response = await client.get(URL, params=RING)
    assert await response.json() == SUCCESS
    assert len(await inbox(app)) == 1


async def test_json_number_call_id_keeps_its_digits(service) -> None:
    app, client = service
    body = '{"event": 1, "call_id": 1717171700.52010, "timestamp": 1717171700}'
    response = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert await response.json() == SUCCESS
    [item] = await inbox(app)
    assert parse_event(item.params).call_id == "1717171700.52010"


# --- accepted and ignored ------------------------------------------------------------------


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda c: c.get(URL), id="get-no-params"),
        pytest.param(lambda c: c.get(URL + "/", params={"check": "1"}), id="get-unrelated"),
        pytest.param(lambda c: c.post(URL, data={}), id="post-empty-form"),
        pytest.param(lambda c: c.post(URL, json={}), id="post-empty-json"),
    ],
)
async def test_probe_without_call_fields_succeeds_and_stores_nothing(service, send) -> None:
    app, client = service
    response = await send(client)
    assert response.status == 200
    assert await response.json() == SUCCESS
    assert await inbox(app) == []
    assert await rejected(app) == []
    assert (await app[STORE].stats())["inbox_total"] == 0


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({**WITH_CALL, "event": "8", "newtree": "000-200"}, id="scheme-change-8"),
        pytest.param({"event": "5", "call_id": CALL_ID}, id="agent-ringing-5-no-timestamp"),
        pytest.param({"event": "12"}, id="event-12-no-call-id"),
    ],
)
async def test_unknown_event_types_succeed_and_are_not_stored(service, params) -> None:
    app, client = service
    response = await client.get(URL, params=params)
    assert response.status == 200
    assert await response.json() == SUCCESS
    assert await inbox(app) == []
    assert await rejected(app) == []


async def test_an_ignored_event_type_is_logged_once_per_account_and_type(
    service, caplog: pytest.LogCaptureFixture
) -> None:
    """A PBX that starts sending a new kind of event is seen in the log, without a line for
    every call."""
    _, client = service
    with caplog.at_level(logging.INFO, logger="connector_core.ingest"):
        for event in ("8", "8", "5", "8"):
            assert (await client.get(URL, params={**WITH_CALL, "event": event})).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "connector_core.ingest"]
    said = "ignored: the connector acts on 1 to 4 (ring, hang-up, answer, a transfer's hang-up)"
    assert lines == [
        f"event type 8 {said}; said once per account and type",
        f"event type 5 {said}; said once per account and type",
    ]


# --- health ----------------------------------------------------------------------------------

STATS = {
    "inbox_pending",
    "inbox_quarantined",
    "inbox_total",
    "calls_open",
    "calls_total",
    "dispatches_pending",
    "dispatches_dead",
    "rejected",
    "spool_failing_seconds",  # SQLite: how long the spool's webhooks have failed to move
}


async def test_healthz(service) -> None:
    _, client = service
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_reports_store_integrations_and_stats(service) -> None:
    app, client = service
    await client.get(URL, params=RING)
    await client.get(URL, params={"event": "x"})
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["ready"] is True
    assert body["store"] == "writable"
    assert body["degraded"] is False
    assert body["integrations"] == {f"{ACCOUNT}/rec": {"auth": "not_checked", "reason": ""}}
    assert set(body["stats"]) == STATS
    assert body["stats"]["inbox_pending"] == 1
    assert body["stats"]["rejected"] == 1

    await check_authorization(app[HOST], app[INTEGRATIONS][f"{ACCOUNT}/rec"])
    body = await (await client.get("/readyz")).json()
    assert body["integrations"][f"{ACCOUNT}/rec"] == {"auth": "ok", "reason": "recorder"}


async def test_readyz_is_degraded_but_ready_when_an_integration_cannot_connect(
    start_service,
) -> None:
    app, client = await start_service(
        RECORDER + '[accounts.012345.integrations.sab]\nplugin = "saboteur"\n'
    )
    for integration in app[INTEGRATIONS].values():
        await check_authorization(app[HOST], integration)
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["ready"] is True
    assert body["degraded"] is True
    assert body["integrations"][f"{ACCOUNT}/sab"] == {
        "auth": "cannot_connect",
        "reason": "the check raised RuntimeError",
    }
    assert body["integrations"][f"{ACCOUNT}/rec"]["auth"] == "ok"


async def test_readyz_is_503_when_the_store_cannot_be_written(service) -> None:
    app, client = service
    await app[STORE].close()
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["ready"] is False
    assert body["store"] == "not writable"
    assert body["stats"] == {}


# --- logs ------------------------------------------------------------------------------------


async def test_access_log_of_a_real_server_never_contains_the_token(
    tmp_path: Path, test_plugins_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, host = make_config(tmp_path, RECORDER)
    runner = web.AppRunner(app_for(config, host), access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/sipuni/{TOKEN}", params=RING) as r:
                    assert r.status == 200
                async with session.post(f"{base}/sipuni/{TOKEN}/", data=RING) as r:
                    assert r.status == 200
                async with session.get(f"{base}/sipuni/{TOKEN}x/") as r:
                    assert r.status == 404
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 3
    assert TOKEN not in caplog.text
    assert '"GET /sipuni/***" 200' in lines[0]
    assert '"POST /sipuni/***/" 200' in lines[1]
    assert '"GET /sipuni/***/" 404' in lines[2]


def test_redacting_access_logger_unit() -> None:
    logger = mock.Mock(spec=logging.Logger)
    access = RedactingAccessLogger(logger, "%a")
    request = make_mocked_request("GET", f"/sipuni/{TOKEN}/?event=1&call_id={CALL_ID}")
    access.log(request, web.Response(status=200), 0.0123)
    [call] = logger.info.call_args_list
    line = call.args[0] % call.args[1:]
    assert TOKEN not in line
    assert '"GET /sipuni/***/" 200 12.3ms' in line


@pytest.fixture
def context_log() -> Iterator[io.StringIO]:
    """Everything ``connector_core`` logs, formatted as the service formats it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("connector_core")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_refused_webhook_log_line_carries_account_and_call_id(
    service, context_log: io.StringIO
) -> None:
    _, client = service
    await client.get(URL, params={**WITH_CALL, "src_type": "7"})
    [line] = [x for x in context_log.getvalue().splitlines() if "webhook refused" in x]
    assert f"account={ACCOUNT} call_id={CALL_ID} " in line
    assert line.endswith(
        "webhook refused: field 'src_type' must be 1 (external) or 2 (internal), got 7"
    )


@pytest.mark.parametrize("allowed", ["", 'allowed_ips = ["10.0.0.0/8"]\n'])
async def test_every_refused_webhook_log_line_carries_the_account(
    start_service, context_log: io.StringIO, allowed: str
) -> None:
    _, client = await start_service(allowed + RECORDER)
    await client.post(URL, data=b"x", headers={"Content-Type": "text/plain"})
    lines = [x for x in context_log.getvalue().splitlines() if "refused" in x]
    assert lines
    assert all(f"account={ACCOUNT} " in line for line in lines), lines


LOG_LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        pytest.param(
            {**WITH_CALL, "call_id": "1.2\n2024-01-01 00:00:00,000 CRITICAL x account=9 forged"},
            "field 'call_id' contains control characters",
            id="forged-line-in-call-id",
        ),
        pytest.param(
            {**WITH_CALL, "call_id": "1.2\r\nforged", "src_type": "9"},
            "field 'call_id' contains control characters",
            id="crlf-in-call-id",
        ),
        pytest.param(
            {**WITH_CALL, "call_id": CALL_ID + "\n", "src_type": "9"},
            "field 'src_type' must be 1 (external) or 2 (internal), got 9",
            id="trailing-newline-in-call-id",
        ),
    ],
)
async def test_a_refused_call_id_cannot_break_or_forge_log_lines(
    service, context_log: io.StringIO, params: dict[str, str], reason: str
) -> None:
    _, client = service
    response = await client.get(URL, params=params)
    assert await response.json() == {"success": False, "error": reason}
    lines = context_log.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert LOG_LINE_START.match(lines[0]), lines
    assert "forged" not in lines[0]
    assert f"account={ACCOUNT} " in lines[0]
    assert lines[0].endswith(f"webhook refused: {reason}")


async def test_worker_log_lines_carry_account_and_call_id(
    start_service, context_log: io.StringIO
) -> None:
    app, client = await start_service(
        RECORDER + '[accounts.012345.integrations.sab]\nplugin = "saboteur"\n'
    )
    call = scenarios.inbound_answered()
    for params in call.events:
        await client.get(URL, params=params)
    await settle(app)
    lines = context_log.getvalue().splitlines()
    worker = [x for x in lines if " connector_core.worker " in x]
    assert worker, lines
    assert all(f"account={ACCOUNT} call_id={call.call_id} " in x for x in worker), worker
    assert any(x.endswith("call answered: finished") for x in worker), worker
    # The failing plugin's hook calls are logged by the dispatcher in the same context.
    failed = [x for x in lines if "012345/sab started failed" in x]
    assert failed, lines
    assert all(f"account={ACCOUNT} call_id={call.call_id} " in x for x in failed)
    # Outside any call the fields are there, with "-".
    logging.getLogger("connector_core.test").warning("no call here")
    assert context_log.getvalue().splitlines()[-1].split(" WARNING ")[1] == (
        "connector_core.test account=- call_id=- no call here"
    )
