"""The real service, in-process, for a plugin's tests: config from dicts, explicit settling.

``run_service`` builds a config with one account and the integrations it is given, starts
``connector_core.app.create_app`` on a loopback port without its background loops, and hands
back a ``KitService`` through which a test sends webhooks over HTTP and then processes them
(``settle()``) exactly as the worker and dispatcher loops would, only deterministically.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.app import check_authorization, create_app
from connector_core.appkeys import DISPATCHER, HOST, INTEGRATIONS, NOTIFIER, STORE, WORKER
from connector_core.callstate import CallState
from connector_core.config import STORAGE_URL_ENV, Config, parse_config_text
from connector_core.errors import ConfigError
from connector_core.hooks import PluginHost
from connector_core.integrations import AuthResult, Integration
from connector_core.simulator.scenarios import Scenario
from connector_core.store.base import Dispatch
from connector_core.tomlwrite import toml_key, toml_value

ACCOUNT = "012345"
"""The account every kit config uses (the simulator's scenarios call it too)."""
TOKEN = "contract-kit-token-0123456789"
"""The account's webhook token: events go to ``/sipuni/<TOKEN>``."""


def config_text(
    integrations: Mapping[str, Mapping[str, Any]],
    *,
    storage_path: str | Path,
    account: str = ACCOUNT,
    token: str = TOKEN,
) -> str:
    """A complete config file: one account with ``integrations`` (instance name → table).

    Each table holds ``plugin`` and the core keys (``schemes``, ``transfer_schemes``,
    ``hook_timeout_seconds``…) next to the plugin's own settings, as an operator writes them.
    """
    lines = [
        "[storage]",
        f"path = {toml_value(str(storage_path))}",
        "[tracker]",
        "finish_settle_seconds = 0",
        f"[accounts.{toml_key(account)}]",
        f"token = {toml_value(token)}",
    ]
    for name, table in integrations.items():
        lines.append(f"[accounts.{toml_key(account)}.integrations.{toml_key(name)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def load_host(plugins: Iterable[str]) -> PluginHost:
    """A plugin host with the named plugins loaded through their entry points."""
    host = PluginHost()
    host.load(set(plugins))
    return host


def parse_config(
    integrations: Mapping[str, Mapping[str, Any]], host: PluginHost, tmp_path: Path
) -> Config:
    """``config_text`` through the core's real two-pass validation (``parse_config_text``)."""
    text = config_text(integrations, storage_path=tmp_path / "connector.db")
    # Nothing else from the environment reaches the kit's config: only the store's URL, so the
    # plugin's tests run on PostgreSQL when CONNECTOR_STORAGE_URL names a database.
    environ = {k: v for k, v in os.environ.items() if k == STORAGE_URL_ENV}
    return parse_config_text(text, types=host.types, environ=environ, base_dir=tmp_path)


async def settle(app: web.Application, rounds: int = 100) -> None:
    """Process everything the service has been sent, as its background loops would.

    Rows that failed and wait for a retry are left waiting: a retry is not due yet.
    """
    worker, dispatcher, notifier = app[WORKER], app[DISPATCHER], app[NOTIFIER]
    for _ in range(rounds):
        drained = await worker.drain()
        started = await dispatcher.dispatch_due()
        await dispatcher.wait_idle()
        await notifier.wait_idle()
        if not drained and not started:
            return
    raise AssertionError(f"the service did not settle in {rounds} rounds")


def hook_for(row: Dispatch) -> str:
    """The hook a dispatch row calls (``transferred:102`` → ``connector_call_transferred``)."""
    return row.kind.hook if row.kind else f"no known hook (row {row.key!r})"


@dataclass
class KitService:
    """A running service: its app, plugin host and config, and an HTTP client to it."""

    app: web.Application
    client: TestClient[web.Request, web.Application]
    host: PluginHost
    config: Config
    account: str = ACCOUNT
    token: str = TOKEN

    @property
    def integrations(self) -> dict[str, Integration]:
        """The running integrations by instance name."""
        return {i.name: i for i in self.app[INTEGRATIONS].values()}

    async def send(self, params: Mapping[str, str], *, method: str = "GET") -> tuple[int, Any]:
        """One webhook request; returns (HTTP status, JSON body)."""
        url = f"/sipuni/{self.token}"
        if method == "GET":
            response = await self.client.get(url, params=dict(params))
        else:
            response = await self.client.post(url, data=dict(params))
        try:
            body = await response.json()
        except Exception:
            body = await response.text()
        return response.status, body

    async def call(self, scenario: Scenario, *, settle: bool = False) -> None:
        """Send every webhook of ``scenario``; each must be acknowledged."""
        for params in scenario.events:
            status, body = await self.send(params)
            if (status, body) != (200, {"success": True}):
                raise AssertionError(
                    f"the service refused event {params.get('event')} of {scenario.name}: "
                    f"HTTP {status} {body}"
                )
        if settle:
            await self.settle()

    async def settle(self) -> None:
        await settle(self.app)

    async def load_call(self, call_id: str) -> CallState | None:
        return await self.app[STORE].load_call(self.account, call_id)

    async def dispatches(self, call_id: str) -> list[Dispatch]:
        """Every hook call the service planned for ``call_id``, across integrations."""
        return list(await self.app[STORE].dispatches_for(self.account, call_id))

    async def check_authorization(self, name: str) -> AuthResult:
        """The core's authorisation check of instance ``name`` (as ``connector check``)."""
        return await check_authorization(self.host, self.integrations[name])

    async def redeliver(self, row: Dispatch) -> Any:
        """Call the hook of a dispatch row again, directly, as an at-least-once redelivery."""
        integration = self.app[INTEGRATIONS][row.integration]
        call = await self.load_call(row.call_id)
        if call is None:
            raise AssertionError(f"no stored call {row.call_id}")
        # The same arguments the dispatcher passes: the row's record, refreshed.
        record = row.hook_record(call)
        return await self.host.call_lifecycle(integration, call, record)


@asynccontextmanager
async def run_service(
    tmp_path: Path,
    integrations: Mapping[str, Mapping[str, Any]],
    *,
    host: PluginHost | None = None,
) -> AsyncIterator[KitService]:
    """Run the service with ``integrations`` (instance name → table with ``plugin``).

    The config goes through ``parse_config_text``; a ``ConfigError`` becomes an
    ``AssertionError`` that lists every error and any plugin that failed to load. On exit the
    app's cleanup runs: integrations' runtimes are closed, then the store.
    """
    if host is None:
        host = load_host(str(t.get("plugin")) for t in integrations.values())
    try:
        config = parse_config(integrations, host, tmp_path)
    except ConfigError as exc:
        loading = f"; plugins that failed to load: {host.errors}" if host.errors else ""
        raise AssertionError(
            "the kit's config for the plugin is invalid:\n  " + "\n  ".join(exc.errors) + loading
        ) from None
    app = create_app(config, host=host, background=False)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield KitService(app, client, app[HOST], config)
    finally:
        await client.close()
