"""The least HTTP/1.1 a load generator needs: a GET pre-encoded once, a response framed by its
Content-Length. Pure functions, no I/O: ``bench.loadgen`` owns the sockets.

Not a general client: no chunked bodies, no redirects, no pipelining. A response that cannot
be framed this way is reported as :class:`BadResponse`, and the generator counts a failure and
drops the connection (it cannot know where the next response would start).
"""

from __future__ import annotations

from typing import NamedTuple

# Past this, a response without the end of its headers is not one the generator can use.
MAX_HEAD = 64 * 1024


class BadResponse(Exception):
    """A response the generator cannot frame (its text says why)."""


class Response(NamedTuple):
    """One whole response at the start of a buffer."""

    consumed: int  # bytes of the buffer it took: its head and body
    status: int
    body: bytes
    keep_alive: bool  # False when the server said it closes the connection after it


def get_request(path: str, host: str) -> bytes:
    """The bytes of ``GET path`` on a keep-alive HTTP/1.1 connection to ``host``."""
    try:
        line = path.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"not ASCII, percent-encode it: {path!r}") from None
    if not path.startswith("/") or b" " in line or b"\r" in line or b"\n" in line:
        raise ValueError(f"not a request path (must start with '/', no spaces): {path!r}")
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (line, host.encode("ascii"))


def parse_response(buffer: bytes | bytearray) -> Response | None:
    """The response at the start of ``buffer``, or ``None`` while it is not all there yet.

    Raises :class:`BadResponse` when the bytes are not a response framed by Content-Length.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise BadResponse(f"no end of headers in the first {MAX_HEAD} bytes")
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    length = -1
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise BadResponse(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
        elif name == b"transfer-encoding":
            raise BadResponse(f"Transfer-Encoding {value.strip()[:40]!r} is not supported")
    if length < 0:
        raise BadResponse("no Content-Length")
    start = end + 4
    if len(buffer) < start + length:
        return None
    return Response(start + length, int(code), bytes(buffer[start : start + length]), keep_alive)
