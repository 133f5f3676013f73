import pytest

from tests.store_backends import StoreBackend


@pytest.fixture(autouse=True)
def _each_store_backend(on_store_backend: StoreBackend) -> StoreBackend:
    """Every test here runs on SQLite and on PostgreSQL (tests/backends.py)."""
    return on_store_backend
