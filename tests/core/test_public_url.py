"""``server.public_url``: the addresses the connector shows people are built on it, or on the
address the service listens on when it is not set."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core import public_url
from connector_core.config import Config, parse_config_text
from tests.e2e.process import ServiceProcess, free_port

ACCOUNT, OTHER = "012345", "054321"
ACCOUNTS = f"""
[accounts.{ACCOUNT}]
token = "public-url-token-0123456789"
[accounts.{OTHER}]
token = "other-token-0123456789"
agents = {{ "101" = "agent-101-token-0123456789" }}
"""


def config(server: str) -> Config:
    return parse_config_text(f"[server]\n{server}\n{ACCOUNTS}", types={}, environ={})


def test_addresses_are_built_on_the_public_url() -> None:
    server = config('public_url = "https://connector.example.com/crm/"')
    assert public_url.base_url(server.server) == "https://connector.example.com/crm"
    assert public_url.webhook_url(server.server, ACCOUNT, "t0ken") == (
        "https://connector.example.com/crm/sipuni/t0ken"
    )
    base = "https://connector.example.com/crm"
    assert public_url.addresses(server) == [
        f"account {ACCOUNT} webhook: {base}/sipuni/<accounts.{ACCOUNT}.token>",
        f"account {OTHER} webhook: {base}/sipuni/<accounts.{OTHER}.token>",
        f"account {OTHER} agent page 101: {base}/agent/"
        f"?account={OTHER}&extension=101&token=<accounts.{OTHER}.agents.101>",
    ]


def test_without_a_public_url_the_addresses_are_where_the_service_listens() -> None:
    server = config('host = "::1"\nport = 9090')
    assert public_url.addresses(server)[0] == (
        f"account {ACCOUNT} webhook: http://[::1]:9090/sipuni/<accounts.{ACCOUNT}.token>"
        " (server.public_url is not set: the address the service listens on)"
    )


@pytest.mark.e2e
def test_serve_logs_the_webhook_url_at_the_public_url(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "connector.toml"
    path.write_text(
        f'[server]\nport = {port}\npublic_url = "https://connector.example.com"\n'
        f'[storage]\npath = "connector.db"\n{ACCOUNTS}',
        encoding="utf-8",
    )
    service = ServiceProcess(path, port=port)
    service.start()
    code = service.stop()
    log = service.log_path.read_text()
    assert code == 0, log
    # The token's place is masked in the log, as every path under /sipuni/ and token= is.
    assert f"account {ACCOUNT} webhook: https://connector.example.com/sipuni/***\n" in log
    assert (
        f"account {OTHER} agent page 101: https://connector.example.com/agent/"
        f"?account={OTHER}&extension=101&token=***\n"
    ) in log
    assert f"http://127.0.0.1:{port}" in log  # aiohttp's own line: where it listens
