"""The addresses people are shown: the service's, Sipuni's webhook URL, the agent pages.

``server.public_url`` when it is set (the service behind a proxy or on a public name, as
Sipuni and people reach it); otherwise the address the service listens on
(``http://<server.host>:<server.port>``). The start-up log of ``connector serve`` and
``connector demo`` show them through this module. A secret token is shown only when the
caller passes it; otherwise a placeholder names the config key that holds it.
"""

from __future__ import annotations

from urllib.parse import urlencode

from connector_core.config import Config, ServerConfig

UNSET_NOTE = "server.public_url is not set: the address the service listens on"


def base_url(server: ServerConfig) -> str:
    """Where people reach the service: ``server.public_url``, or the listening address."""
    if server.public_url:
        return server.public_url
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port}"


def webhook_url(server: ServerConfig, account: str, token: str | None = None) -> str:
    """The URL to paste into Sipuni for ``account`` (its token, or where the token is set)."""
    return f"{base_url(server)}/sipuni/{token or f'<accounts.{account}.token>'}"


def agent_page_url(
    server: ServerConfig, account: str, extension: str, token: str | None = None
) -> str:
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
