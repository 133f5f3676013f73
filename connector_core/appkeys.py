"""Typed keys for what the app shares between handlers and background tasks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from connector_core.clock import Clock
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration
from connector_core.supervisor import Supervisor

if TYPE_CHECKING:
    pass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class AccountRuntime:
    number: str
    token: str = field(repr=False)
    region: str
    allowed_networks: list[Network]
    integrations: list[Integration]


CONFIG = web.AppKey("config", "Config")
CLOCK = web.AppKey("clock", Clock)
HOST = web.AppKey("host", PluginHost)
STORE = web.AppKey("store", "SQLiteStore")
ACCOUNTS = web.AppKey("accounts", list[AccountRuntime])
INTEGRATIONS = web.AppKey("integrations", dict[str, Integration])
WORKER = web.AppKey("worker", "Worker")
DISPATCHER = web.AppKey("dispatcher", "Dispatcher")
BOARD = web.AppKey("board", "CardBoard")
NOTIFIER = web.AppKey("notifier", "Notifier")
METRICS = web.AppKey("metrics", "Metrics")
SUPERVISOR = web.AppKey("supervisor", Supervisor)
