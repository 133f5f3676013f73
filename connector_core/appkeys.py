"""Typed keys for what the app shares between handlers and background tasks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from connector_core.clock import Clock
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration
from connector_core.refusals import Refusals
from connector_core.supervisor import Supervisor

if TYPE_CHECKING:
    # Only for the key types: these modules import the app's keys themselves at runtime.
    from connector_core.cluster import Leases, Role
    from connector_core.config import Config
    from connector_core.console.web import ConsoleState
    from connector_core.dispatcher import Dispatcher
    from connector_core.metrics import Metrics
    from connector_core.missed_calls import MissedCalls
    from connector_core.notifications import CardBoard, Notifier
    from connector_core.store.base import Store
    from connector_core.worker import Worker

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class AccountRuntime:
    number: str
    token: str = field(repr=False)
    region: str
    allowed_networks: list[Network]
    integrations: list[Integration]


CONFIG: web.AppKey[Config] = web.AppKey("config")
CLOCK = web.AppKey("clock", Clock)
HOST = web.AppKey("host", PluginHost)
STORE: web.AppKey[Store] = web.AppKey("store")
ACCOUNTS = web.AppKey("accounts", list[AccountRuntime])
INTEGRATIONS = web.AppKey("integrations", dict[str, Integration])
WORKER: web.AppKey[Worker] = web.AppKey("worker")
MISSED_CALLS: web.AppKey[MissedCalls] = web.AppKey("missed_calls")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
BOARD: web.AppKey[CardBoard] = web.AppKey("board")
NOTIFIER: web.AppKey[Notifier] = web.AppKey("notifier")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
REFUSALS: web.AppKey[Refusals] = web.AppKey("refusals")
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")
ROLE: web.AppKey[Role] = web.AppKey("role")
LEASES: web.AppKey[Leases] = web.AppKey("leases")
CONSOLE: web.AppKey[ConsoleState] = web.AppKey("console")  # on the console's sub-application
