from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from connector_core.store import pg_migrations
from tests.plugin_kit import install_test_plugins
from tests.store_backends import StoreBackend

if TYPE_CHECKING:
    from connector_core.testing.pgcluster import PgCluster

# pytester runs the contract kit against broken plugins (tests/contract); the kit itself is
# loaded here, in the top-level conftest, so that pytest rewrites its asserts.
pytest_plugins = ["pytester", "connector_core.testing", "tests.backends"]


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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of the test run's own; skipped without PostgreSQL, except in CI."""
    # Imported here, not above: connector_core.testing must first be imported by pytest as
    # the plugin below, which rewrites the contract kit's asserts.
    from connector_core.testing import pgcluster

    try:
        cluster = pgcluster.start()
    except FileNotFoundError:
        if os.environ.get("CI"):
            pytest.fail(pgcluster.NOT_INSTALLED)
        pytest.skip(pgcluster.NOT_INSTALLED)
    yield cluster
    cluster.stop()


_databases = itertools.count(1)


def _database(cluster: PgCluster, template: str | None = None) -> Iterator[str]:
    name = f"test_{os.getpid()}_{next(_databases)}"
    yield cluster.create_database(name, template)
    cluster.drop_database(name)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a new empty database, dropped after the test."""
    yield from _database(pg_cluster)


@pytest.fixture(scope="session")
def pg_schema(pg_cluster: PgCluster) -> str:
    """A database with the store's tables and nothing in them, made once: copying it is much
    cheaper than creating an empty database and the tables again for each test."""
    name = f"schema_{os.getpid()}"
    url = pg_cluster.create_database(name)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_migrate(url))
    finally:
        loop.close()
    return name


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await pg_migrations.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture
def pg_store_url(pg_cluster: PgCluster, pg_schema: str) -> Iterator[str]:
    """The URL of a new database with the store's tables, empty; dropped after the test."""
    yield from _database(pg_cluster, pg_schema)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    """Each backend in turn (parametrized by tests/backends.py), with nothing stored yet."""
    if request.param == "sqlite":
        return StoreBackend("sqlite", str(tmp_path / "connector.db"))
    return StoreBackend("postgresql", request.getfixturevalue("pg_store_url"))
