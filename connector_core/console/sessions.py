"""Console sessions, their CSRF tokens, and the brake on password guessing.

A session lives in memory only: a restart logs everyone out, which is what an operator
expects of a service restart. The cookie carries a random id; the store keeps its SHA-256,
so a memory dump of the table cannot be replayed as a cookie. Each session has its own CSRF
token, which every form posts back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from connector_core.clock import Clock
from connector_core.recent import Recent

COOKIE = "connector_console"
LOGIN_COOKIE = "connector_console_login"  # the login form's CSRF token, before a session
MAX_SESSIONS = 1000  # the oldest go first: a flood of logins cannot fill the memory
# Failed logins from one address allowed per window, then it must wait for the window.
MAX_FAILURES, FAILURE_WINDOW_SECONDS = 5, 300.0
MAX_ADDRESSES = 10_000  # addresses whose failures are remembered at most


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a posted token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Session:
    csrf: str
    created_at: float
    last_seen: float
    flash: list[str] = field(default_factory=list)  # i18n keys shown once on the next page


class Sessions:
    """Logged-in sessions, by the digest of the cookie that names them."""

    def __init__(self, clock: Clock, lifetime_seconds: float) -> None:
        self.clock = clock
        self.lifetime = lifetime_seconds
        self._by_digest: Recent[str, Session] = Recent(MAX_SESSIONS)

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self) -> tuple[str, Session]:
        """A new session: the cookie value to set, and the session."""
        cookie = secrets.token_urlsafe(32)
        now = self.clock.now()
        session = Session(csrf=secrets.token_urlsafe(32), created_at=now, last_seen=now)
        self._by_digest.put(_digest(cookie), session)
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session the cookie names; an idle one past its lifetime is ended."""
        if not cookie:
            return None
        key = _digest(cookie)
        session = self._by_digest.get(key)
        if session is None:
            return None
        now = self.clock.now()
        if now - session.last_seen > self.lifetime:
            self._by_digest.pop(key)
            return None
        session.last_seen = now
        return session

    def end(self, cookie: str | None) -> None:
        if cookie:
            self._by_digest.pop(_digest(cookie))


class LoginThrottle:
    """Counts failed logins per client address; too many in a window refuse the next ones."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, address: str) -> list[float]:
        since = self.clock.now() - FAILURE_WINDOW_SECONDS
        recent = [t for t in self._failures.get(address, []) if t > since]
        if recent:
            self._failures[address] = recent
        else:
            self._failures.pop(address, None)
        return recent

    def blocked_for(self, address: str) -> float:
        """Seconds ``address`` must wait before it may try again (0: it may try now)."""
        recent = self._recent(address)
        if len(recent) < MAX_FAILURES:
            return 0.0
        return max(0.0, recent[0] + FAILURE_WINDOW_SECONDS - self.clock.now())

    def failed(self, address: str) -> None:
        self._failures.setdefault(address, []).append(self.clock.now())
        if len(self._failures) > MAX_ADDRESSES:  # many addresses guessing: forget the oldest
            del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
