"""What the console's tests share: one password (hashed once: scrypt is slow on purpose), the
``[console]`` section, and signing in the way a browser does."""

from __future__ import annotations

import functools
import re

from aiohttp.test_utils import TestClient

from connector_core.console.auth import hash_password

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
