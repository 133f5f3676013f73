"""What the HTTP layer writes to the log: never a secret, and never a flood.

Two things reach the log from requests the service did not choose to log: aiohttp's own
"Error handling request" records, whose tracebacks quote the raw request line (with the
webhook token in it) for every malformed request, and the access log. ``Redactor`` takes
secrets out of any text, and ``RedactingFormatter`` applies it to each whole formatted line,
so no logger (aiohttp.server, aiohttp.access, asyncio, ours) and no part of a record (message,
arguments, traceback, stack) can carry one past it. ``ServerErrorLog`` turns aiohttp's error
records into a bounded number of lines: the first few per interval, then one summary.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from aiohttp.http_exceptions import HttpProcessingError

MASK = "***"
# Shorter secrets would mask ordinary words and numbers all over the log; every token the
# config accepts is at least 16 characters.
MIN_SECRET_LENGTH = 8


def _spelled(text: str) -> str:
    """A pattern for ``text`` as a raw request may carry it: any case, any character
    %-encoded once or several times (``%2561`` is ``a`` encoded twice)."""
    return "".join(f"(?:{re.escape(c)}|%(?:25)*{ord(c):02x})" for c in text)


# Whatever follows /sipuni/ is a token, right or wrong, whole or cut short by aiohttp's
# "..." truncation: masked even when it is no configured secret. Slashes may be doubled or
# encoded, because a request line is logged exactly as it was sent.
_PATH_TOKEN = re.compile(rf"({_spelled('sipuni')}(?:/|%(?:25)*2f)+)[^/?#&;\s'\"\\]+", re.IGNORECASE)
# The agent page carries its token in the query string.
_QUERY_TOKEN = re.compile(r"(\btoken=)[^&#;\s'\"\\]+", re.IGNORECASE)


class Redactor:
    """Masks configured secrets and anything in a token's position in a piece of text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        kept = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._plain = self._encoded = None
        if kept:
            # Most lines have no "%": a literal pattern is several times cheaper per line.
            self._plain = re.compile("|".join(map(re.escape, kept)), re.IGNORECASE)
            self._encoded = re.compile("|".join(map(_spelled, kept)), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        # Every line of the log passes here: the patterns run only where they could match.
        encoded, lower = "%" in text, text.lower()
        secrets = self._encoded if encoded else self._plain
        if secrets is not None:
            text = secrets.sub(MASK, text)
        if encoded or "sipuni" in lower:
            text = _PATH_TOKEN.sub(_masked, text)
        if "token=" in lower:
            text = _QUERY_TOKEN.sub(_masked, text)
        return text


def _masked(match: re.Match[str]) -> str:
    return match.group(1) + MASK


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line has passed through a ``Redactor``.

    Redacting the finished line rather than the record's fields also covers what the
    formatter adds itself: the traceback's exception message, ``stack_info``, extra fields.
    """

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class ErrorKind(StrEnum):
    """Who an "Error handling request" record is about."""

    BAD_REQUEST = "bad_request"  # malformed HTTP, or a client that went away mid-request
    SERVER_ERROR = "server_error"  # an exception in the service's own handling


def classify(exc: BaseException) -> ErrorKind:
    """The kind of a failed request, from the exception aiohttp logged for it."""
    if isinstance(exc, HttpProcessingError | ConnectionError):
        return ErrorKind.BAD_REQUEST
    return ErrorKind.SERVER_ERROR


def describe(exc: BaseException) -> str:
    """A one-line reason for a bad request, without the request bytes aiohttp quotes.

    aiohttp's messages start with the reason in words and quote the offending bytes after it
    ("Bad status line:\n  b'GET ...'", "Bad status line 'GET ...'"), so only the leading words
    are kept; a message that is only the offending text (an invalid URL) leaves the class name.
    """
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    words = _LEADING_WORDS.match(text.strip())
    reason = words.group(0).strip() if words else ""
    return f"{type(exc).__name__}: {reason[:120]}" if " " in reason else type(exc).__name__


_LEADING_WORDS = re.compile(r"[A-Za-z0-9 ,.()-]*")


@dataclass
class LogBudget:
    """Which events of a stream get a log line each: the first ``limit`` per ``interval``.

    Pure bookkeeping over the times it is given; the caller logs one summary line for the
    ones that did not get their own (``take_suppressed``).
    """

    limit: int
    interval: float
    window_start: float | None = None
    admitted: int = 0
    suppressed: int = 0
    suppressed_since: float | None = None

    def admit(self, now: float) -> bool:
        """Whether the event at ``now`` gets its own line; counts it as suppressed if not."""
        if self.window_start is None or now - self.window_start >= self.interval:
            self.window_start, self.admitted = now, 0
        if self.admitted < self.limit:
            self.admitted += 1
            return True
        if self.suppressed == 0:
            self.suppressed_since = now
        self.suppressed += 1
        return False

    def due(self, now: float) -> bool:
        """Whether suppressed events are waiting and their window has ended."""
        return (
            self.suppressed > 0
            and self.window_start is not None
            and now - self.window_start >= self.interval
        )

    def take_suppressed(self) -> tuple[int, float | None]:
        """The number of suppressed events and when the first was; resets both."""
        taken = self.suppressed, self.suppressed_since
        self.suppressed, self.suppressed_since = 0, None
        return taken


_SUMMARY = {
    ErrorKind.BAD_REQUEST: (
        logging.WARNING,
        "%d more bad HTTP requests in the last %d s were not logged one by one"
        ' (all are counted in connector_http_errors_total{kind="bad_request"})',
    ),
    ErrorKind.SERVER_ERROR: (
        logging.ERROR,
        "%d more requests failed with an unhandled error (HTTP 500) in the last %d s;"
        ' not logged one by one (counted in connector_http_errors_total{kind="server_error"})',
    ),
}


class ServerErrorLog(logging.Filter):
    """A filter for the ``aiohttp.server`` logger that bounds its error records.

    aiohttp logs every malformed request at ERROR with a traceback. Here a bad request (the
    client's fault) becomes one WARNING line naming the peer and the reason, without the
    traceback; a server error keeps its traceback. Of each kind, the first ``limit`` per
    ``interval`` are logged, the rest only counted; one summary line says how many were left
    out, written when the interval ends (or on the next record, or by ``flush``).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        on_error: Callable[[ErrorKind], None] = lambda kind: None,
        limit: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.logger, self.on_error, self.clock = logger, on_error, clock
        self.budgets = {kind: LogBudget(limit, interval) for kind in ErrorKind}
        self._timers: dict[ErrorKind, asyncio.TimerHandle] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True  # our own summaries, and aiohttp's plain debug lines
        kind = classify(exc)
        self.on_error(kind)
        now = self.clock()
        budget = self.budgets[kind]
        if budget.due(now):
            self._summarise(kind)
        if not budget.admit(now):
            self._flush_later(kind, now)
            return False
        if kind is ErrorKind.BAD_REQUEST:
            record.msg, record.args = "%s: %s", (record.getMessage(), describe(exc))
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def flush(self) -> None:
        """Write the summary of every kind that has suppressed records (at shutdown)."""
        for kind in ErrorKind:
            self._summarise(kind)

    def _summarise(self, kind: ErrorKind) -> None:
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        count, since = self.budgets[kind].take_suppressed()
        if count and since is not None:
            level, text = _SUMMARY[kind]
            self.logger.log(level, text, count, max(1, round(self.clock() - since)))

    def _flush_later(self, kind: ErrorKind, now: float) -> None:
        if kind in self._timers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: the next record or flush() writes the summary
        budget = self.budgets[kind]
        start = budget.window_start if budget.window_start is not None else now
        self._timers[kind] = loop.call_later(
            max(0.0, start + budget.interval - now), self._summarise, kind
        )
