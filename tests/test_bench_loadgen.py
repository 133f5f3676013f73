"""The load generator's HTTP framing, and what it counts against a scripted loopback server.

No timings are checked: only which requests were sent, answered and failed.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.loadgen import closed_loop, open_loop
from bench.rawhttp import BadResponse, get_request, parse_response

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
    b'{"success": true}'
)


def test_a_response_split_anywhere_is_whole_only_with_its_last_byte() -> None:
    for cut in range(len(OK)):
        assert parse_response(OK[:cut]) is None
    response = parse_response(OK)
    assert response is not None
    assert (response.status, response.body, response.keep_alive) == (
        200,
        b'{"success": true}',
        True,
    )
    assert response.consumed == len(OK)


def test_two_responses_in_one_read_are_framed_by_content_length() -> None:
    response = parse_response(OK + OK[:10])
    assert response is not None and response.consumed == len(OK)


def test_the_connection_header_and_version_say_whether_it_stays_open() -> None:
    close = OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type")
    old = OK.replace(b"HTTP/1.1", b"HTTP/1.0")
    old_kept = old.replace(b"Content-Type", b"connection: Keep-Alive\r\nContent-Type")
    assert [parse_response(r).keep_alive for r in (close, old, old_kept)] == [  # type: ignore[union-attr]
        False,
        False,
        True,
    ]


def test_a_status_other_than_200_is_framed_with_its_body() -> None:
    raw = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
    response = parse_response(raw)
    assert response is not None and (response.status, response.body) == (503, b"busy")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", "no Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"x" * 70_000, "no end of headers"),
    ],
)
def test_a_response_that_cannot_be_framed_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(BadResponse, match=reason):
        parse_response(raw)


def test_the_request_is_a_keep_alive_get_and_bad_paths_are_refused() -> None:
    assert get_request("/sipuni/t?event=1", "127.0.0.1:80") == (
        b"GET /sipuni/t?event=1 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
    )
    with pytest.raises(ValueError, match="percent-encode"):
        get_request("/sipuni/t?name=Иван", "h")
    with pytest.raises(ValueError, match="must start with '/'"):
        get_request("sipuni/t a", "h")


class Scripted(socketserver.StreamRequestHandler):
    """Answers by the path's first part: ok, bad (another body), error (500), drop (closes
    with no answer), last (answers, then closes), hang (never answers)."""

    def handle(self) -> None:
        server: ScriptedServer = self.server  # type: ignore[assignment]
        while True:
            line = self.rfile.readline()
            if not line:
                return
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            path = line.split(b" ")[1].decode()
            with server.lock:
                server.seen.append(path)
            kind = path.split("/")[1]
            if kind == "drop":
                return
            if kind == "hang":
                self.rfile.read()  # until the generator gives up and closes
                return
            status, body = {"bad": (200, b'{"success": false}'), "error": (500, b"no")}.get(
                kind, (200, b'{"success": true}')
            )
            close = b"Connection: close\r\n" if kind == "last" else b""
            self.wfile.write(
                b"HTTP/1.1 %d X\r\n%sContent-Length: %d\r\n\r\n%s"
                % (status, close, len(body), body)
            )
            if kind == "last":
                return


class ScriptedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The generator opens its connections at once: a short accept queue would drop a SYN,
    # and the kernel resends it only a second later.
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Scripted)
        self.seen: list[str] = []
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield srv
        srv.shutdown()


@pytest.mark.e2e
def test_once_sends_every_path_once_and_counts_each_kind_of_failure(
    server: ScriptedServer,
) -> None:
    kinds = ["ok"] * 12 + ["bad", "error", "drop", "last", "last", "hang"]
    paths = [f"/{kind}/{i}" for i, kind in enumerate(kinds)]
    result = closed_loop(server.base, paths, 3, 600, 0, once=True, timeout=0.2)
    # A connection dropped or closed by the server was opened again for the next paths.
    assert Counter(server.seen) == Counter(paths)
    assert result["count"] == 12 + 2  # the ok ones and the answers before "Connection: close"
    assert result["failures"] == 4  # bad body, 500, dropped with no answer, no answer in time
    assert {"seconds", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms"} <= set(result)
    assert (result["mode"], result["concurrency"]) == ("closed", 3)


@pytest.mark.e2e
def test_the_open_loop_ends_every_request_it_was_due_to_send(server: ScriptedServer) -> None:
    paths = [f"/{'drop' if i % 10 == 3 else 'ok'}/{i}" for i in range(40)]
    result = open_loop(server.base, paths, rate=2000, duration=0.02)
    assert Counter(server.seen) == Counter(paths)
    assert (result["count"], result["failures"]) == (36, 4)
    assert {"sent_late", "send_to_answer_p99_ms", "p99_ms"} <= set(result)
    assert (result["mode"], result["rate"]) == ("open", 2000)


def test_no_server_is_a_clear_exit() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit, match=f"cannot connect to 127.0.0.1:{port}"):
        closed_loop(f"http://127.0.0.1:{port}", ["/ok/1"], 1, 1, 0, once=True)
