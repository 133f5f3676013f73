"""Each store test, end-to-end test, browser test and contract test that uses the store runs
once per backend: ``sqlite`` and ``postgresql`` in the test id, from one plain ``pytest``.

``store_backend`` (tests/conftest.py) is parametrized here, for every test that requests
it. The end-to-end and browser tests request it through ``on_store_backend`` (autouse in
their folders' conftests), the contract tests that use the store through their modules'
``usefixtures``: for ``postgresql`` it sets ``CONNECTOR_STORAGE_URL`` to a fresh
database, so configs parsed in the test and service processes it starts use PostgreSQL
without the test saying so. A test about SQLite itself (its file, its fault-injecting store,
one worker per file) says ``@pytest.mark.sqlite_only("why")`` and is generated for SQLite
alone: not generated and skipped, so a run shows what it covered. A test about several
processes sharing one store says ``@pytest.mark.postgresql_only("why")`` likewise.
"""

from __future__ import annotations

import pytest

from connector_core.config import STORAGE_URL_ENV
from tests.store_backends import StoreBackend

BACKENDS = ("sqlite", "postgresql")
SQLITE_ONLY = "sqlite_only"
POSTGRESQL_ONLY = "postgresql_only"
ONLY = {SQLITE_ONLY: ("sqlite",), POSTGRESQL_ONLY: ("postgresql",)}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SQLITE_ONLY}(why): the test is about SQLite itself; it runs on that backend alone",
    )
    config.addinivalue_line(
        "markers",
        f"{POSTGRESQL_ONLY}(why): the test needs a store shared by several processes;"
        " it runs on PostgreSQL alone",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    backends: tuple[str, ...] = BACKENDS
    for name, only in ONLY.items():
        marker = metafunc.definition.get_closest_marker(name)
        if marker is None:
            continue
        if not (marker.args and str(marker.args[0]).strip()):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: {name} needs a reason")
        backends = only
    metafunc.parametrize("store_backend", backends, indirect=True)


@pytest.fixture
def on_store_backend(store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> StoreBackend:
    """Everything this test configures uses ``store_backend``: PostgreSQL through
    ``CONNECTOR_STORAGE_URL`` (which overrides ``[storage]`` in every config, in this process
    and in the service processes it starts), SQLite through the config's own path."""
    if store_backend.name == "postgresql":
        monkeypatch.setenv(STORAGE_URL_ENV, store_backend.where)
    else:
        monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    return store_backend
