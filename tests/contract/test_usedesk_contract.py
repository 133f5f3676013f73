"""The Usedesk plugin passes the contract kit against the Usedesk sandbox on a loopback port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web

from connector_core.integrations import Integration
from connector_core.testing import PluginContract
from plugins.usedesk.sandbox import UsedeskSandbox

# Every test here runs on SQLite and on PostgreSQL (tests/backends.py).
pytestmark = pytest.mark.usefixtures("on_store_backend")

SECRET = "ud-secret-token-7f3a9c"
USERS = [
    {"extension": "101", "agent": 2},
    {"extension": "102", "agent": 3},
    {"extension": "103", "agent": "anna@example.com"},
]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestUsedeskContract(PluginContract):
    plugin = "usedesk"
    valid_settings = (
        {"api_token": SECRET},
        {
            "api_token": SECRET,
            "base_url": "https://usedesk.example.com/api",
            "channel_id": 12,
            "search_statuses": [1, 8],
            "always_new_ticket": True,
            "create_client": False,
            "ticket_type": "task",
            "first_on_line_responsible": True,
            "language": "en",
            "templates": {"comment": "{direction} call {phone} ({call_id})"},
            "timezone": "Asia/Almaty",
            "users": USERS,
            "on_duty_user": "duty@example.com",
            "phone_format": "8XXXXXXXXXX",
            "rate_limit_per_minute": 60,
            "request_timeout_seconds": 2.5,
        },
    )
    invalid_settings = (
        ({}, "api_token"),
        ({"api_token": SECRET, "base_url": "ftp://usedesk.example.com"}, "base_url"),
        ({"api_token": SECRET, "search_statuses": [42]}, "1-10"),
        ({"api_token": SECRET, "search_statuses": []}, "search_statuses"),
        ({"api_token": SECRET, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"api_token": SECRET, "users": [{"extension": "abc", "agent": 2}]}, "users[0].extension"),
        (
            {
                "api_token": SECRET,
                "users": [{"extension": "101", "agent": 2}, {"extension": "101", "agent": 3}],
            },
            "mapped twice",
        ),
        (
            {"api_token": SECRET, "templates": {"comment": "{no_such_variable}"}},
            "templates.comment",
        ),
        ({"api_token": SECRET, "ticket_type": "bug"}, "ticket_type"),
        ({"api_token": SECRET, "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
    )
    secret_settings: ClassVar[dict[str, Any]] = {"api_token": SECRET, "users": USERS}
    secrets = (SECRET,)

    @asynccontextmanager
    async def environment(self, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
        self.sandbox = UsedeskSandbox()
        async with self.sandbox.serve() as base_url:
            yield {
                "api_token": self.sandbox.token,
                "base_url": base_url,
                "rate_limit_per_minute": 1000,
                "burst_per_second": 100,
                "users": USERS,
                "on_duty_user": 4,
            }

    def setup_answers(self, settings: Mapping[str, Any]) -> list[str]:
        # The address, the key, the web interface's address (the sandbox's own: Enter), an
        # extension for each of the sandbox's four agents, on duty.
        return [settings["base_url"], settings["api_token"], "", "201", "202, 212", "", "", "4"]

    async def auth_cases(self, settings: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        return {
            "ok": settings,
            "auth_failed": {**settings, "api_token": "ud-wrong-token-0000"},
            "cannot_connect": {
                **settings,
                "base_url": f"http://127.0.0.1:{closed_port()}",
                "request_timeout_seconds": 2,
            },
        }

    async def observe(self, app: web.Application, integration: Integration) -> Any:
        # What the plugin did in Usedesk; the sandbox's request-rate counters are not that.
        snapshot = self.sandbox.snapshot()
        return {"clients": snapshot["clients"], "tickets": snapshot["tickets"]}
