"""The raw HTTP layer of the real service process: secrets, log floods, stalled connections.

The service runs as ``python -m connector_core serve`` at DEBUG, so every logger writes
everything it has. Raw sockets then send what no HTTP client library would: malformed
request lines (over-long URLs, ``HTTP/9.9``, NUL bytes, bare LF), broken headers, half-sent
requests, random bytes, pipelined garbage, with the webhook token in the path spelt every way
a request can spell it (``/SiPuNi/``, doubled or %-encoded slashes, a %-encoded or upper-case
token, trailing junk). Afterwards the service still answers, the token is in no line of its
log (not even %-encoded), and aiohttp's per-request error tracebacks were bounded to a few per
minute with a summary line, while ``/metrics`` counted every one.

Rerun: ``.venv/bin/pytest tests/e2e/test_http_layer.py -s`` (``-s`` prints the counts);
``HTTP_FUZZ_INPUTS=10000`` tries more inputs, ``HTTP_FUZZ_SEED=n`` other ones.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.process import ServiceProcess, free_port, get_json
from tests.harness import ACCOUNT, TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INPUTS = int(os.environ.get("HTTP_FUZZ_INPUTS", "2400"))
SEED = int(os.environ.get("HTTP_FUZZ_SEED", "20261130"))
AGENT_TOKEN = "agent-page-token-0123456789"
ERROR_LOG_LIMIT = 5  # connector_core.httplog.ServerErrorLog: lines per kind per interval
ERROR_LOG_INTERVAL = 60.0
RING = "event=1&call_id=1717171700.1&src_num=79160000001&dst_num=101&timestamp=1717171700"


def start_service(tmp_path: Path, read_timeout: float) -> ServiceProcess:
    """The service as a process, with both read timeouts set to ``read_timeout``."""
    port = free_port()
    path = tmp_path / "connector.toml"
    path.write_text(f"""
[server]
port = {port}
keepalive_timeout_seconds = {read_timeout}
body_timeout_seconds = {read_timeout}
[storage]
path = "connector.db"
[logging]
level = "DEBUG"
[accounts.{ACCOUNT}]
token = "{TOKEN}"
[accounts.{ACCOUNT}.agents]
101 = "{AGENT_TOKEN}"
""")
    service = ServiceProcess(path, port=port)
    service.start()
    return service


# --- the inputs ------------------------------------------------------------------------------


def percent(text: str, rng: random.Random, share: float) -> str:
    """``text`` with about ``share`` of its characters %-encoded (hex in either case)."""
    out = []
    for c in text:
        if rng.random() < share:
            code = f"%{ord(c):02x}"
            out.append(code.upper() if rng.random() < 0.5 else code)
        else:
            out.append(c)
    return "".join(out)


def spelt_token(rng: random.Random) -> str:
    return rng.choice(
        [
            lambda: TOKEN,
            lambda: TOKEN,
            lambda: TOKEN.upper(),
            lambda: "".join(c.upper() if rng.random() < 0.5 else c for c in TOKEN),
            lambda: percent(TOKEN, rng, 0.3),
            lambda: percent(TOKEN, rng, 1.0),
            lambda: percent(TOKEN, rng, 0.5).replace("%", "%25"),  # encoded twice
            lambda: TOKEN + rng.choice(["x", "%00", "~", "..", "%2e", "\t", "\\"]),
        ]
    )()


def token_path(rng: random.Random) -> str:
    """``/sipuni/<token>`` as a request line may carry it, right or mangled."""
    sipuni = rng.choice(["sipuni", "sipuni", "SIPUNI", "SiPuNi", "%73ipuni", "sipun%69"])
    slash = rng.choice(["/", "/", "//", "%2F", "%2f", "///"])
    tail = rng.choice(
        [
            "",
            "/",
            "?" + RING,
            "/?" + RING,
            "/junk/../",
            ";x=1",
            "#frag",
            "?a=%zz&b=%",
            "/" + "x" * rng.randint(1, 300),
            "?token=" + AGENT_TOKEN,
        ]
    )
    prefix = rng.choice(["", "", "", "/x/..", "http://127.0.0.1", "//", "/%2e%2e"])
    return f"{prefix}/{sipuni}{slash}{spelt_token(rng)}{tail}"


METHODS = ["GET", "POST", "get", "PUT", "G\x00ET", "GE T", "", "\x16\x03\x01", "PRI", "X" * 40]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "HTTP/1.1\x00", "http/1.1", "HTTP/1", "", "HTTP/"]
BAD_HEADERS = [
    "Ho st: a",
    "Host a",
    "X-Nul: a\x00b",
    "X-Long: " + "b" * 9000,
    "Content-Length: x",
    "Content-Length: -1",
    "Content-Length: 5\r\nContent-Length: 6",
    "Content-Length: 3\r\nTransfer-Encoding: chunked",
    "Transfer-Encoding: chunked, gzip",
    " folded: continuation",
    "X-\xff: latin",
    ": empty-name",
    f"Referer: http://x/sipuni/{TOKEN}\x01",
    f"X-Token\x7f: {TOKEN}",
]


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def line(rng: random.Random, path: str) -> str:
    space = rng.choice([" ", " ", "  ", "\t"])
    return f"{rng.choice(METHODS)}{space}{path} {rng.choice(VERSIONS)}"


def malformed_request_line(rng: random.Random) -> tuple[bytes, str]:
    path = token_path(rng)
    if rng.random() < 0.3:
        path += "?" + "a" * rng.randint(8200, 20000)  # over the 8190-byte line limit
    if rng.random() < 0.2:
        at = rng.randrange(len(path) + 1)
        path = path[:at] + rng.choice(["\x00", "\n", "\r", "\x7f", "\xff", " "]) + path[at:]
    eol = rng.choice(["\r\n", "\r\n", "\n", "\r"])
    return encode(f"{line(rng, path)}{eol}Host: a{eol}{eol}"), "answer"


def bad_headers(rng: random.Random) -> tuple[bytes, str]:
    headers = ["Host: a", *rng.sample(BAD_HEADERS, rng.randint(1, 3))]
    if rng.random() < 0.1:
        headers += [f"X-{i}: {i}" for i in range(200)]  # over the 128-header limit
    body = rng.choice(["", RING, "zz\r\nxx\r\n", "0\r\n\r\n"])
    head = f"POST {token_path(rng)} HTTP/1.1\r\n" + "\r\n".join(headers)
    return encode(f"{head}\r\n\r\n{body}"), "answer"


def half_sent(rng: random.Random) -> tuple[bytes, str]:
    """A request cut short: the client then goes away, or stalls until the server gives up."""
    path = f"/sipuni/{TOKEN}" if rng.random() < 0.6 else token_path(rng)
    whole = (
        f"POST {path} HTTP/1.1\r\nHost: a\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(RING) + 50}"
        f"\r\n\r\n{RING}"
    )
    cut = rng.randrange(1, len(whole))
    return encode(whole[:cut]), rng.choice(["abort", "abort", "abort", "stall"])


def random_bytes(rng: random.Random) -> tuple[bytes, str]:
    noise = rng.randbytes(rng.randint(1, 600))
    at = rng.randrange(len(noise) + 1)
    return noise[:at] + encode(token_path(rng)) + noise[at:] + b"\r\n\r\n", "answer"


def mutated(rng: random.Random) -> tuple[bytes, str]:
    data = bytearray(encode(f"GET {token_path(rng)} HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"))
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        op = rng.randrange(3)
        if op == 0:
            data[at] = rng.randrange(256)
        elif op == 1:
            data.insert(at, rng.choice(b"\x00\n\r :/%\t"))
        else:
            del data[at]
    return bytes(data), "answer"


def pipelined(rng: random.Random) -> tuple[bytes, str]:
    good = f"GET /sipuni/{TOKEN}?{RING} HTTP/1.1\r\nHost: a\r\n\r\n"
    bad, _ = rng.choice([malformed_request_line, bad_headers, random_bytes])(rng)
    return encode(good) + bad, "answer"


def well_formed(rng: random.Random) -> tuple[bytes, str]:
    """Valid HTTP with the token spelt in any way: reaches the router, ingest, the access log."""
    method = rng.choice(["GET", "POST", "HEAD", "DELETE"])
    path = token_path(rng).replace("\t", "%09").replace("\\", "%5C")
    body = RING if method == "POST" else ""
    return (
        encode(
            f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ),
        "answer",
    )


KINDS: list[Callable[[random.Random], tuple[bytes, str]]] = [
    malformed_request_line,
    malformed_request_line,
    bad_headers,
    half_sent,
    random_bytes,
    mutated,
    pipelined,
    well_formed,
]


# --- sending ---------------------------------------------------------------------------------


async def exchange(port: int, data: bytes, mode: str) -> str:
    """Send ``data`` on a new connection; what became of it: answered, closed, aborted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if mode == "abort":
            return "aborted"
        # A guard against a hang, far above the 1 s timeouts the service is given.
        first = await asyncio.wait_for(reader.read(65536), 30)
        if mode == "answer":
            return "answered" if first else "closed"
        while first:  # stall: whatever the server says, it must then close
            first = await asyncio.wait_for(reader.read(65536), 30)
        return "closed by the server"
    except (ConnectionError, TimeoutError) as exc:
        return type(exc).__name__
    finally:
        writer.close()


async def fuzz(port: int, rng: random.Random, count: int) -> Counter[str]:
    inputs = [rng.choice(KINDS)(rng) for _ in range(count)]
    slots = asyncio.Semaphore(16)

    async def one(data: bytes, mode: str) -> str:
        async with slots:
            return f"{mode}: {await exchange(port, data, mode)}"

    return Counter(await asyncio.gather(*(one(data, mode) for data, mode in inputs)))


# --- reading the log -------------------------------------------------------------------------

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+) ")


def secret_lines(text: str, secrets: list[str]) -> list[str]:
    """Lines that hold a secret in any case, plain or %-encoded once or twice."""
    found = []
    for row in text.splitlines():
        decoded = urllib.parse.unquote(urllib.parse.unquote(row)).lower()
        if any(s.lower() in decoded for s in secrets):
            found.append(row[:300])
    return found


def test_the_token_is_in_no_log_line_and_bad_requests_cannot_flood_the_log(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    service = start_service(tmp_path, read_timeout=1)
    port = service.port
    try:
        outcomes = asyncio.run(fuzz(port, random.Random(SEED), INPUTS))
        tried = sum(outcomes.values())
        assert get_json(service.url + "/healthz")[0] == 200  # still serving
        with urllib.request.urlopen(service.url + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
    finally:
        code = service.stop()
    elapsed = time.monotonic() - started
    text = service.log_path.read_text(errors="replace")
    records = Counter(m.groups() for m in map(RECORD.match, text.splitlines()) if m)
    errors = sum(n for (level, _), n in records.items() if level in ("ERROR", "CRITICAL"))
    tracebacks = text.count("Traceback (most recent call last)")
    server_lines = sum(n for (_, name), n in records.items() if name == "aiohttp.server")
    bad = re.search(r'connector_http_errors_total\{kind="bad_request"\} (\d+)', metrics)
    print(f"\n{tried} inputs tried in {elapsed:.0f} s (seed {SEED}): {dict(outcomes)}")
    print(f"log: {sum(records.values())} records, {errors} at ERROR, {tracebacks} tracebacks,")
    print(f"{server_lines} from aiohttp.server; /metrics bad_request: {bad and bad.group(1)}")

    assert tried == INPUTS >= 2000
    assert code == 0
    assert secret_lines(text, [TOKEN, AGENT_TOKEN]) == []
    assert "/sipuni/***" in text  # the access log did log those paths, masked
    # Every malformed request is counted, but only a few per minute get a line each.
    assert bad is not None and int(bad.group(1)) >= 500
    windows = math.ceil(elapsed / ERROR_LOG_INTERVAL) + 1
    assert server_lines <= 2 * (ERROR_LOG_LIMIT + 1) * windows, server_lines
    assert errors <= ERROR_LOG_LIMIT * windows, errors
    assert tracebacks <= ERROR_LOG_LIMIT * windows, tracebacks
    assert "more bad HTTP requests in the last" in text
    # Half-sent requests that stalled were all closed by the server, none left hanging.
    stalled = {k: n for k, n in outcomes.items() if k.startswith("stall")}
    assert stalled and set(stalled) == {"stall: closed by the server"}, stalled


# --- read timeouts ---------------------------------------------------------------------------


def test_idle_and_half_sent_connections_are_closed_after_the_read_timeouts(
    tmp_path: Path,
) -> None:
    service = start_service(tmp_path, read_timeout=0.5)
    port = service.port
    head = (
        f"POST /sipuni/{TOKEN} HTTP/1.1\r\nHost: a\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
    )

    async def stall(data: bytes) -> bytes:
        """Send ``data``, then nothing: everything the server says before it closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        try:
            # 30 s guards against a hang; the server is set to give up after 0.5 s.
            return await asyncio.wait_for(reader.read(), 30)
        except TimeoutError:
            return b"(the server left the connection open)"
        finally:
            writer.close()

    async def scenario() -> list[bytes]:
        return list(
            await asyncio.gather(
                stall(b""),  # connected, never sent a byte
                stall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n"),  # headers never finished
                stall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),  # idle after
                stall(f"{head}Content-Length: 100\r\n\r\nevent=1&call".encode()),  # body cut
            )
        )

    try:
        idle, half_head, kept_alive, half_body = asyncio.run(scenario())
    finally:
        service.stop()
    assert idle == b"" and half_head == b""  # closed without an answer
    assert kept_alive.startswith(b"HTTP/1.1 200 OK")  # answered, then closed when idle
    assert half_body.startswith(b"HTTP/1.1 408 ")
    assert b'"error": "the body did not arrive within 0.5 s"' in half_body
