"""The contract test kit for CRM plugins, and a pytest plugin that serves it.

In a plugin's test suite::

    # tests/test_contract.py
    from connector_core.testing import PluginContract

    pytest_plugins = ["connector_core.testing"]

    class TestMyCrmContract(PluginContract):
        plugin = "mycrm"
        valid_settings = [{"api_key": "k-123456"}]
        invalid_settings = [({}, "api_key")]
        secret_settings = {"api_key": "k-very-secret-42"}
        secrets = ["k-very-secret-42"]

pytest collects the inherited ``test_*`` methods: registration through the entry point,
settings validation, secrets never shown or logged, the authorisation check, every canonical
call handled, unknown events skipped, idempotent redelivery and a clean shutdown. The async
tests carry ``@pytest.mark.asyncio``, so pytest-asyncio is needed (strict or auto mode).

The pytest plugin adds the ``connector_service`` fixture for a plugin's own tests: the real
service in-process with the integrations you give it (see ``run_service``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from connector_core.testing.contract import (
    AUTH_STATUSES,
    CONTRACT,
    TRANSFER,
    PluginContract,
)
from connector_core.testing.service import (
    ACCOUNT,
    TOKEN,
    KitService,
    config_text,
    load_host,
    parse_config,
    run_service,
    settle,
)
from connector_core.testing.watch import ResourceWatch
from connector_core.tomlwrite import toml_value

__all__ = [
    "ACCOUNT",
    "AUTH_STATUSES",
    "CONTRACT",
    "TOKEN",
    "TRANSFER",
    "KitService",
    "PluginContract",
    "ResourceWatch",
    "config_text",
    "connector_service",
    "load_host",
    "parse_config",
    "run_service",
    "settle",
    "toml_value",
]


def pytest_configure(config: pytest.Config) -> None:
    loaded = {getattr(p, "__name__", "") for p in config.pluginmanager.get_plugins()}
    if not any(name.startswith("pytest_asyncio") for name in loaded):
        raise pytest.UsageError(
            "connector_core.testing runs async tests: install pytest-asyncio "
            "(pip install pytest-asyncio); strict and auto mode both work"
        )


ServiceFactory = Callable[..., AbstractAsyncContextManager[KitService]]


@pytest.fixture
def connector_service(tmp_path: Path) -> ServiceFactory:
    """Start the real service in-process: ``async with connector_service(tables) as service``.

    ``tables`` maps instance names to integration tables (``{"crm": {"plugin": "mycrm",
    "api_key": "…"}}``); ``service.call(scenario, settle=True)`` sends a simulated call over
    HTTP and runs every hook it causes.
    """

    def start(integrations: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> Any:
        return run_service(tmp_path, integrations, **kwargs)

    return start
