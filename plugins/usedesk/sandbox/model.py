"""The sandbox's in-memory records and the Usedesk enumerations they are checked against.

Everything is plain dataclasses so a test can read ``sandbox.state.tickets[5001].status_id``
directly instead of going through HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Status ids as documented (usedesk-api.md §2.1); names are the Russian UI labels because that
# is what an operator sees when comparing the sandbox with a real account.
STATUS_NAMES: dict[int, str] = {
    1: "Открыт",
    2: "Выполнен",
    3: "Закрыт",
    4: "Удален",
    5: "На удержании",
    6: "В ожидании",
    7: "Спам",
    8: "Новый",
    9: "Рассылка",
    10: "Объединен",
}
STATUS_OPEN = 1
STATUS_NEW = 8

TICKET_TYPES = ("question", "task", "problem", "incident")
PRIORITIES = ("low", "medium", "urgent", "extreme")
PHONE_TYPES = ("home", "mobile", "stationary", "fax", "other")
USER_TYPES = ("admin", "employee", "support")
COMMENT_TYPES = ("public", "private")
COMMENT_AUTHORS = ("user", "client", "trigger")

PAGE_SIZE = 100
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def utc_now() -> datetime:
    return datetime.now(UTC)


def fmt_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass
class Group:
    id: int
    name: str


@dataclass
class Agent:
    id: int
    name: str
    email: str
    user_type: str = "employee"
    group_ids: list[int] = field(default_factory=list)
    phone: str | None = None
    position: str | None = None


@dataclass
class Channel:
    id: int
    name: str
    type: str


@dataclass
class Phone:
    id: int
    phone: str
    type: str
    created_at: datetime


@dataclass
class Email:
    id: int
    email: str
    created_at: datetime


@dataclass
class Client:
    id: int
    name: str | None
    created_at: datetime
    note: str | None = None
    position: str | None = None
    phones: list[Phone] = field(default_factory=list)
    emails: list[Email] = field(default_factory=list)


@dataclass
class Comment:
    id: int
    ticket_id: int
    message: str
    type: str
    from_: str
    published_at: datetime
    user_id: int | None = None
    client_id: int | None = None
    trigger_id: int | None = None
    is_first: bool = False


@dataclass
class Change:
    id: int
    ticket_id: int
    target: str
    old_value: Any
    value: Any
    changed_at: datetime
    user_id: int | None = None


@dataclass
class Ticket:
    id: int
    subject: str
    client_id: int
    status_id: int
    type: str
    priority: str
    published_at: datetime
    last_updated_at: datetime
    assignee_id: int | None = None
    group_id: int | None = None
    channel_id: int | None = None
    additional_id: str | None = None
    tags: list[str] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


@dataclass
class SandboxState:
    """One Usedesk company as seen through one API channel token."""

    api_token: str
    company_id: int
    clock: Callable[[], datetime] = utc_now
    api_channel_id: int | None = None
    # Behaviour switches where the real API's behaviour is unknown (docs/usedesk-sandbox.md).
    phone_search: str = "raw"
    like_wildcards: bool = True
    string_ids: bool = False
    groups: dict[int, Group] = field(default_factory=dict)
    agents: dict[int, Agent] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    clients: dict[int, Client] = field(default_factory=dict)
    tickets: dict[int, Ticket] = field(default_factory=dict)
    # Tag ids only exist so /ticket can return tag objects shaped like the real ones.
    tag_ids: dict[str, int] = field(default_factory=dict)
    _next_ids: dict[str, int] = field(default_factory=dict)

    def now(self) -> datetime:
        return self.clock()

    def next_id(self, kind: str) -> int:
        value = self._next_ids.get(kind, 1)
        self._next_ids[kind] = value + 1
        return value

    def reserve_id(self, kind: str, used: int) -> None:
        """Make sure ids handed out later never collide with a seeded one."""
        self._next_ids[kind] = max(self._next_ids.get(kind, 1), used + 1)

    def tag_id(self, name: str) -> int:
        if name not in self.tag_ids:
            self.tag_ids[name] = self.next_id("tag")
        return self.tag_ids[name]

    def client_ticket_ids(self, client_id: int) -> list[int]:
        return sorted(t.id for t in self.tickets.values() if t.client_id == client_id)

    def first_agent_id(self) -> int | None:
        # Usedesk attributes author-less comments to "the company's first user"; the lowest id
        # is the closest stand-in for "first" an in-memory store has.
        return min(self.agents) if self.agents else None


def parse_time(text: str) -> datetime:
    """Read "YYYY-MM-DD HH:MM[:SS]" (the API's filter format) or ISO 8601, as UTC when naive."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
