"""What the console's tests share: one password (hashed once: scrypt is slow on purpose), the
``[console]`` section, and signing in the way a browser does."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core.console.auth import hash_password
from tests.harness import app_for, make_config

PASSWORD = "operator-password-Jq7Wm2"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


def console_section(*, public_url: str = "", **keys: object) -> str:
    """``[server]`` (when a public URL is given) and ``[console]`` enabled with PASSWORD."""
    lines = ["[console]", "enabled = true", f'password_hash = "{password_hash()}"']
    for key, value in keys.items():
        text = str(value).lower() if isinstance(value, bool) else value
        lines.append(f'{key} = "{text}"' if isinstance(value, str) else f"{key} = {text}")
    server = f'[server]\npublic_url = "{public_url}"\n' if public_url else ""
    return server + "\n".join(lines) + "\n"


def csrf_in(html: str) -> str:
    """The CSRF token a page's forms post back."""
    found = _CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


async def sign_in(client: TestClient, password: str = PASSWORD) -> str:
    """Open the login page, post the password; returns the session's CSRF token."""
    form = await client.get("/console/login")
    response = await client.post(
        "/console/login",
        data={"csrf": csrf_in(await form.text()), "password": password, "next": "/console/calls"},
    )
    assert response.status == 200 and response.url.path == "/console/calls", response.status
    return csrf_in(await response.text())


class Services:
    """Services with the console on, each in its own folder on a loopback port; ``close()``
    stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clients: list[TestClient] = []

    async def start(
        self,
        integrations: str,
        *,
        console: str | None = None,
        extra: str = "",
        folder: str | None = None,
        **kwargs: Any,
    ) -> tuple[web.Application, TestClient]:
        """The service for ``integrations``: ``console`` replaces the default ``[console]``
        (PASSWORD); ``extra`` adds sections; ``folder`` names a store kept across starts."""
        head = (console_section() if console is None else console) + extra
        config, host = make_config(
            self.root / (folder or str(len(self.clients))), integrations, extra=head
        )
        app = app_for(config, host, **kwargs)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        self.clients.append(client)
        return app, client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
