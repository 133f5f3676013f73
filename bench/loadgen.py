"""A webhook load generator in its own process: raw HTTP/1.1 on an epoll loop, closed or open.

    python -m bench.loadgen --base http://127.0.0.1:8080 --paths paths.txt \
        --concurrency 32 --duration 5            # closed loop: 32 requests always in flight
    python -m bench.loadgen ... --rate 500 --duration 10   # open loop: 500 requests/s

``paths.txt`` holds one request path (``/sipuni/<token>?event=1&…``) per line; they are sent
in order and reused from the start if the run needs more. Every answer must be HTTP 200 with
the body ``{"success": true}``; anything else, a connection closed with a request on it, or
no answer within ``--timeout`` seconds counts as a failure.

It shares the machine with the server it measures, so it spends as little CPU per request as
it can: each path's request bytes are encoded once, non-blocking sockets on a bare epoll loop
(``bench.reactor``; asyncio cost twice the CPU per request), a response framed by its
Content-Length alone (``bench.rawhttp``). Keep-alive connections with one request in flight
on each (no pipelining), so every latency is one request's; a connection the server closes
is opened again.

Closed loop: ``--concurrency`` connections, each sending its next request when the answer to
the one before arrives; requests sent during ``--warmup`` are not counted. ``--once`` sends
each path exactly once and returns when all have ended.

Open loop: request *i* is due at ``start + i / rate`` and is sent then whatever happened to
the ones before; its latency counts from when it was due, so a stalled server is not hidden
by a generator that politely waited (no coordinated omission). The generator sleeps in epoll
until the next due time (epoll waits in whole milliseconds, so a request may go out up to
about 1 ms after it was due, counted in its latency) and sends every request due by then,
each on a free connection; when none is free it opens another (up to 256) and the request
waits for the first connection to be free, that wait counted in its latency too.
``sent_late`` counts the requests written more than 5 ms after they were due (the generator,
or its connections, fell behind); ``send_to_answer_p99_ms`` is the p99 from write to answer.

Prints one JSON line: count, failures, requests/s, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import sys
import time
from collections import deque
from urllib.parse import urlsplit

from .rawhttp import BadResponse, get_request, parse_response
from .reactor import Reactor

OK_BODY = b'{"success": true}'
# The open loop's most connections; a request finding none free waits for one.
MAX_CONNECTIONS = 256
# A request written later than this after it was due is counted in ``sent_late``.
LATE = 0.005
# Connections opened before an open loop's clock starts, so its first requests do not wait.
OPEN_LOOP_WARM_CONNECTIONS = 8
# After a failed connect, the pause before the next attempt: a refused port is not retried
# in a hot loop.
RECONNECT_PAUSE = 0.01
# How often requests are checked for the timeout (more often when it is short).
SWEEP_EVERY = 1.0
READ_SIZE = 65536
READABLE = select.EPOLLIN
WRITABLE = select.EPOLLOUT


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[rank] * 1000, 3)


def _summary(latencies: list[float], elapsed: float, failures: int, **extra: object) -> dict:
    return {
        "count": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": _pct(latencies, 50),
        "p90_ms": _pct(latencies, 90),
        "p99_ms": _pct(latencies, 99),
        "max_ms": round(max(latencies) * 1000, 3) if latencies else 0.0,
        **extra,
    }


class Target:
    """Where the requests go, and each path's request bytes, encoded once."""

    def __init__(self, base: str, paths: list[str]) -> None:
        url = urlsplit(base)
        if url.scheme != "http" or not url.hostname:
            raise SystemExit(f"--base must be http://<host>:<port>, not {base!r}")
        self.address = (url.hostname, url.port or 80)
        try:
            found = socket.getaddrinfo(*self.address, type=socket.SOCK_STREAM)
        except OSError as error:
            raise SystemExit(f"--base: cannot resolve {url.hostname!r}: {error}") from None
        self.family, self.sockaddr = found[0][0], found[0][4]
        try:
            self.requests = [get_request(path, url.netloc) for path in paths]
        except ValueError as error:
            raise SystemExit(f"--paths: {error}") from None


class Connection:
    """One keep-alive connection with at most one request on it; tells its pool the outcome.

    Each request ends exactly once, in :meth:`Pool.ended` (answered, failed, timed out, or
    lost with its connection). A connection that will take no more requests is closed and
    handed to :meth:`Pool.gone`, once; one that could not connect goes to
    :meth:`Pool.not_connected` instead.
    """

    def __init__(self, pool: Pool, sock: socket.socket, connecting: bool) -> None:
        self.pool = pool
        self.sock = sock
        self.fd = sock.fileno()
        self.connecting = connecting
        self.closed = False
        self.buffer = bytearray()
        self.busy = False
        self.due = 0.0
        self.sent = 0.0
        pool.reactor.register(self.fd, WRITABLE if connecting else READABLE, self)

    def send(self, request: bytes, due: float) -> None:
        """Write ``request``; its latency will count from ``due``."""
        self.busy = True
        self.due = due
        self.sent = now = time.perf_counter()
        if now - due > LATE:
            self.pool.late += 1
        try:
            # One small request on an otherwise idle connection: the socket buffer takes it
            # whole; anything else means the connection is broken.
            written = self.sock.send(request)
        except OSError:
            written = -1
        if written != len(request):
            self.close()

    def on_event(self, events: int) -> None:
        if self.connecting:
            self._on_connect()
            return
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or not self.busy:  # closed, or bytes nobody asked for
            self.close()
            return
        buffer = self.buffer
        buffer += data
        try:
            response = parse_response(buffer)
        except BadResponse:
            self.close()
            return
        if response is None:
            return
        del buffer[: response.consumed]
        self.busy = False
        self.pool.ended(self, response.status == 200 and response.body == OK_BODY)
        if buffer or not response.keep_alive:
            self.close()
        else:
            self.pool.free(self)

    def _on_connect(self) -> None:
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._shut()
            self.pool.not_connected(self)
            return
        self.connecting = False
        self.pool.reactor.modify(self.fd, READABLE)
        self.pool.connected(self)

    def close(self) -> None:
        """Close it; the request on it, if any, fails."""
        if self.closed:
            return
        self._shut()
        if self.busy:
            self.busy = False
            self.pool.ended(self, False)
        self.pool.gone(self)

    def retire(self) -> None:
        """Close an idle connection without telling the pool."""
        if not self.closed:
            self._shut()

    def _shut(self) -> None:
        self.closed = True
        self.pool.reactor.unregister(self.fd)
        self.sock.close()


class Pool:
    """Connections to the target, and the request outcomes the two loops share."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.reactor = Reactor()
        self.connections: set[Connection] = set()
        self.latencies: list[float] = []
        self.failures = 0
        self.late = 0
        self.stopping = False
        self.finished_at = 0.0

    def connect_now(self, count: int) -> list[Connection]:
        """``count`` connections, made before the clock starts; exits if the server is not
        there."""
        made = []
        for _ in range(count):
            try:
                sock = socket.create_connection(self.target.address, timeout=10)
            except OSError as error:
                host, port = self.target.address
                raise SystemExit(f"cannot connect to {host}:{port}: {error}") from None
            made.append(self._adopt(sock, connecting=False))
        return made

    def connect_later(self) -> None:
        """Start a connection; :meth:`connected` or :meth:`connect_failed` follows."""
        sock = socket.socket(self.target.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        error = sock.connect_ex(self.target.sockaddr)
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            # Told from a timer, not from here: the caller is still in the middle of its step.
            self.reactor.call_at(time.perf_counter(), self.connect_failed)
            return
        self._adopt(sock, connecting=True)

    def _adopt(self, sock: socket.socket, connecting: bool) -> Connection:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(self, sock, connecting)
        self.connections.add(connection)
        return connection

    def run(self) -> float:
        """Start, run until :meth:`finish`, close every connection; the time it finished."""
        self._sweep()
        try:
            self.start()
            self.reactor.run()
        finally:
            self.stopping = True
            for connection in list(self.connections):
                connection.close()
            self.reactor.close()
        return self.finished_at

    def finish(self, at: float) -> None:
        self.finished_at = at
        self.reactor.stop()

    def _sweep(self) -> None:
        """Fail the requests unanswered for longer than the timeout."""
        now = time.perf_counter()
        for connection in list(self.connections):
            if connection.busy and now - connection.sent > self.timeout:
                connection.close()
        self.reactor.call_at(now + min(SWEEP_EVERY, self.timeout / 4), self._sweep)

    def start(self) -> None:
        raise NotImplementedError

    def ended(self, connection: Connection, ok: bool) -> None:
        """The request on ``connection`` got its outcome (``ok``: the expected answer)."""
        raise NotImplementedError

    def free(self, connection: Connection) -> None:
        """``connection`` can take another request."""
        raise NotImplementedError

    def connected(self, connection: Connection) -> None:
        """A connection from :meth:`connect_later` is ready."""
        self.free(connection)

    def not_connected(self, connection: Connection) -> None:
        """``connection``, from :meth:`connect_later`, could not connect."""
        self.connections.discard(connection)
        self.connect_failed()

    def connect_failed(self) -> None:
        """A connection from :meth:`connect_later` could not be made."""
        raise NotImplementedError

    def gone(self, connection: Connection) -> None:
        """``connection`` is closed."""
        self.connections.discard(connection)


class ClosedLoop(Pool):
    def __init__(
        self,
        target: Target,
        timeout: float,
        concurrency: int,
        duration: float,
        warmup: float,
        once: bool,
    ) -> None:
        super().__init__(target, timeout)
        self.duration = duration
        self.warmup = warmup
        self.once = once
        self.index = 0
        self.active = concurrency
        self.measure_from = self.stop_at = 0.0
        self.opened = self.connect_now(concurrency)

    def start(self) -> None:
        started = time.perf_counter()
        self.measure_from = started + self.warmup
        self.stop_at = self.measure_from + self.duration
        for connection in self.opened:
            self.free(connection)

    def _over(self, now: float) -> bool:
        return now >= self.stop_at or (self.once and self.index >= len(self.target.requests))

    def _retire(self, now: float) -> None:
        """One connection's share of the run is done."""
        self.active -= 1
        if self.active == 0:
            self.finish(now)

    def free(self, connection: Connection) -> None:
        if self.stopping:
            return
        now = time.perf_counter()
        if self._over(now):
            self.connections.discard(connection)
            connection.retire()  # so that its closing opens no other
            self._retire(now)
            return
        requests = self.target.requests
        request = requests[self.index % len(requests)]
        self.index += 1
        connection.send(request, now)

    def ended(self, connection: Connection, ok: bool) -> None:
        if connection.sent >= self.measure_from:
            if ok:
                self.latencies.append(time.perf_counter() - connection.sent)
            else:
                self.failures += 1

    def gone(self, connection: Connection) -> None:
        super().gone(connection)
        if not self.stopping:
            self.connect_later()

    def connect_failed(self) -> None:
        # Each failed attempt uses up a request, counted as a failure, the way a request on
        # a refused connection fails; then a pause, and another attempt.
        now = time.perf_counter()
        if self.stopping:
            return
        if self._over(now):
            self._retire(now)
            return
        self.index += 1
        if now >= self.measure_from:
            self.failures += 1
        self.reactor.call_at(now + RECONNECT_PAUSE, self.connect_later)


class OpenLoop(Pool):
    def __init__(self, target: Target, timeout: float, rate: float, duration: float) -> None:
        super().__init__(target, timeout)
        self.rate = rate
        self.total = int(rate * duration)
        self.next_index = 0
        self.done = 0
        self.started = 0.0
        self.service_times: list[float] = []
        self.waiting: deque[tuple[int, float]] = deque()
        self.idle = self.connect_now(OPEN_LOOP_WARM_CONNECTIONS)

    def start(self) -> None:
        self.started = time.perf_counter()
        if self.total == 0:
            self.finish(self.started)
            return
        self._tick()

    def _tick(self) -> None:
        """Send every request due by now; wake again when the next one is due."""
        now = time.perf_counter()
        requests = self.target.requests
        started, rate, total, idle = self.started, self.rate, self.total, self.idle
        i = self.next_index
        while i < total:
            due = started + i / rate
            if due > now:
                break
            if idle:
                idle.pop().send(requests[i % len(requests)], due)
            else:
                self.waiting.append((i, due))
                self._grow()
            i += 1
        self.next_index = i
        if i < total:
            self.reactor.call_at(started + i / rate, self._tick)

    def _grow(self) -> None:
        """Open another connection for the waiting requests, unless at the cap."""
        if self.waiting and len(self.connections) < MAX_CONNECTIONS and not self.stopping:
            self.connect_later()

    def connect_failed(self) -> None:
        # The server refuses: the request that waited longest fails, or none would end.
        if self.waiting and not self.stopping:
            self.waiting.popleft()
            self._count(False, 0.0, 0.0, time.perf_counter())
            self.reactor.call_at(time.perf_counter() + RECONNECT_PAUSE, self._grow)

    def _count(self, ok: bool, due: float, sent: float, now: float) -> None:
        if ok:
            self.latencies.append(now - due)
            self.service_times.append(now - sent)
        else:
            self.failures += 1
        self.done += 1
        if self.done == self.total:
            self.finish(now)

    def ended(self, connection: Connection, ok: bool) -> None:
        self._count(ok, connection.due, connection.sent, time.perf_counter())

    def free(self, connection: Connection) -> None:
        if self.stopping:
            return
        if self.waiting:
            i, due = self.waiting.popleft()
            requests = self.target.requests
            connection.send(requests[i % len(requests)], due)
        else:
            self.idle.append(connection)

    def gone(self, connection: Connection) -> None:
        super().gone(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        self._grow()


def closed_loop(
    base: str,
    paths: list[str],
    concurrency: int,
    duration: float,
    warmup: float,
    once: bool = False,
    timeout: float = 60.0,
) -> dict:
    """``concurrency`` requests always in flight for ``duration`` s after ``warmup`` s."""
    run = ClosedLoop(Target(base, paths), timeout, concurrency, duration, warmup, once)
    elapsed = run.run() - run.measure_from
    return _summary(run.latencies, elapsed, run.failures, mode="closed", concurrency=concurrency)


def open_loop(
    base: str, paths: list[str], rate: float, duration: float, timeout: float = 60.0
) -> dict:
    """``rate`` requests a second for ``duration`` s, each timed from when it was due."""
    run = OpenLoop(Target(base, paths), timeout, rate, duration)
    elapsed = run.run() - run.started
    result = _summary(
        run.latencies, elapsed, run.failures, mode="open", rate=rate, sent_late=run.late
    )
    result["send_to_answer_p99_ms"] = _pct(run.service_times, 99)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--base", required=True, help="http://127.0.0.1:<port>")
    parser.add_argument("--paths", required=True, help="file with one request path per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--once", action="store_true", help="send each path once, then stop")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds before an unanswered request fails"
    )
    args = parser.parse_args(argv)
    with open(args.paths, encoding="utf-8") as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    if not paths:
        raise SystemExit(f"--paths: {args.paths} has no request paths")
    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    if args.rate > 0:
        result = open_loop(args.base, paths, args.rate, args.duration, args.timeout)
    else:
        result = closed_loop(
            args.base,
            paths,
            args.concurrency,
            args.duration,
            args.warmup,
            args.once,
            args.timeout,
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
