"""The addresses people are shown: the service's, Sipuni's webhook URL, the agent pages.

``server.public_url`` when it is set (the service behind a proxy or on a public name, as
Sipuni and people reach it); otherwise the address the service listens on
(``http://<server.host>:<server.port>``). The start-up log of ``connector serve`` and
``connector demo`` show them through this module. A secret token is shown only when the
caller passes it; otherwise a placeholder names the config key that holds it.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlencode

from connector_core.config import Config

UNSET_NOTE = "server.public_url is not set: the address the service listens on"
# Listening on every interface says nothing about the address others reach it at.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
UNKNOWN_ADDRESS = "<this machine's address>"


class Server(Protocol):
    """Where the service listens and how it is reached (``[server]``, or init's answers)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def public_url(self) -> str | None: ...


def base_url(server: Server) -> str:
    """Where people reach the service: ``server.public_url``, or the listening address (a
    placeholder for the host when it listens on every interface)."""
    if server.public_url:
        return server.public_url.rstrip("/")
    host = server.host
    if host in WILDCARD_HOSTS:
        host = UNKNOWN_ADDRESS
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{server.port}"


def webhook_url(server: Server, account: str, token: str | None = None) -> str:
    """The URL to paste into Sipuni for ``account`` (its token, or where the token is set)."""
    return f"{base_url(server)}/sipuni/{token or f'<accounts.{account}.token>'}"


def agent_page_url(server: Server, account: str, extension: str, token: str | None = None) -> str:
    """The page an employee keeps open for ringing cards (docs/notifications.md)."""
    secret = token or f"<accounts.{account}.agents.{extension}>"
    query = urlencode({"account": account, "extension": extension})
    return f"{base_url(server)}/agent/?{query}&token={secret}"


def addresses(config: Config) -> list[str]:
    """One line per account's webhook URL and per agent page, tokens left as placeholders."""
    note = "" if config.server.public_url else f" ({UNSET_NOTE})"
    lines = []
    for number, account in config.accounts.items():
        lines.append(f"account {number} webhook: {webhook_url(config.server, number)}{note}")
        lines += [
            f"account {number} agent page {extension}: "
            f"{agent_page_url(config.server, number, extension)}"
            for extension in account.agents
        ]
    return lines
