"""Running the real service in-process for tests: config from text, explicit draining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from connector_core.app import create_app
from connector_core.appkeys import DISPATCHER, MISSED_CALLS, NOTIFIER, STORE, WORKER
from connector_core.clock import FakeClock
from connector_core.config import Config, parse_config_text
from connector_core.hooks import PluginHost

TOKEN = "test-token-0123456789"
ACCOUNT = "012345"


def make_config(tmp_path: Path, integrations: str, *, extra: str = "") -> tuple[Config, PluginHost]:
    host = PluginHost()
    host.load()
    text = f"""
[storage]
path = "{tmp_path / "connector.db"}"
[tracker]
finish_settle_seconds = 0
{extra}
[accounts.{ACCOUNT}]
token = "{TOKEN}"
{integrations}
"""
    return parse_config_text(text, types=host.types), host


async def settle(app: web.Application, rounds: int = 50) -> None:
    """Process everything the service has been sent, as the background loops would."""
    worker, dispatcher = app[WORKER], app[DISPATCHER]
    for _ in range(rounds):
        drained = await worker.drain()
        started = await dispatcher.dispatch_due()
        await dispatcher.wait_idle()
        await app[NOTIFIER].wait_idle()
        if not drained and not started:
            return
    raise AssertionError("the service did not settle")


async def settle_missed(app: web.Application, clock: FakeClock, seconds: float) -> None:
    """Everything processed, then ``seconds`` later the missed-call loop, then its hooks."""
    await settle(app)
    clock.advance(seconds)
    while await app[MISSED_CALLS].settle_round():
        pass
    await settle(app)


def app_for(config: Config, host: PluginHost, **kwargs: Any) -> web.Application:
    return create_app(config, host=host, background=False, **kwargs)


async def seen(app: web.Application, integration: str) -> list[str]:
    """What the recorder plugin journaled for ``integration``, in order."""
    effects = app[STORE].effects(f"{ACCOUNT}/{integration}")
    return [key for key, _ in await effects.items()]
