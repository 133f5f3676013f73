"""The log of the HTTP layer: secrets masked in every line, aiohttp's error records bounded.

``Redactor`` and ``RedactingFormatter`` are checked on the spellings a raw request line can
give a token and on every part of a record (message, arguments, traceback, stack);
``ServerErrorLog`` with a fake clock, then on a real aiohttp server fed malformed requests.
The whole service process under a fuzz of raw requests is ``tests/e2e/test_http_layer.py``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, LineTooLong
from aiohttp.test_utils import make_mocked_request

from connector_core.app import RedactingAccessLogger
from connector_core.httplog import (
    ErrorKind,
    LogBudget,
    RedactingFormatter,
    Redactor,
    ServerErrorLog,
    describe,
)
from connector_core.logcontext import FORMAT, ContextFilter, setup_logging
from tests.harness import TOKEN, make_config

AGENT_TOKEN = "agent-page-token-0123456789"
HEX = "".join(f"%{ord(c):02X}" for c in TOKEN)


def hex_twice(text: str) -> str:
    return "".join(f"%25{ord(c):02x}" for c in text)


@pytest.mark.parametrize(
    "text",
    [
        f"GET /sipuni/{TOKEN} HTTP/9.9",
        f"b'GET /sipuni/{TOKEN}\\x00 HTTP/1.1'",
        f"/SIPUNI/{TOKEN}",
        f"/SiPuNi/{TOKEN.upper()}",
        f"//sipuni//{TOKEN}/junk/../",
        f"/sipuni%2F{TOKEN};x=1",
        f"/%73ipuni/{HEX}",
        f"/sipuni/{hex_twice(TOKEN)}",
        f"/x/{TOKEN}?a=1",  # not where a token goes: still a configured secret
        f"Referer: http://x/y?{TOKEN}",
        f"/agent/events?account=012345&extension=101&token={AGENT_TOKEN}",
        f"GET /x/{AGENT_TOKEN.upper()} HTTP/1.1",
    ],
)
def test_configured_secrets_are_masked_however_a_request_spells_them(text: str) -> None:
    redacted = Redactor([TOKEN, AGENT_TOKEN])(text)
    assert TOKEN.lower() not in redacted.lower()
    assert AGENT_TOKEN.lower() not in redacted.lower()
    assert HEX.lower() not in redacted.lower()
    assert "***" in redacted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /sipuni/some-wrong-token HTTP/1.1", "GET /sipuni/*** HTTP/1.1"),
        # aiohttp's LineTooLong quotes the first 100 bytes: a token cut short is still masked.
        ("reading: bytearray(b'/sipuni/abcdefgh...').", "reading: bytearray(b'/sipuni/***').'"),
        ("/SIPUNI//abc/def?x=1", "/SIPUNI//***/def?x=1"),
        ("%2Fsipuni%2fabc%20def", "%2Fsipuni%2f***"),
        ("/agent/?Token=abc&x=1", "/agent/?Token=***&x=1"),
    ],
)
def test_whatever_stands_where_a_token_goes_is_masked(text: str, expected: str) -> None:
    assert Redactor()(text) == expected.rstrip("'")


@pytest.mark.parametrize(
    "text",
    [
        "GET /healthz HTTP/1.1",
        "webhook refused: field 'call_id' must be 1-128 characters",
        "sipuni webhook stored",  # the word alone, with no slash after it
        "tokens=3 retry in 60 s",
    ],
)
def test_ordinary_lines_are_left_alone(text: str) -> None:
    assert Redactor([TOKEN])(text) == text


def test_short_secrets_are_not_masked_everywhere() -> None:
    """A secret of a few characters would mask ordinary words and numbers in every line."""
    assert Redactor(["1234"])("call 1234 answered") == "call 1234 answered"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Root logging into a string, through the service's formatter with the test's secrets."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter(FORMAT, [TOKEN]))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_formatter_masks_message_arguments_traceback_and_stack(
    stream: io.StringIO,
) -> None:
    log = logging.getLogger("aiohttp.server")
    try:
        raise LineTooLong(f"/sipuni/{TOKEN}?{'a' * 50}".encode(), 8190)
    except LineTooLong:
        log.exception("Error handling request from %s", f"/SIPUNI/{TOKEN}")
    log.warning(f"GET /sipuni/{TOKEN}", stack_info=True)
    logging.getLogger("asyncio").error("Task exception: %r", {"path": f"/x/{TOKEN}"})
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text and "Stack (most recent" in text
    assert TOKEN not in text
    assert text.count("***") >= 4


def test_setup_logging_masks_the_secrets_it_is_given(capsys: pytest.CaptureFixture) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("INFO", [AGENT_TOKEN])
        logging.getLogger("connector_core.test").warning("page %s, hook %s", AGENT_TOKEN, TOKEN)
        logging.getLogger("aiohttp.access").info('"GET /SIPUNI/%s" 404', TOKEN)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert AGENT_TOKEN not in err
    # Only a configured secret is known in free text; in a token's position any is masked.
    assert f"page ***, hook {TOKEN}" in err
    assert '"GET /SIPUNI/***" 404' in err


def test_config_secrets_lists_every_token_and_plugin_secret(tmp_path: Path) -> None:
    config, _ = make_config(
        tmp_path,
        '[accounts.012345.integrations.usedesk]\napi_token = "ud-secret-key-0000"\n'
        'base_url = "http://127.0.0.1:9"\n'
        f'[accounts.012345.agents]\n101 = "{AGENT_TOKEN}"\n',
    )
    assert config.secrets() == sorted([TOKEN, AGENT_TOKEN, "ud-secret-key-0000"])


@pytest.mark.parametrize(
    "path",
    [
        f"/sipuni/{TOKEN}",
        f"/SIPUNI/{TOKEN}/",
        f"/SiPuNi/{TOKEN}?event=1",
        f"//sipuni//{TOKEN}",
        f"/sipuni/{TOKEN}/junk/more",
        f"/sipuni/%74{TOKEN[1:]}",  # decoded by aiohttp before it reaches the access log
    ],
)
def test_the_access_log_masks_the_token_in_any_spelling(path: str, stream: io.StringIO) -> None:
    access = RedactingAccessLogger(logging.getLogger("aiohttp.access"), "%a")
    access.log(make_mocked_request("GET", path), web.Response(status=404), 0.001)
    line = stream.getvalue()
    assert "/***" in line
    # The access logger masks by position alone, before the formatter sees the line.
    assert TOKEN not in line.split(" aiohttp.access ")[1].replace("***", "")


def test_describe_keeps_the_reason_and_drops_the_request_bytes() -> None:
    assert describe(LineTooLong(f"/sipuni/{TOKEN}".encode(), 8190)) == (
        "LineTooLong: Got more than 8190 bytes when reading"
    )
    assert describe(BadStatusLine(f"GET /sipuni/{TOKEN} HTTP/9.9")) == (
        "BadStatusLine: Bad status line"
    )
    assert describe(ConnectionResetError("Connection lost")) == (
        "ConnectionResetError: Connection lost"
    )


# --- the flood limit -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_log_budget_admits_the_first_few_per_interval_and_counts_the_rest() -> None:
    budget = LogBudget(limit=2, interval=60.0)
    assert [budget.admit(t) for t in (0, 1, 2, 3, 59)] == [True, True, False, False, False]
    assert not budget.due(59.9) and budget.due(60)
    assert budget.take_suppressed() == (3, 2)
    assert budget.take_suppressed() == (0, None)
    assert [budget.admit(t) for t in (60, 61, 62)] == [True, True, False]


def bad_request(log: logging.Logger, token: str = TOKEN) -> None:
    try:
        raise BadStatusLine(f"GET /sipuni/{token} HTTP/9.9", "Bad status line:\n  Invalid")
    except BadStatusLine:
        log.exception("Error handling request from %s", "192.0.2.1")


@contextmanager
def error_log(
    name: str, limit: int, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
) -> Iterator[tuple[logging.Logger, ServerErrorLog, list[ErrorKind]]]:
    """A ``ServerErrorLog`` on logger ``name`` for the block, and the kinds it counted."""
    log, kinds = logging.getLogger(name), []
    errors = ServerErrorLog(log, on_error=kinds.append, limit=limit, interval=interval, clock=clock)
    log.addFilter(errors)
    try:
        yield log, errors, kinds
    finally:
        log.removeFilter(errors)


def test_bad_requests_get_a_few_short_lines_then_one_summary(stream: io.StringIO) -> None:
    clock = FakeClock()
    with error_log("test.httplog.bad", limit=3, clock=clock) as (log, _, kinds):
        for _ in range(10):
            bad_request(log)
            clock.now += 1
        lines = stream.getvalue().splitlines()
        assert len(lines) == 3
        assert all(" WARNING test.httplog.bad account=- " in line for line in lines)
        assert lines[0].endswith(
            "Error handling request from 192.0.2.1: BadStatusLine: Bad status line"
        )
        clock.now += 60  # the next window: the summary comes first, then the new line
        bad_request(log)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    assert "7 more bad HTTP requests in the last 67 s were not logged one by one" in lines[3]
    assert "Traceback" not in stream.getvalue() and TOKEN not in stream.getvalue()
    assert kinds == [ErrorKind.BAD_REQUEST] * 11


def test_server_errors_keep_their_traceback_and_have_their_own_budget(
    stream: io.StringIO,
) -> None:
    with error_log("test.httplog.server", limit=2, clock=FakeClock()) as (log, errors, kinds):
        for _ in range(5):
            bad_request(log)
        for _ in range(4):
            try:
                {}["missing"]
            except KeyError:
                log.exception("Error handling request from %s", "192.0.2.1")
        log.info("a line without an exception is never held back")
        errors.flush()  # as at shutdown
    text = stream.getvalue()
    assert text.count("Traceback (most recent call last)") == 2
    assert text.count(" ERROR test.httplog.server account=- call_id=- Error handling") == 2
    assert text.count(" WARNING test.httplog.server account=- call_id=- Error handling") == 2
    assert "3 more bad HTTP requests in the last" in text
    assert "2 more requests failed with an unhandled error (HTTP 500)" in text
    assert "never held back" in text
    assert kinds.count(ErrorKind.SERVER_ERROR) == 4 and len(kinds) == 9


async def test_the_summary_is_written_when_the_interval_ends(stream: io.StringIO) -> None:
    """With a running loop the summary does not wait for the next bad request."""
    with error_log("test.httplog.timer", limit=1, interval=0.05) as (log, _, _):
        for _ in range(4):
            bad_request(log)
        for _ in range(200):
            if "more bad HTTP requests" in stream.getvalue():
                break
            await asyncio.sleep(0.05)
    assert "3 more bad HTTP requests in the last" in stream.getvalue()


async def test_a_real_aiohttp_server_fed_malformed_requests_logs_a_bounded_masked_few(
    stream: io.StringIO,
) -> None:
    """aiohttp's own records, from its real parser: not the shapes this file built by hand."""
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    requests = [
        f"GET /sipuni/{TOKEN}?{'a' * 9000} HTTP/1.1\r\n\r\n",
        f"GET /SIPUNI/{TOKEN} HTTP/9.9\r\nHost: a\r\n\r\n",
        f"GET /sipuni/{TOKEN}\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
        f"GET /sipuni/{TOKEN} HTTP/1.1\nHost: a\n\n",
        f"GET /sipuni/{HEX} HTTP/1.1\r\nHo st: a\r\n\r\n",
    ] * 4
    with error_log("aiohttp.server", limit=5, clock=FakeClock()) as (_, errors, kinds):
        try:
            for request in requests:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request.encode())
                assert (await reader.read()).startswith(b"HTTP/1.0 400 Bad Request")
                writer.close()
        finally:
            await runner.cleanup()
            errors.flush()
    text = stream.getvalue()
    assert len(kinds) == len(requests) == 20
    assert text.count("Error handling request") == 5
    assert "15 more bad HTTP requests" in text
    assert "Traceback" not in text
    assert TOKEN not in text and HEX not in text
