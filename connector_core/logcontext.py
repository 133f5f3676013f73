"""Account and call id on every log line, without passing them through every function."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from connector_core.httplog import RedactingFormatter

_account: contextvars.ContextVar[str] = contextvars.ContextVar("account", default="-")
_call_id: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s account=%(account)s call_id=%(call_id)s %(message)s"


@contextmanager
def call_context(account: str, call_id: str | None) -> Iterator[None]:
    a, c = _account.set(account), _call_id.set(call_id or "-")
    try:
        yield
    finally:
        _call_id.reset(c)
        _account.reset(a)


class ContextFilter(logging.Filter):
    """Adds ``account`` and ``call_id`` attributes to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.account = getattr(record, "account", None) or _account.get()
        record.call_id = getattr(record, "call_id", None) or _call_id.get()
        return True


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """One stderr handler for every logger; ``secrets`` (and any webhook token) never
    appear in its lines, whichever logger wrote them."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(FORMAT, secrets))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
