"""Schema versions: a database made by an earlier release opens in this one and works."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from connector_core.store import migrations
from connector_core.store.sqlite import SQLiteStore

RELEASE_1 = Path(__file__).parent / "data" / "schema_v1.sql"


def _release_1_database(path: Path) -> None:
    """A database as release 0.1.0 left it: its schema, user_version 0, one pending event."""
    db = sqlite3.connect(path)
    db.executescript(RELEASE_1.read_text(encoding="utf-8"))
    db.execute(
        "INSERT INTO inbox (account, received_at, params) VALUES (?, ?, ?)",
        ("012345", 1.0, '{"event": "1", "call_id": "old.1"}'),
    )
    db.execute(
        "INSERT INTO dispatches (account, call_id, integration, key, created_at)"
        " VALUES ('012345', 'old.1', '012345/usedesk', 'started', 1.0)"
    )
    db.commit()
    db.close()


async def test_a_release_1_database_opens_migrated_and_keeps_its_work(tmp_path: Path) -> None:
    path = tmp_path / "connector.db"
    _release_1_database(path)
    store = SQLiteStore(path)
    await store.open()
    try:
        pending = await store.pending_events(10)
        assert [item.params["call_id"] for item in pending] == ["old.1"]
        heads = await store.due_heads("012345/usedesk", now=10.0, limit=10)
        assert [(h.call_id, h.key) for h in heads] == [("old.1", "started")]
        # and it takes new work
        await store.append_event("012345", {"event": "1", "call_id": "new.1"}, 2.0)
        assert len(await store.pending_events(10)) == 2
        await store.commit_event(pending[0].id, None, [])
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST
    db.close()


async def test_a_new_database_is_at_the_latest_version(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "new.db")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "new.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST
    db.close()


async def test_a_database_from_a_newer_release_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    db.close()
    store = SQLiteStore(path)
    with pytest.raises(migrations.SchemaError, match="newer release of connector"):
        await store.open()
    await store.close()


def test_steps_are_numbered_one_after_another() -> None:
    assert [s.version for s in migrations.STEPS] == list(range(1, len(migrations.STEPS) + 1))


@pytest.mark.parametrize("start", range(migrations.LATEST))
def test_each_step_applies_on_top_of_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: int
) -> None:
    db = sqlite3.connect(tmp_path / "steps.db", isolation_level=None)
    with monkeypatch.context() as m:  # a database left by a release whose last step was `start`
        m.setattr(migrations, "STEPS", migrations.STEPS[:start])
        migrations.migrate(db)
    assert migrations.version_of(db) == start
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    assert migrations.migrate(db) == start
    assert migrations.version_of(db) == migrations.LATEST
    # One transaction per step it lacked, none for the steps it already had.
    assert statements.count("BEGIN IMMEDIATE") == migrations.LATEST - start
    statements.clear()
    assert migrations.migrate(db) == migrations.LATEST
    assert "BEGIN IMMEDIATE" not in statements, statements  # a second open changes nothing
    db.close()
