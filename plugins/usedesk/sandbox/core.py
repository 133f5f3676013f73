"""UsedeskSandbox: the state, the request log, the faults and the in-process API."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import api_clients, api_lists, api_tickets
from .api_tickets import comment_view
from .faults import FaultInjector, FaultPlan, RateObserver
from .model import STATUS_NAMES, SandboxState, Ticket, fmt_time, utc_now
from .params import ApiError, Params
from .seed import build_state, load_seed

if TYPE_CHECKING:
    from aiohttp import web

Handler = Callable[[SandboxState, Params], Any]
SeedSource = Mapping[str, Any] | str | Path | None


@dataclass(frozen=True)
class Endpoint:
    handler: Handler
    write: bool
    # lib-sipuni and code-search call these with GET and query parameters (usedesk-api.md §1.3).
    allow_get: bool = False


ENDPOINTS: dict[str, Endpoint] = {
    "/create/client": Endpoint(api_clients.create_client, write=True),
    "/update/client": Endpoint(api_clients.update_client, write=True),
    "/clients": Endpoint(api_clients.list_clients, write=False),
    "/client": Endpoint(api_clients.get_client, write=False, allow_get=True),
    "/create/ticket": Endpoint(api_tickets.create_ticket, write=True),
    "/update/ticket": Endpoint(api_tickets.update_ticket, write=True),
    "/tickets": Endpoint(api_lists.list_tickets, write=False, allow_get=True),
    "/ticket": Endpoint(api_tickets.get_ticket, write=False),
    "/create/comment": Endpoint(api_tickets.create_comment, write=True),
    "/users": Endpoint(api_lists.list_users, write=False, allow_get=True),
    "/groups": Endpoint(api_lists.list_groups, write=False),
    "/channels": Endpoint(api_lists.list_channels, write=False, allow_get=True),
}

REDACTED = "REDACTED"
INVALID_TOKEN = "Invalid api token"


@dataclass
class LoggedRequest:
    """One API request as the sandbox saw it.

    ``status``/``response`` are what the client received (None when the connection was dropped
    or hung); ``applied`` is the real handler's answer when a fault with ``apply`` ran it.
    """

    seq: int
    at: str
    t: float
    method: str
    path: str
    params: dict[str, Any]
    write: bool
    status: int | None = None
    response: Any = None
    error: str | None = None
    fault: str | None = None
    applied: Any = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(dict(params))
    if "api_token" in clean:
        clean["api_token"] = REDACTED
    return clean


@dataclass(eq=False)
class UsedeskSandbox:
    """An in-memory Usedesk company reachable through the documented REST API.

    ``seed`` is a dict, a .json/.toml path, or None for the default seed (seed.DEFAULT_SEED).
    ``api_token`` overrides the seed's token. ``clock`` dates records; ``monotonic`` times
    arrivals for the rate observer. ``phone_search`` "raw" matches /clients phone queries
    against the stored spelling (SQL LIKE), "digits" against digits only. ``like_wildcards``
    False takes a query's ``%`` and ``_`` literally (an API that escapes them; by default they
    are SQL wildcards, as in ``LIKE '%query%'`` built from unescaped text). ``string_ids`` makes
    /ticket quote its numbers like the documented example.
    """

    seed: SeedSource = None
    api_token: str | None = None
    clock: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic
    phone_search: Literal["raw", "digits"] = "raw"
    like_wildcards: bool = True
    string_ids: bool = False
    faults: FaultInjector = field(default_factory=FaultInjector, init=False)
    rate: RateObserver = field(init=False, repr=False)
    log: list[LoggedRequest] = field(default_factory=list, init=False, repr=False)
    # Requests a "late" fault carries out later (kept so they are not garbage-collected).
    late_writes: set[asyncio.Future[tuple[int, Any]]] = field(
        default_factory=set, init=False, repr=False
    )
    state: SandboxState = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._seed = load_seed(self.seed)
        self.rate = RateObserver(self.monotonic)
        self.state = self._build(self._seed)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> UsedeskSandbox:
        return cls(seed=Path(path), **options)

    def _build(self, seed: Mapping[str, Any]) -> SandboxState:
        state = build_state(seed, clock=self.clock)
        if self.api_token is not None:
            state.api_token = self.api_token
        state.phone_search = self.phone_search
        state.like_wildcards = self.like_wildcards
        state.string_ids = self.string_ids
        return state

    @property
    def token(self) -> str:
        return self.state.api_token

    def reset(self, seed: SeedSource = None) -> None:
        """Rebuild from ``seed``, or from the current seed if None; log, rate, faults cleared."""
        if seed is not None:
            self._seed = load_seed(seed)
        self.state = self._build(self._seed)
        self.log.clear()
        self.rate.clear()
        self.faults.clear()
        self.faults.release_hung()

    # -- the API without HTTP ---------------------------------------------------------------

    def begin(self, method: str, path: str, params: Mapping[str, Any], t: float) -> LoggedRequest:
        endpoint = ENDPOINTS.get(path)
        entry = LoggedRequest(
            seq=len(self.log) + 1,
            at=fmt_time(self.state.now()),
            t=t,
            method=method,
            path=path,
            params=redact(params),
            write=endpoint.write if endpoint else False,
        )
        self.log.append(entry)
        return entry

    def dispatch(self, entry: LoggedRequest, params: Mapping[str, Any]) -> tuple[int, Any]:
        """Check the token, run the handler, and record the outcome on ``entry``."""
        if str(params.get("api_token", "")) != self.state.api_token:
            status, body = 401, {"error": INVALID_TOKEN}
        else:
            try:
                status, body = 200, ENDPOINTS[entry.path].handler(self.state, Params(dict(params)))
            except ApiError as exc:
                status, body = 200, {"error": exc.message}
            except Exception as exc:
                entry.status, entry.error = 500, repr(exc)
                raise
        entry.status, entry.response = status, body
        if isinstance(body, dict) and "error" in body:
            entry.error = body["error"]
        return status, body

    def call(
        self, path: str, params: Mapping[str, Any] | None = None, *, with_token: bool = True
    ) -> tuple[int, Any]:
        """Call an endpoint in-process (no HTTP, no faults): returns (HTTP status, body)."""
        data = dict(params or {})
        if with_token:
            data.setdefault("api_token", self.state.api_token)
        # Not fed to the rate observer: it watches what clients send over HTTP.
        entry = self.begin("CALL", path, data, self.monotonic())
        return self.dispatch(entry, data)

    # -- what agents do in the Usedesk UI --------------------------------------------------

    def delete_client(self, client_id: int) -> None:
        """Delete a client with its tickets (``KeyError`` if there is none)."""
        api_clients.delete_client(self.state, client_id)

    def merge_clients(self, *, into: int, merged: int) -> None:
        """Merge client ``merged`` into ``into`` (as ``/update/client`` with ``merge_id``)."""
        api_clients.merge_clients(self.state, into=into, merged=merged)

    # -- faults and observation -------------------------------------------------------------

    def set_faults(self, **changes: Any) -> FaultPlan:
        """Same keys as POST /_sandbox/faults, e.g. ``set_faults(mode="429", retry_after=2)``."""
        return self.faults.configure(changes)

    def clear_faults(self) -> None:
        self.faults.clear()

    def release_hung(self) -> None:
        self.faults.release_hung()

    def requests(
        self, path: str | None = None, *, writes_only: bool = False
    ) -> list[LoggedRequest]:
        return [
            e for e in self.log if (path is None or e.path == path) and (e.write or not writes_only)
        ]

    def max_requests_in_window(self, window_s: float, path: str | None = None) -> int:
        return self.rate.max_in_window(window_s, path)

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        return {
            "company_id": state.company_id,
            "api_channel_id": state.api_channel_id,
            "clients": [
                _client_dump(state, c.id)
                for c in sorted(state.clients.values(), key=lambda c: c.id)
            ],
            "tickets": [
                _ticket_dump(t) for t in sorted(state.tickets.values(), key=lambda t: t.id)
            ],
            "agents": [
                {
                    "id": a.id,
                    "name": a.name,
                    "email": a.email,
                    "user_type": a.user_type,
                    "groups": a.group_ids,
                    "phone": a.phone,
                }
                for a in sorted(state.agents.values(), key=lambda a: a.id)
            ],
            "groups": [{"id": g.id, "name": g.name} for g in state.groups.values()],
            "channels": [
                {"id": c.id, "name": c.name, "type": c.type} for c in state.channels.values()
            ],
            "faults": self.faults.plan.to_json(),
            "rate": self.rate.summary(),
        }

    # -- HTTP -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        from .app import create_app

        return create_app(self)

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on a loopback port; yields the base URL, e.g. "http://127.0.0.1:43121"."""
        from .server import serve_sandbox

        async with serve_sandbox(self, host, port) as url:
            yield url


def _client_dump(state: SandboxState, client_id: int) -> dict[str, Any]:
    c = state.clients[client_id]
    return {
        "id": c.id,
        "name": c.name,
        "note": c.note,
        "created_at": fmt_time(c.created_at),
        "phones": [{"id": p.id, "phone": p.phone, "type": p.type} for p in c.phones],
        "emails": [e.email for e in c.emails],
        "tickets": state.client_ticket_ids(c.id),
    }


def _ticket_dump(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "subject": t.subject,
        "client_id": t.client_id,
        "status_id": t.status_id,
        "status": STATUS_NAMES[t.status_id],
        "type": t.type,
        "priority": t.priority,
        "assignee_id": t.assignee_id,
        "group_id": t.group_id,
        "channel_id": t.channel_id,
        "additional_id": t.additional_id,
        "tags": list(t.tags),
        "published_at": fmt_time(t.published_at),
        "last_updated_at": fmt_time(t.last_updated_at),
        "comments": [comment_view(c) for c in t.comments],
        "changes": [
            {
                "target": ch.target,
                "old_value": ch.old_value,
                "value": ch.value,
                "user_id": ch.user_id,
                "changed_at": fmt_time(ch.changed_at),
            }
            for ch in t.changes
        ],
    }
