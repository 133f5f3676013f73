"""What a plugin hands the host, and what the host hands back to each hook.

A plugin registers an ``IntegrationType`` (name, settings model, factory). The operator's
config then makes any number of ``Integration`` instances of it, one per account and name,
each with its own validated settings: two Usedesk integrations on one account work side by
side because every hook receives the instance it is called for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol

from pydantic import BaseModel
from typing_extensions import TypeVar

from connector_core.callrecords import (
    CrmRequestObserver,
    Decision,
    crm_request_observer,
    report_decision,
)
from connector_core.hooktime import queue_wait

if TYPE_CHECKING:
    from connector_core.callstate import CallState
    from connector_core.store.base import EffectStore


class RoutingSettings(BaseModel):
    """The core's own per-integration keys (everything else belongs to the plugin)."""

    schemes: Literal["all"] | list[str] = "all"
    transfer_schemes: list[str] = []
    hook_timeout_seconds: float = 10.0
    # «Уведомления для расширения»: ringing employees get a card with this CRM's part.
    notifications: bool = False

    def selects_all(self) -> bool:
        return self.schemes == "all"


# A plugin's settings model and runtime object. Covariant, so that an
# ``Integration[UsedeskSettings, UsedeskRuntime]`` is an ``Integration``; the defaults keep
# the bare ``Integration`` meaning "any settings, any runtime" for the host's own code.
SettingsT = TypeVar("SettingsT", bound=BaseModel, default=BaseModel, covariant=True)
RuntimeT = TypeVar("RuntimeT", default=Any, covariant=True)
_Settings = TypeVar("_Settings", bound=BaseModel)
_Runtime = TypeVar("_Runtime")
# The runtime before the factory has made it; hooks never run in that state.
_NOT_MADE: Any = None


@dataclass(frozen=True)
class IntegrationType(Generic[SettingsT, RuntimeT]):
    """A kind of integration a plugin provides.

    ``factory(integration)`` is called once per configured instance at start-up and may be
    async; what it returns is kept as ``integration.runtime`` (an API client, caches). If that
    object has an async ``aclose()``, it is awaited at shutdown.
    """

    name: str
    settings_model: type[SettingsT]
    factory: Callable[[Integration[SettingsT, Any]], RuntimeT | Awaitable[RuntimeT]] | None = None
    description: str = ""


class RegisterIntegrationType(Protocol):
    """The ``register`` argument of ``connector_register_integration_types``.

    Generic per call, so each ``IntegrationType`` is checked on its own: a factory that
    expects other settings than the type's model is a type error in the plugin.
    """

    def __call__(self, kind: IntegrationType[_Settings, _Runtime], /) -> None: ...


class AuthStatus(StrEnum):
    OK = "ok"
    AUTH_FAILED = "auth_failed"
    CANNOT_CONNECT = "cannot_connect"
    NOT_CHECKED = "not_checked"


@dataclass(frozen=True)
class AuthResult:
    """The outcome of an authorisation check, with a reason a person can act on."""

    status: AuthStatus
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


class CheckLevel(StrEnum):
    """How much a finding of ``connector check`` matters: only ``ERROR`` fails the check."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class CheckFinding:
    """One line of ``connector check`` about an integration's settings, checked against the CRM.

    ``setting`` is the path of the setting inside the integration's table (``users[2].agent``,
    ``on_duty_user``; empty for a finding about no one setting); the host prefixes it with
    ``accounts.<account>.integrations.<name>.`` so the operator finds the line in the config.
    """

    level: CheckLevel
    message: str
    setting: str = ""


@dataclass(frozen=True)
class CardPart:
    """One CRM's contribution to the card an agent sees while the phone rings."""

    title: str
    lines: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, url)
    # Who is calling as this CRM knows them: the desktop notification's title.
    caller_name: str = ""
    # (label, url) that one click on the card or its notification opens, e.g. the ticket.
    main_link: tuple[str, str] | None = None


class CardNotice(Protocol):
    """``integration.notify(extension, call, part, state)``: a card on an extension's agent
    page (and every notification sink) from any hook, not only while the phone rings: a
    reminder such as an overdue missed call. The service sets it for integrations with
    ``notifications = true``; elsewhere it shows nothing."""

    async def __call__(
        self, extension: str, call: CallState, part: CardPart, state: str
    ) -> None: ...


async def _nowhere(extension: str, call: CallState, part: CardPart, state: str) -> None:
    return None


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it.

    Waiting for a key is a queue wait (:func:`connector_core.hooktime.queue_wait`): it does
    not count against the waiting hook's timeout. With ``shared`` (a store shared by several
    processes), the holder of the process's lock then takes ``shared(key)`` too, so one key
    is held by one hook call in the whole cluster; the others of this process queue here.
    """

    def __init__(
        self, shared: Callable[[str], AbstractAsyncContextManager[None]] | None = None
    ) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._shared = shared

    def __call__(self, key: str) -> _Held:
        return _Held(self, key)

    def __len__(self) -> int:
        return len(self._locks)


class _Held:
    def __init__(self, owner: KeyedLocks, key: str) -> None:
        self._owner, self._key = owner, key
        self._cluster: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> None:
        lock, users = self._owner._locks.get(self._key, (asyncio.Lock(), 0))
        self._owner._locks[self._key] = (lock, users + 1)
        try:
            # Waiting for another call's turn is not CRM time: the hook's timeout stops.
            async with queue_wait():
                await lock.acquire()
        except BaseException:  # cancelled while waiting (a card part's timeout): let go
            self._leave()
            raise
        if self._owner._shared is None:
            return
        self._cluster = self._owner._shared(self._key)
        try:
            await self._cluster.__aenter__()  # a queue wait too (Store.lock)
        except BaseException:
            lock.release()
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._cluster is not None:
                await self._cluster.__aexit__(None, None, None)
        finally:
            self._owner._locks[self._key][0].release()
            self._leave()

    def _leave(self) -> None:
        lock, users = self._owner._locks[self._key]
        if users == 1:
            del self._owner._locks[self._key]
        else:
            self._owner._locks[self._key] = (lock, users - 1)


class RateSlots(Protocol):
    """What a shared rate window is taken from: ``Store.take_rate_slot``."""

    async def take_rate_slot(
        self, name: str, per_minute: int, per_second: int, margin: float = 0.0
    ) -> float: ...


class SharedRate:
    """Rate windows every process of the cluster counts in (``integration.shared_rate``).

    A plugin whose CRM limits requests per account, not per process, takes a slot here
    before each request, after its own limiter: ``await integration.shared_rate.acquire(
    name, per_minute=100, per_second=5)``. Every integration (in any process) that names the
    same window shares its budget, so name it after the CRM account (a hash of the API
    token), not after the integration.
    """

    def __init__(
        self, slots: RateSlots, sleep: Callable[[float], Awaitable[None]] | None = None
    ) -> None:
        self._slots = slots
        self._sleep = sleep or asyncio.sleep

    async def acquire(
        self, name: str, *, per_minute: int, per_second: int, margin: float = 0.0
    ) -> float:
        """Wait until the windows ``name`` have room and take a slot; returns the seconds
        waited. The wait is a queue wait: it does not count against the hook's timeout."""
        waited = 0.0
        async with queue_wait():
            while (
                wait := await self._slots.take_rate_slot(name, per_minute, per_second, margin)
            ) > 0:
                await self._sleep(wait)
                waited += wait
        return waited


@dataclass
class Integration(Generic[SettingsT, RuntimeT]):
    """One configured integration instance: ``accounts.<account>.integrations.<name>``.

    A plugin annotates its hooks with its own types, ``Integration[MySettings, MyRuntime]``:
    ``settings`` is then its validated settings model and ``runtime`` what its type's factory
    made, both checked by mypy without casts. The bare ``Integration`` is any of them.
    """

    account: str
    name: str
    type: IntegrationType[SettingsT, RuntimeT]
    settings: SettingsT
    routing: RoutingSettings
    effects: EffectStore
    region: str = "RU"
    answered_owner: str = "last"  # tracker.answered_owner: who owns a transferred call
    runtime: RuntimeT = _NOT_MADE
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    # A CRM client reports each request here: ``(API method, seconds, outcome)`` feeds
    # /metrics; inside a hook call the request is kept with the call too, with the optional
    # ``status=`` (HTTP) and ``path=`` (``connector trace``).
    on_crm_request: CrmRequestObserver = field(default_factory=crm_request_observer)
    auth: AuthResult = field(default_factory=lambda: AuthResult(AuthStatus.NOT_CHECKED))
    # Rate windows shared by every process on the store; ``None`` when this process is the
    # only one (SQLite), where the plugin's own limiter is the whole budget.
    shared_rate: SharedRate | None = None
    notify: CardNotice = _nowhere

    @property
    def key(self) -> str:
        return f"{self.account}/{self.name}"

    def report(self, decision: Decision) -> None:
        """Keep what the plugin decided about the call, and why, with the hook call running.

        ``connector trace`` and the console show it (``owner 514: missed call, on-duty
        agent``); a ``decision.link`` to the CRM object is shown in the calls list. Outside
        a lifecycle hook call it is not kept.
        """
        report_decision(self.key, decision)

    def __repr__(self) -> str:
        # Settings may hold secrets; pydantic's SecretStr hides them, but keep reprs short.
        return f"<Integration {self.key} ({self.type.name})>"
