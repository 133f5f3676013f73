"""Errors a plugin raises so the core knows whether to retry, give up, or stop and wait.

The core never guesses from an exception's text: a CRM client classifies the failure once,
where it knows the API, and the dispatcher acts on the class.
"""

from __future__ import annotations


class CrmError(Exception):
    """Base class of every classified CRM failure."""

    def __init__(self, message: str, *, integration: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.integration = integration


class TransientError(CrmError):
    """Worth retrying later: timeouts, 5xx, 429, dropped connections.

    ``retry_after`` (seconds) is set when the CRM said how long to wait (``Retry-After``).
    ``unanswered`` is set when no answer came at all (a timeout, a dropped connection): a
    write may then still be carried out later, while one answered with an error is over.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        integration: str | None = None,
        unanswered: bool = False,
    ) -> None:
        super().__init__(message, integration=integration)
        self.retry_after = retry_after
        self.unanswered = unanswered


class RetryLater(CrmError):
    """Not a failure: the hook waits for something to settle in the CRM (a create whose answer
    never came may still land) and asks to run again in ``seconds``. The dispatcher schedules
    the retry without counting it against the CRM's circuit breaker."""

    def __init__(self, message: str, *, seconds: float, integration: str | None = None) -> None:
        super().__init__(message, integration=integration)
        self.seconds = max(0.0, seconds)


class InvalidRequestError(CrmError):
    """The CRM refused the request itself; repeating it cannot help (dead letter at once)."""


class AuthError(CrmError):
    """The credentials were refused; work stays queued until an operator fixes them."""


class ConfigError(Exception):
    """The operator's configuration is invalid. ``errors`` holds every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def describe_error(exc: BaseException) -> str:
    """``Type: message``, short enough for a log line and a store column."""
    return f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"[:500]
