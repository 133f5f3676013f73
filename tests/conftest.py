from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugin_kit import install_test_plugins

# pytester runs the contract kit against broken plugins (tests/contract); the kit itself is
# loaded here, in the top-level conftest, so that pytest rewrites its asserts.
pytest_plugins = ["pytester", "connector_core.testing"]


@pytest.fixture(scope="session")
def test_plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The recorder and saboteur plugins, findable through the ``connector_core`` group."""
    root = install_test_plugins(tmp_path_factory.mktemp("plugins"))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield root
    sys.path.remove(str(root))


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """CLI tests run ``main()`` in-process, and its ``setup_logging`` points the root logger at
    that test's captured stderr; later tests would log into the closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
