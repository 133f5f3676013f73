"""Account, call id and integration on every log line, without passing them everywhere.

Lines are plain text by default, or one JSON object each (``[logging] json = true``) for log
collectors. Either way every line has passed through the secret masking of ``httplog``.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from connector_core.httplog import RedactingFormatter, Redactor

_account: contextvars.ContextVar[str] = contextvars.ContextVar("account", default="-")
_call_id: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")
_integration: contextvars.ContextVar[str] = contextvars.ContextVar("integration", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s account=%(account)s call_id=%(call_id)s %(message)s"


def call_context(
    account: str, call_id: str | None, integration: str | None = None
) -> AbstractContextManager[None]:
    """Lines logged inside name this call (and the integration whose hook runs, if any)."""
    return _CallContext(account, call_id or "-", integration or "-")


class _CallContext:
    # A class, not a @contextmanager generator: entered for every event and every hook call,
    # where the generator's machinery cost several times the three variables' setting.
    __slots__ = ("_tokens", "_values")
    _values: tuple[str, str, str]
    _tokens: tuple[contextvars.Token[str], contextvars.Token[str], contextvars.Token[str]]

    def __init__(self, account: str, call_id: str, integration: str) -> None:
        self._values = (account, call_id, integration)

    def __enter__(self) -> None:
        account, call_id, integration = self._values
        self._tokens = (_account.set(account), _call_id.set(call_id), _integration.set(integration))

    def __exit__(self, *exc: object) -> None:
        a, c, i = self._tokens
        _integration.reset(i)
        _call_id.reset(c)
        _account.reset(a)


class ContextFilter(logging.Filter):
    """Adds ``account``, ``call_id`` and ``integration`` attributes to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.account = getattr(record, "account", None) or _account.get()
        record.call_id = getattr(record, "call_id", None) or _call_id.get()
        record.integration = getattr(record, "integration", None) or _integration.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, account, call_id, integration, message
    (and ``exception`` / ``stack`` when there is one), each value masked before encoding, so
    an escape in the JSON text cannot hide a secret from the masking."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "account": str(getattr(record, "account", "-")),
            "call_id": str(getattr(record, "call_id", "-")),
            "integration": str(getattr(record, "integration", "-")),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        masked = {key: self.redact(value) for key, value in line.items()}
        return json.dumps(masked, ensure_ascii=False)


def setup_logging(
    level: str = "INFO", secrets: Iterable[str] = (), *, json_lines: bool = False
) -> None:
    """One stderr handler for every logger; ``secrets`` (and any webhook token) never
    appear in its lines, whichever logger wrote them. ``json_lines``: one JSON object a line."""
    handler = logging.StreamHandler()
    secrets = list(secrets)
    formatter = JsonFormatter(secrets) if json_lines else RedactingFormatter(FORMAT, secrets)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
