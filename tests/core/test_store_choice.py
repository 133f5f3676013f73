"""Which store the config names, what ``connector check`` says of it, and ``connector backup``.

``check`` reports the store without creating or upgrading it; ``backup`` copies the SQLite
store while the service writes to it. Every test runs the real command (``cli.main``) in its
own ``tmp_path`` and reads what it printed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from connector_core import cli
from connector_core.config import Config, parse_config_text
from connector_core.errors import ConfigError
from connector_core.hooks import PluginHost
from connector_core.simulator import scenarios
from connector_core.store.migrations import LATEST
from connector_core.store.urls import masked_url
from tests.core.test_cli import create_store
from tests.e2e.process import free_port
from tests.harness import TOKEN, app_for, make_config

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_CONFIG = 0, 1, 2
DATA = Path(__file__).parent / "data"
PASSWORD = "s3cret-db-password"


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    monkeypatch.delenv("CONNECTOR_STORAGE_URL", raising=False)
    return tmp_path


def write_config(folder: Path, storage: str = 'path = "connector.db"') -> Path:
    path = folder / "connector.toml"
    path.write_text(f"[storage]\n{storage}\n[accounts.012345]\ntoken = {TOKEN!r}\n", "utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config_text(text, types=PluginHost().types, environ=environ or {})


ACCOUNT = f'[accounts.012345]\ntoken = "{TOKEN}"\n'


# --- [storage] url --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            f"mysql://connector:{PASSWORD}@db.example/connector",
            "only postgresql:// URLs are supported;"
            " leave url out to use the SQLite file at storage.path",
        ),
        (
            f"postgresql://connector:{PASSWORD}@/connector",
            "the URL names no host nor socket folder (?host=/run/postgresql);"
            " write postgresql://user:password@host:5432/database",
        ),
        (
            f"postgresql://connector:{PASSWORD}@db.example:5432",
            "the URL names no database; write postgresql://user:password@host:5432/database",
        ),
    ],
)
def test_a_url_that_names_no_postgresql_database_is_refused_without_quoting_it(
    url: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(f'[storage]\nurl = "{url}"\n{ACCOUNT}')
    assert refused.value.errors == [f"storage.url: {message}"]
    # The same from the environment variable, which takes the file's place: the message
    # names it, since the file may not mention storage at all.
    with pytest.raises(ConfigError) as refused:
        parse(ACCOUNT, {"CONNECTOR_STORAGE_URL": url})
    assert refused.value.errors == [f"storage.url: {message} (from CONNECTOR_STORAGE_URL)"]


def test_the_environment_variable_overrides_the_file_and_the_url_is_a_secret() -> None:
    in_file = "postgresql://connector@db.example:5432/from_file"
    from_env = f"postgres://connector:{PASSWORD}@db.example:5432/connector"
    assert parse(f'[storage]\nurl = "{in_file}"\n{ACCOUNT}').storage.url is not None
    config = parse(f'[storage]\nurl = "{in_file}"\n{ACCOUNT}', {"CONNECTOR_STORAGE_URL": from_env})
    assert config.storage.url is not None
    assert config.storage.url.get_secret_value() == from_env
    assert PASSWORD not in repr(config.storage)
    assert {from_env, PASSWORD} <= set(config.secrets())  # masked in every log line
    assert masked_url(from_env) == "postgres://connector:***@db.example:5432/connector"
    # No URL: SQLite at storage.path, as before.
    assert parse(ACCOUNT).storage.url is None


# --- connector check ------------------------------------------------------------------------


def test_check_reports_an_sqlite_store_at_this_releases_version(workdir: Path, capsys) -> None:
    config = write_config(workdir)
    create_store(config.parent / "connector.db")
    code, out, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_OK, err
    assert out == [
        "configuration: ok",
        f"store: sqlite {workdir / 'connector.db'}: schema version {LATEST}",
        "no enabled integrations",
    ]


def test_check_reports_an_older_store_and_leaves_it_as_it_is(workdir: Path, capsys) -> None:
    db = workdir / "connector.db"
    with sqlite3.connect(db) as made:
        made.executescript((DATA / "schema_v1.sql").read_text("utf-8"))
    config = write_config(workdir)
    code, out, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_OK, err
    assert out[1] == (
        f"store: sqlite {db}: schema version 1; will be upgraded to {LATEST}"
        " when the service starts"
    )
    with sqlite3.connect(db) as opened:  # not migrated by a check
        assert opened.execute("PRAGMA user_version").fetchone() == (0,)


def test_check_refuses_a_store_made_by_a_newer_release(workdir: Path, capsys) -> None:
    db = workdir / "connector.db"
    with sqlite3.connect(db) as made:
        made.execute(f"PRAGMA user_version = {LATEST + 1}")
    code, out, _ = run(capsys, "check", "--config", str(write_config(workdir)))
    assert code == EXIT_CHECK_FAILED
    assert out == [
        "configuration: ok",
        f"error: storage.path: {db}: the database is at schema version {LATEST + 1}, made by a"
        f" newer release of connector; this release knows versions up to {LATEST}:"
        " upgrade connector to open it",
        "no enabled integrations",
    ]


def test_check_says_a_file_that_is_no_database_cannot_be_read(workdir: Path, capsys) -> None:
    db = workdir / "connector.db"
    db.write_bytes(b"not a database, just text " * 200)
    code, out, _ = run(capsys, "check", "--config", str(write_config(workdir)))
    assert code == EXIT_CHECK_FAILED
    assert out[1] == (
        f"error: storage.path: {db} cannot be read as a SQLite database: file is not a database"
    )
    assert db.read_bytes() == b"not a database, just text " * 200


def test_check_says_when_this_installation_has_no_postgresql_store(
    workdir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "connector_core.store.postgres", None)  # import fails
    url = f"postgresql://connector:{PASSWORD}@127.0.0.1:{free_port()}/connector"
    code, out, _ = run(capsys, "check", "--config", str(write_config(workdir, f'url = "{url}"')))
    assert code == EXIT_CHECK_FAILED
    assert out[1].startswith(
        "error: storage.url: this installation has no PostgreSQL store (connector_core.store"
        ".postgres: "
    )
    assert out[1].endswith("leave storage.url out to use the SQLite file at storage.path")


def test_check_names_an_unreachable_postgresql_database_without_its_password(
    workdir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Needs the PostgreSQL store, written in another branch of this change.
    pytest.importorskip("connector_core.store.postgres", reason="the PostgreSQL store is merged")
    port = free_port()  # nobody listens there
    url = f"postgresql://connector:{PASSWORD}@127.0.0.1:{port}/connector"
    monkeypatch.setenv("CONNECTOR_STORAGE_URL", url)
    code, out, _ = run(capsys, "check", "--config", str(write_config(workdir)))
    assert code == EXIT_CHECK_FAILED
    assert out[1].startswith(
        f"error: storage.url: cannot connect to postgresql://connector:***@127.0.0.1:{port}"
        "/connector: "
    )
    assert PASSWORD not in "\n".join(out)


def test_a_service_command_on_a_store_of_a_newer_release_says_so_in_one_line(
    workdir: Path, capsys
) -> None:
    with sqlite3.connect(workdir / "connector.db") as made:
        made.execute(f"PRAGMA user_version = {LATEST + 1}")
    code, out, err = run(capsys, "dlq", "list", "--config", str(write_config(workdir)))
    assert (code, out) == (EXIT_CHECK_FAILED, [])
    assert err == (
        f"the store cannot be used: the database is at schema version {LATEST + 1}, made by a"
        f" newer release of connector; this release knows versions up to {LATEST}:"
        " upgrade connector to open it\n"
    )


def test_check_says_where_the_password_of_a_url_without_one_goes(
    workdir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set-up the docs recommend: the URL in the file, its password in the environment
    (here forgotten in this shell)."""
    url = f"postgresql://connector@127.0.0.1:{free_port()}/connector"
    code, out, _ = run(capsys, "check", "--config", str(write_config(workdir, f'url = "{url}"')))
    assert code == EXIT_CHECK_FAILED
    assert out[1].endswith(
        "; the URL has no password: set CONNECTOR_STORAGE_URL to the whole URL with it"
        " (it replaces storage.url)"
    )


def test_a_socket_folder_url_is_shown_as_written_with_its_password_masked() -> None:
    assert masked_url("postgresql:///connector?host=/run/postgresql&password=pw") == (
        "postgresql:///connector?host=/run/postgresql&password=***"
    )


# --- connector backup -----------------------------------------------------------------------


async def test_a_backup_taken_while_webhooks_arrive_is_whole_and_consistent(
    tmp_path: Path, aiohttp_client
) -> None:
    config, host = make_config(tmp_path, "")
    client: TestClient = await aiohttp_client(app_for(config, host))
    text = f'[storage]\npath = "{config.storage.path}"\n{ACCOUNT}'
    (tmp_path / "connector.toml").write_text(text, "utf-8")
    dest = tmp_path / "backups" / "copy.db"
    dest.parent.mkdir()
    acknowledged = 0

    async def webhooks(count: int) -> None:
        nonlocal acknowledged
        for n in range(count):
            for params in scenarios.internal(call_id=f"1717171700.{n}").events:
                assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
                acknowledged += 1

    await webhooks(20)
    arriving = asyncio.create_task(webhooks(200))
    before = acknowledged
    code = await asyncio.to_thread(
        cli.main, ["backup", str(dest), "--config", str(tmp_path / "connector.toml")]
    )
    after = acknowledged
    await arriving
    assert code == EXIT_OK
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = [row[0] for row in copy.execute("SELECT id FROM inbox ORDER BY id")]
    # One snapshot: every webhook acknowledged before the backup began, none missing between.
    assert before <= len(ids) <= after + 1
    assert ids == list(range(1, len(ids) + 1))
    assert not list(dest.parent.glob(".*partial"))  # the temporary file was renamed


def test_a_backup_leaves_out_a_write_not_yet_committed(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    create_store(config.parent / "connector.db")
    writer = sqlite3.connect(tmp_path / "connector.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a write in flight, holding the write lock
    writer.execute("INSERT INTO rejected (received_at, reason, params) VALUES (0, 'x', '{}')")
    code, out, err = run(capsys, "backup", "copy.db", "--config", str(config))
    writer.execute("COMMIT")
    writer.close()
    assert (code, out) == (EXIT_OK, [f"backed up {tmp_path / 'connector.db'} to copy.db"]), err
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("SELECT count(*) FROM rejected").fetchone() == (0,)
        assert copy.execute("PRAGMA user_version").fetchone() == (LATEST,)


def test_a_backup_does_not_replace_a_file_unless_forced(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    create_store(config.parent / "connector.db")
    (tmp_path / "copy.db").write_text("yesterday's backup", "utf-8")
    code, out, err = run(capsys, "backup", "copy.db", "--config", str(config))
    assert (code, out) == (EXIT_CHECK_FAILED, [])
    assert err == "connector backup: copy.db exists; pass --force to replace it\n"
    assert (tmp_path / "copy.db").read_text("utf-8") == "yesterday's backup"
    code, _, err = run(capsys, "backup", "copy.db", "--force", "--config", str(config))
    assert code == EXIT_OK, err
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # It holds callers' numbers: readable by its owner only.
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600
    code, _, err = run(capsys, "backup", "no/such/folder/copy.db", "--config", str(config))
    assert code == EXIT_CHECK_FAILED
    assert err.endswith("no/such/folder/copy.db: no folder no/such/folder\n"), err


def test_a_backup_of_a_missing_store_creates_nothing(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "backup", "copy.db", "--config", str(write_config(tmp_path)))
    assert code == EXIT_CHECK_FAILED
    assert err == f"connector backup: {tmp_path / 'connector.db'} does not exist\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["connector.toml"]


def test_a_postgresql_store_is_backed_up_with_pg_dump(tmp_path: Path, capsys) -> None:
    url = f"postgresql://connector:{PASSWORD}@db.example:5432/connector"
    config = write_config(tmp_path, f'url = "{url}"')
    code, out, err = run(capsys, "backup", "copy.db", "--config", str(config))
    assert (code, out) == (EXIT_BAD_CONFIG, [])
    assert err == (
        "connector backup: the store is PostgreSQL; back it up with pg_dump"
        " (pg_dump --format=custom --file=connector.dump DATABASE_URL), restore it with"
        " pg_restore\n"
    )
