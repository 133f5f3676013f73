"""Running the sandbox on a real socket, for end-to-end tests and the standalone demo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiohttp import web

from .app import create_app

if TYPE_CHECKING:
    from .core import UsedeskSandbox


@asynccontextmanager
async def serve_sandbox(
    sandbox: UsedeskSandbox, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``sandbox`` until the block exits; yields the base URL with the real port."""
    # Hung requests are released on shutdown, so a short timeout only bounds a stuck handler.
    runner = web.AppRunner(create_app(sandbox), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
