"""The ``connector`` command: check, plugins, schema, replay, journal, serve, embedded defaults.

Most tests run ``connector_core.cli.main([...])`` in-process and read what it printed; the
``check`` exit codes and ``serve`` are also run as real processes (``python -m
connector_core``), the way an operator or a process manager runs them. The recorder and
saboteur test plugins are found through their entry point (``test_plugins_dir``). Every test
works in its own ``tmp_path`` as the current directory, so nothing is written to the repo.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_core import cli
from connector_core.config import DEMO_TOKEN
from connector_core.simulator import scenarios
from connector_core.store.migrations import LATEST
from tests.e2e.process import ROOT, ServiceProcess, free_port, get_json

TOKEN = "cli-token-0123456789"
WILL_BE_CREATED = f"will be created at schema version {LATEST} when the service starts"
ACCOUNT = "012345"
EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty current directory, no $CONNECTOR_CONFIG, and the root logger put back.

    ``replay`` and ``serve`` call ``setup_logging``, which replaces the root logger's
    handlers; later tests must not write to a stream captured for this one.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield tmp_path
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def write_config(folder: Path, integrations: str, *, head: str = "", name="connector.toml") -> Path:
    path = folder / name
    path.write_text(
        f"""{head}
[storage]
path = "connector.db"
[accounts.{ACCOUNT}]
token = "{TOKEN}"
{integrations}
""",
        encoding="utf-8",
    )
    path.chmod(0o600)  # as `connector init` writes it: check warns about any other mode
    return path


def create_store(path: Path) -> None:
    """An empty SQLite store at ``path``, as a service's first start leaves it."""
    import asyncio

    from connector_core.store.sqlite import SQLiteStore

    async def open_and_close() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(open_and_close())


RECORDER = """
[accounts.012345.integrations.rec]
plugin = "recorder"
label = "desk"
"""
AMOCRM = """
[accounts.012345.integrations.amocrm_stub]
subdomain = "acme"
users = { "101" = 5001 }
default_responsible = 5999
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(cwd: Path, plugins: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)])}
    env.pop("CONNECTOR_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "connector_core", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def db_rows(path: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


# --- check -----------------------------------------------------------------------------------


def test_check_valid_config_prints_ok_per_integration(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    config = write_config(
        workdir,
        RECORDER + '[accounts.012345.integrations.second]\nplugin = "recorder"\n' + AMOCRM,
    )
    code, out, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_OK, err
    assert out.splitlines() == [
        "configuration: ok",
        f"store: sqlite {workdir / 'connector.db'}: {WILL_BE_CREATED}",
        "012345/rec [recorder]: ok (recorder)",
        "012345/second [recorder]: ok (recorder)",
        "012345/amocrm_stub [amocrm_stub]: ok (stub: nothing to authorise)",
    ]
    assert err == ""


def test_check_warns_about_a_config_other_users_may_read(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    """The file holds the webhook token (whoever has it can send calls) and the CRM keys; init
    writes it with mode 600, a copy or a file written by hand often has 644."""
    config = write_config(workdir, RECORDER)
    config.chmod(0o644)
    code, out, err = run(capsys, "check", "--config", str(config))
    assert (code, out.splitlines()[0]) == (EXIT_OK, "configuration: ok")
    assert err == (
        f"warning: {config} may be read by other users of this machine (mode 644), and it holds"
        f" the webhook token and the CRM keys: chmod 600 {config}\n"
    )
    config.chmod(0o600)
    assert run(capsys, "check", "--config", str(config))[2] == ""


def test_check_failed_authorisation_exits_1(workdir: Path, test_plugins_dir: Path, capsys) -> None:
    config = write_config(
        workdir, RECORDER + '[accounts.012345.integrations.sab]\nplugin = "saboteur"\n'
    )
    code, out, _ = run(capsys, "check", "--config", str(config))
    assert code == EXIT_CHECK_FAILED
    assert "configuration: ok" in out.splitlines()
    assert "012345/rec [recorder]: ok (recorder)" in out.splitlines()
    assert "012345/sab [saboteur]: cannot_connect (the check raised RuntimeError)" in (
        out.splitlines()
    )


def test_check_prints_the_plugins_findings_under_its_integration(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    config = write_config(workdir, RECORDER.replace('"desk"', '"check-warns"'))
    code, out, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_OK, err  # a warning does not fail the check
    assert out.splitlines() == [
        "configuration: ok",
        f"store: sqlite {workdir / 'connector.db'}: {WILL_BE_CREATED}",
        "012345/rec [recorder]: ok (recorder)",
        "  warning: accounts.012345.integrations.rec.label: a label only tests use",
    ]


@pytest.mark.parametrize(
    ("label", "error"), [("check-raises", "RuntimeError"), ("check-answers-a-string", "TypeError")]
)
def test_check_a_settings_check_that_breaks_fails_naming_the_integration(
    workdir: Path, test_plugins_dir: Path, capsys, label: str, error: str
) -> None:
    config = write_config(workdir, RECORDER.replace('"desk"', f'"{label}"'))
    code, out, _ = run(capsys, "check", "--config", str(config))
    assert code == EXIT_CHECK_FAILED
    assert out.splitlines()[-1] == (
        f"  error: accounts.012345.integrations.rec: the settings check raised {error}"
    )
    assert "secret" not in out  # the exception's text is not shown: it could hold one


def test_check_the_amocrm_stub_refuses_its_placeholder_subdomain_before_any_call(
    workdir: Path, capsys
) -> None:
    stub = AMOCRM.replace('subdomain = "acme"', 'subdomain = "example"\naccess_token = "t-1"')
    code, out, _ = run(capsys, "check", "--config", str(write_config(workdir, stub)))
    assert code == EXIT_CHECK_FAILED
    assert out.splitlines()[-1] == (
        "  error: accounts.012345.integrations.amocrm_stub.subdomain: still the placeholder"
        " 'example': with an access_token every call would be refused; set the account's"
        " <subdomain>.amocrm.ru"
    )


def test_check_with_a_disabled_failing_integration_passes(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    config = write_config(
        workdir,
        RECORDER + '[accounts.012345.integrations.sab]\nplugin = "saboteur"\nenabled = false\n',
    )
    code, out, _ = run(capsys, "check", "--config", str(config))
    assert code == EXIT_OK
    assert "012345/sab" not in out


def test_check_with_no_enabled_integration_says_so(workdir: Path, capsys) -> None:
    config = write_config(workdir, "")
    code, out, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_OK, err
    assert out.splitlines() == [
        "configuration: ok",
        f"store: sqlite {workdir / 'connector.db'}: {WILL_BE_CREATED}",
        "no enabled integrations",
    ]


THREE_MISTAKES = """
[server]
port = 99999
[storage]
path = "connector.db"
[accounts.012345]
token = "cli-token-0123456789"
colour = "red"
[accounts.012345.integrations.rec]
plugin = "recorder"
[accounts.012345.integrations.sab]
plugin = "saboteur"
mode = "explode"
"""
THREE_ERRORS = """\
The configuration has 3 error(s):
  - server.port: Input should be less than or equal to 65535
  - accounts.012345.colour: unknown key (no such setting here)
  - accounts.012345.integrations.sab.mode: Input should be 'raise' or 'hang'
"""


def test_check_reports_every_mistake_with_its_toml_path(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    config = workdir / "connector.toml"
    config.write_text(THREE_MISTAKES, encoding="utf-8")
    code, out, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_BAD_CONFIG
    assert out == ""  # no "configuration: ok", no checks run
    assert err == THREE_ERRORS
    assert not (workdir / "connector.db").exists()  # nothing was started


def test_check_as_a_process_exit_codes(workdir: Path, test_plugins_dir: Path) -> None:
    """The exit codes a deployment script sees: 0 ok, 1 a check failed, 2 invalid config."""
    good = write_config(workdir, RECORDER, name="good.toml")
    failing = write_config(
        workdir, '[accounts.012345.integrations.sab]\nplugin = "saboteur"\n', name="failing.toml"
    )
    broken = workdir / "broken.toml"
    broken.write_text(THREE_MISTAKES, encoding="utf-8")

    result = run_process(workdir, test_plugins_dir, "check", "--config", str(good))
    assert (result.returncode, result.stdout) == (
        EXIT_OK,
        f"configuration: ok\nstore: sqlite {workdir / 'connector.db'}: {WILL_BE_CREATED}\n"
        "012345/rec [recorder]: ok (recorder)\n",
    ), result.stderr

    result = run_process(workdir, test_plugins_dir, "check", "--config", str(failing))
    assert result.returncode == EXIT_CHECK_FAILED, result.stderr
    assert "012345/sab [saboteur]: cannot_connect" in result.stdout

    result = run_process(workdir, test_plugins_dir, "check", "--config", str(broken))
    assert result.returncode == EXIT_BAD_CONFIG
    assert result.stderr == THREE_ERRORS
    assert "Traceback" not in result.stderr


def test_check_missing_file_exits_2_with_a_clear_message(workdir: Path, capsys) -> None:
    code, out, err = run(capsys, "check", "--config", "nowhere/connector.toml")
    assert code == EXIT_BAD_CONFIG
    assert out == ""
    assert err == (
        "The configuration has 1 error(s):\n"
        "  - nowhere/connector.toml: the config file does not exist\n"
    )


def test_check_toml_syntax_error_names_the_line(workdir: Path, capsys) -> None:
    config = workdir / "connector.toml"
    config.write_text('[server]\nport = 8080\nhost = "127.0.0.1\n', encoding="utf-8")
    code, _, err = run(capsys, "check", "--config", str(config))
    assert code == EXIT_BAD_CONFIG
    assert f"{config}, line 3, column" in err
    assert "invalid TOML" in err


def test_a_config_saved_in_windows_1251_says_so_instead_of_a_traceback(
    workdir: Path, capsys
) -> None:
    config = workdir / "connector.toml"
    config.write_bytes("[server]\nport = 8080\n# Входящая линия\n".encode("cp1251"))
    code, out, err = run(capsys, "check", "--config", str(config))
    assert (code, out) == (EXIT_BAD_CONFIG, "")
    assert err == (
        "The configuration has 1 error(s):\n"
        f"  - {config}: the config file is not UTF-8 text (byte 0xC2 on line 3): save it as"
        " UTF-8; an editor on Windows may have saved the Russian letters in Windows-1251\n"
    )


def test_a_config_with_a_byte_order_mark_is_read(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    """Notepad's "UTF-8 with BOM": TOML has no place for the mark, and no editor shows it."""
    plain = write_config(workdir, RECORDER, name="plain.toml")
    marked = workdir / "marked.toml"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    marked.chmod(0o600)
    code, out, err = run(capsys, "check", "--config", str(marked))
    assert (code, err) == (EXIT_OK, "")
    assert out.startswith("configuration: ok\n")


def test_missing_config_file_exits_2_for_every_command(workdir: Path, capsys) -> None:
    for argv in (["serve"], ["replay", "events.txt"], ["journal", "amocrm_stub"]):
        code, _, err = run(capsys, *argv, "--config", "absent.toml")
        assert code == EXIT_BAD_CONFIG, argv
        assert "absent.toml: the config file does not exist" in err


# --- plugins and schema ----------------------------------------------------------------------


def sections(out: str) -> dict[str, list[str]]:
    """``plugins`` output split by plugin: the header line's first word → indented lines."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if not line.startswith(" "):
            current = found.setdefault(line.split()[0], [line])
        else:
            current.append(line.strip())
    return found


def test_plugins_lists_plugins_hooks_and_settings(test_plugins_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == EXIT_OK
    found = sections(out)
    assert {"usedesk", "amocrm_stub", "recorder", "saboteur"} <= set(found)

    usedesk = found["usedesk"]
    assert usedesk[0].endswith("(plugins.usedesk)")
    for hook in (
        "connector_check_authorization",
        "connector_call_started",
        "connector_call_finished",
        "connector_register_integration_types",
    ):
        assert f"hook: {hook}" in usedesk
    assert "integration type 'usedesk', settings:" in usedesk
    assert any(line.startswith('api_token: "string"  «API-ключ»') for line in usedesk)
    assert any(line.startswith("on_duty_user: ") for line in usedesk)

    amocrm = found["amocrm_stub"]
    assert amocrm[0].endswith("(plugins.amocrm_stub)")
    assert "hook: connector_call_reached_transfer_scheme" in amocrm
    assert any(line.startswith('subdomain: "string"') for line in amocrm)

    assert "hook: connector_call_transferred" in found["recorder"]
    assert 'label: "string"' in found["recorder"]
    assert 'mode: "string"' in found["saboteur"]
    assert found["recorder"][0] == "recorder 1.0  (connector_test_plugins.recorder)"


def test_plugins_json(test_plugins_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == EXIT_OK
    entries = {entry["name"]: entry for entry in json.loads(out)}
    assert {"usedesk", "amocrm_stub", "recorder", "saboteur"} <= set(entries)
    usedesk = entries["usedesk"]
    assert usedesk["module"] == "plugins.usedesk"
    assert usedesk["error"] is None
    assert "connector_call_finished" in usedesk["hooks"]
    settings = usedesk["integration_types"]["usedesk"]
    assert {"api_token", "base_url", "users", "on_duty_user", "phone_format"} <= set(
        settings["properties"]
    )
    assert settings["required"] == ["api_token"]
    amocrm = entries["amocrm_stub"]["integration_types"]["amocrm_stub"]
    assert amocrm["properties"]["subdomain"]["default"] == "example"
    assert entries["saboteur"]["integration_types"]["saboteur"]["properties"]["mode"]["enum"] == [
        "raise",
        "hang",
    ]


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed plugin whose module cannot be imported."""
    root = tmp_path / "site"
    dist = root / "connector_broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: connector-broken-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[connector_core]\nbroken = connector_broken_plugin_missing_module\n"
    )
    monkeypatch.syspath_prepend(str(root))
    return "broken"


def test_plugins_reports_a_broken_plugin_and_lists_the_others(broken_plugin: str, capsys) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == EXIT_OK
    found = sections(out)
    assert found[broken_plugin][0] == "broken 0.1  (connector_broken_plugin_missing_module)"
    assert found[broken_plugin][1].startswith(
        "error: cannot import connector_broken_plugin_missing_module: "
    )
    assert "integration type 'usedesk', settings:" in found["usedesk"]

    code, out, _ = run(capsys, "plugins", "--json")
    entries = {entry["name"]: entry for entry in json.loads(out)}
    assert entries[broken_plugin]["error"].startswith("cannot import")
    assert entries[broken_plugin]["hooks"] == []
    assert entries["usedesk"]["error"] is None


def test_schema_is_json_with_plugin_settings_and_no_secrets(
    workdir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A config with secrets in the current directory must not leak into the schema.
    secret = "usedesk-secret-value-0000"
    write_config(
        workdir,
        f'[accounts.012345.integrations.usedesk]\napi_token = "{secret}"\n',
    )
    code, out, _ = run(capsys, "schema")
    assert code == EXIT_OK
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    variants = schema["$defs"]["AccountTable"]["properties"]["integrations"][
        "additionalProperties"
    ]["anyOf"]
    usedesk = next(v for v in variants if v["properties"]["plugin"].get("const") == "usedesk")
    properties = usedesk["properties"]
    assert {"api_token", "base_url", "search_statuses", "users", "templates"} <= set(properties)
    assert {"schemes", "transfer_schemes", "enabled"} <= set(properties)  # the core keys too
    assert usedesk["required"] == ["api_token"]
    api_token = properties["api_token"]
    assert api_token["writeOnly"] is True and "default" not in api_token
    account_token = schema["$defs"]["AccountTable"]["properties"]["token"]
    assert "default" not in account_token
    assert secret not in out
    assert TOKEN not in out
    assert DEMO_TOKEN not in out


# --- replay and journal ----------------------------------------------------------------------


def jsonl(path: Path, *calls: scenarios.Scenario) -> Path:
    lines = [
        json.dumps({"account": c.account, "params": e}, ensure_ascii=False)
        for c in calls
        for e in c.events
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def seen_keys(db: Path, integration: str, call_id: str) -> list[str]:
    rows = db_rows(
        db,
        "SELECT key FROM effects WHERE integration = ? AND key LIKE ? ORDER BY rowid",
        integration,
        f"seen:{call_id}:%",
    )
    return [r[0].split(":", 2)[2] for r in rows]


def test_replay_json_lines(workdir: Path, test_plugins_dir: Path, capsys) -> None:
    config = write_config(workdir, RECORDER)
    answered, missed = scenarios.inbound_answered(), scenarios.inbound_missed()
    events = len(answered.events) + len(missed.events)
    recording = jsonl(workdir / "calls.jsonl", answered, missed)

    code, out, err = run(capsys, "replay", str(recording), "--config", str(config))
    assert code == EXIT_OK, err
    assert out == (
        f"replayed {events} event(s), refused 0; 2 call(s), "
        "0 hook call(s) waiting for retry, 0 dead-lettered\n"
    )
    db = workdir / "connector.db"
    assert db_rows(db, "SELECT call_id, finished FROM calls ORDER BY call_id") == [
        (answered.call_id, 1),
        (missed.call_id, 1),
    ]
    assert db_rows(db, "SELECT count(*) FROM inbox WHERE status = 'done'") == [(events,)]
    assert seen_keys(db, "012345/rec", answered.call_id) == [
        "started:",
        "answered:101",
        "finished:answered",
    ]
    assert seen_keys(db, "012345/rec", missed.call_id) == ["started:", "finished:missed"]


def test_replay_query_strings_with_account(workdir: Path, test_plugins_dir: Path, capsys) -> None:
    config = write_config(workdir, RECORDER)
    call = scenarios.outbound_answered(employee="103")
    lines = ["# recorded from the access log", ""]
    for i, params in enumerate(call.events):
        query = urllib.parse.urlencode(params)
        # Whole request paths and bare query strings are both accepted.
        lines.append(f"/sipuni/{TOKEN}/?{query}" if i % 2 else query)
    recording = workdir / "calls.txt"
    recording.write_text("\n".join(lines) + "\n", encoding="utf-8")

    code, out, err = run(
        capsys, "replay", str(recording), "--account", ACCOUNT, "--config", str(config)
    )
    assert code == EXIT_OK, err
    assert out.startswith(f"replayed {len(call.events)} event(s), refused 0; 1 call(s), ")
    db = workdir / "connector.db"
    [(state,)] = db_rows(db, "SELECT state FROM calls WHERE call_id = ?", call.call_id)
    assert json.loads(state)["direction"] == "outbound"
    assert seen_keys(db, "012345/rec", call.call_id) == [
        "started:",
        "answered:103",
        "finished:answered",
    ]


def test_replay_query_strings_without_account_is_refused(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    config = write_config(workdir, RECORDER)
    recording = workdir / "calls.txt"
    recording.write_text(urllib.parse.urlencode(scenarios.inbound_missed().events[0]) + "\n")
    with pytest.raises(SystemExit) as raised:
        cli.main(["replay", str(recording), "--config", str(config)])
    assert str(raised.value) == (f'{recording}:1: no account: pass --account or add "account"')


def test_replay_with_malformed_lines_counts_them_and_exits_1(
    workdir: Path, test_plugins_dir: Path, capsys
) -> None:
    config = write_config(workdir, RECORDER)
    call = scenarios.inbound_missed()
    lines = [json.dumps({"account": ACCOUNT, "params": e}) for e in call.events]
    lines.insert(
        1, json.dumps({"account": ACCOUNT, "params": {"event": "hangup", "call_id": "1.2"}})
    )
    lines.append(json.dumps({"account": "999999", "params": call.events[0]}))
    recording = workdir / "calls.jsonl"
    recording.write_text("\n".join(lines) + "\n", encoding="utf-8")

    code, out, err = run(capsys, "replay", str(recording), "--config", str(config))
    assert code == EXIT_CHECK_FAILED
    assert out.startswith(f"replayed {len(call.events)} event(s), refused 2; 1 call(s), ")
    assert "event 2: refused: field 'event' must be a number, got 'hangup'" in err
    assert f"event {len(lines)}: account 999999 is not in the config" in err
    # The good events around the bad ones were still processed.
    db = workdir / "connector.db"
    assert seen_keys(db, "012345/rec", call.call_id) == ["started:", "finished:missed"]


@pytest.mark.parametrize(
    "bad_line",
    ['{"account": "012345", "params": {"event": "1"', '{"account": "012345", "params": [1, 2]}'],
)
def test_replay_counts_a_broken_json_line_as_refused(
    workdir: Path, test_plugins_dir: Path, capsys, bad_line: str
) -> None:
    config = write_config(workdir, RECORDER)
    call = scenarios.inbound_missed()
    lines = [json.dumps({"account": ACCOUNT, "params": e}) for e in call.events] + [bad_line]
    recording = workdir / "calls.jsonl"
    recording.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "replay", str(recording), "--config", str(config))
    assert code == EXIT_CHECK_FAILED
    assert out.startswith(f"replayed {len(call.events)} event(s), refused 1; 1 call(s), ")
    # The refusal names the line, so the operator can find it in the file.
    assert f"event {len(lines)}: refused: line {len(lines)}: " in err
    assert "Traceback" not in err
    assert seen_keys(workdir / "connector.db", "012345/rec", call.call_id) == [
        "started:",
        "finished:missed",
    ]


def journal_lines(out: str) -> list[tuple[str, str, dict]]:
    found = []
    for line in out.splitlines():
        key, name, value = line.split(" ", 2)
        found.append((key, name, json.loads(value)))
    return found


def test_journal_amocrm_stub_after_a_replay(workdir: Path, capsys) -> None:
    config = write_config(workdir, AMOCRM)
    answered, missed = scenarios.inbound_answered(), scenarios.inbound_missed()
    recording = jsonl(workdir / "calls.jsonl", answered, missed)
    code, _, err = run(capsys, "replay", str(recording), "--config", str(config))
    assert code == EXIT_OK, err

    code, out, _ = run(capsys, "journal", "amocrm_stub", "--config", str(config))
    assert code == EXIT_OK
    entries = journal_lines(out)
    assert {key for key, _, _ in entries} == {"012345/amocrm_stub"}
    journal = {name: value for _, name, value in entries}
    phone = "+79161234567"
    assert journal[f"contact:{phone}"] == {"action": "contact_find_or_create", "phone": phone}
    for call in (answered, missed):
        assert journal[f"lead:{call.call_id}"]["action"] == "lead_create"
        assert journal[f"note:{call.call_id}"]["action"] == "call_note"
    assert journal[f"note:{answered.call_id}"]["outcome"] == "answered"
    assert journal[f"note:{missed.call_id}"]["outcome"] == "missed"
    # The answered call is the extension's user's; the missed one the default responsible's.
    assert journal[f"responsible:{answered.call_id}"] == {
        "action": "set_responsible",
        "call_id": answered.call_id,
        "extension": "101",
        "user_id": 5001,
    }
    assert journal[f"responsible:{missed.call_id}"]["user_id"] == 5999
    # One contact for one phone number, whatever the number of calls.
    assert [n for n in journal if n.startswith("contact:")] == [f"contact:{phone}"]

    # The <account>/<name> spelling shows the same journal.
    code, again, _ = run(capsys, "journal", "012345/amocrm_stub", "--config", str(config))
    assert (code, again) == (EXIT_OK, out)


def test_an_empty_journal_says_so_instead_of_printing_nothing(workdir: Path, capsys) -> None:
    config = write_config(workdir, AMOCRM)
    code, out, err = run(capsys, "journal", "amocrm_stub", "--config", str(config))
    assert (code, out) == (EXIT_OK, "")
    assert err == (
        "012345/amocrm_stub: no journal entries (only a plugin that journals, such as"
        " amocrm_stub, writes them); what a call did: `connector trace <call_id>`\n"
    )


def test_journal_of_an_unknown_integration_exits_1(workdir: Path, capsys) -> None:
    config = write_config(workdir, AMOCRM)
    code, out, err = run(capsys, "journal", "usedesk", "--config", str(config))
    assert code == EXIT_CHECK_FAILED
    assert out == ""
    assert err == "no enabled integration named usedesk\n"


# --- serve -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_serve_answers_and_exits_0_on_sigterm(workdir: Path, test_plugins_dir: Path) -> None:
    port = free_port()
    config = write_config(workdir, RECORDER, head=f"[server]\nport = {port}")
    service = ServiceProcess(config, pythonpath=[test_plugins_dir], port=port)
    service.start()
    try:
        assert get_json(service.url + "/healthz") == (200, {"status": "ok"})
        call = scenarios.inbound_answered()
        for params in call.events:
            url = f"{service.url}/sipuni/{TOKEN}/?{urllib.parse.urlencode(params)}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert json.loads(response.read()) == {"success": True}
        # Every event processed and every hook call run (none pending, none dead).
        stats = service.wait_until(
            lambda s: (
                s.get("calls_total") == 1
                and s.get("inbox_pending") == 0
                and s.get("dispatches_pending") == 0
            )
        )
        assert stats["dispatches_dead"] == 0
        status, ready = get_json(service.url + "/readyz")
        assert status == 200 and ready["ready"] is True
        assert ready["integrations"]["012345/rec"]["auth"] == "ok"
    finally:
        code = service.stop()
    assert code == 0, service.log_path.read_text()
    log = service.log_path.read_text()
    assert "/sipuni/***/" in log  # the access log was written…
    assert TOKEN not in log  # …without the token
    assert "Traceback" not in log
    assert seen_keys(workdir / "connector.db", "012345/rec", call.call_id) == [
        "started:",
        "answered:101",
        "finished:answered",
    ]


def test_demo_on_a_port_in_use_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "demo", "--once", "--sandbox-port", str(port))
    assert code == 1
    assert err.splitlines() == [
        f"cannot start the demo: error while attempting to bind on address ('127.0.0.1', {port}):"
        f" address already in use; the service listens on 8080, the Usedesk sandbox on {port}:"
        " choose free ports with --port and --sandbox-port"
    ]


@pytest.mark.e2e
def test_serve_on_a_port_in_use_says_so_in_one_line(workdir: Path, test_plugins_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(workdir, RECORDER, head=f"[server]\nport = {port}")
        done = subprocess.run(
            [sys.executable, "-m", "connector_core", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(test_plugins_dir), str(ROOT)])},
            cwd=workdir,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; another process (another"
        " connector?) listens there: stop it, or choose another port with --port or"
        " [server] port"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_serve_port_and_host_override_the_config(workdir: Path, test_plugins_dir: Path) -> None:
    """``--port`` and ``--host`` win over ``[server]``: the taken port named on the command
    line is the one refused, not the config's free one."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            workdir, RECORDER, head=f'[server]\nhost = "::1"\nport = {free_port()}'
        )
        done = run_process(
            workdir,
            test_plugins_dir,
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; another process (another"
        " connector?) listens there: stop it, or choose another port with --port or"
        " [server] port"
    )


def test_serve_refuses_a_port_that_is_no_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--port", "80800"])
    assert exited.value.code == 2
    assert "argument --port: a port is a number from 1 to 65535, not '80800'" in (
        capsys.readouterr().err
    )


# --- embedded defaults and config discovery ------------------------------------------------


def test_load_without_a_config_uses_the_embedded_defaults(workdir: Path) -> None:
    config, host = cli.load(None)
    assert list(config.accounts) == ["012345"]
    account = config.accounts["012345"]
    assert account.token.get_secret_value() == DEMO_TOKEN
    assert list(account.integrations) == ["amocrm_stub"]
    assert account.integrations["amocrm_stub"].plugin == "amocrm_stub"
    assert account.integrations["amocrm_stub"].enabled is True
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.storage.path == workdir / "connector.db"
    assert config.warnings == [
        cli.NO_CONFIG_FILE.format(cwd=workdir),
        "accounts.012345.token: the demo token is public; set your own",
    ]
    # Only the plugins the config names are imported.
    assert set(host.types) == {"amocrm_stub"}


def test_check_without_a_config_checks_the_defaults_and_warns(workdir: Path, capsys) -> None:
    code, out, err = run(capsys, "check")
    assert code == EXIT_OK
    assert out.splitlines() == [
        "configuration: ok (the embedded demo defaults: no config file was read)",
        # In the current directory, as documented; only checking creates nothing.
        f"store: sqlite {workdir / 'connector.db'}: {WILL_BE_CREATED}",
        "012345/amocrm_stub [amocrm_stub]: ok (stub: nothing to authorise)",
    ]
    # Which file was read, first: a service started from the wrong folder runs on the demo.
    assert err.splitlines() == [
        f"warning: no config file (no --config, no $CONNECTOR_CONFIG, no connector.toml in"
        f" {workdir}): the embedded demo defaults, for trying only",
        "warning: accounts.012345.token: the demo token is public; set your own",
    ]
    assert not (workdir / "connector.db").exists()


def test_check_and_serve_name_a_store_folder_that_cannot_be_made(
    workdir: Path, test_plugins_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "data").write_text("a file where the store's folder should be")
    path = workdir / "data" / "connector.db"
    config = write_config(workdir, RECORDER)
    config.write_text(config.read_text().replace('"connector.db"', f'"{path}"'))
    code, out, _ = run(capsys, "check", "--config", str(config))
    assert code == 1
    assert f"error: storage.path: {path}: {workdir / 'data'} is not a folder" in out.splitlines()
    # The service says the same in one line, not a traceback.
    done = run_process(workdir, test_plugins_dir, "serve", "--config", str(config))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"the store cannot be used: {path}: unable to open database file;"
        " the folder must exist (or be creatable) and be writable by the user the service"
        " runs as, for the database and the -wal and -shm files SQLite keeps beside it"
    )


def test_config_is_found_in_env_then_current_directory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = write_config(workdir, AMOCRM)
    config, _ = cli.load(None)
    assert config.accounts[ACCOUNT].token.get_secret_value() == TOKEN
    assert config.warnings == []
    assert config.storage.path == local.parent / "connector.db"

    other = workdir / "elsewhere"
    other.mkdir()
    write_config(other, "", name="custom.toml")
    monkeypatch.setenv("CONNECTOR_CONFIG", str(other / "custom.toml"))
    config, _ = cli.load(None)
    assert config.accounts[ACCOUNT].integrations == {}
    assert config.storage.path == other / "connector.db"

    # --config wins over both.
    config, _ = cli.load(str(local))
    assert list(config.accounts[ACCOUNT].integrations) == ["amocrm_stub"]


def test_output_cut_short_by_a_pipe_ends_quietly() -> None:
    """`connector schema | true` (the reader gone first): no BrokenPipeError, exit 0."""
    import subprocess

    connector = Path(sys.executable).with_name("connector")
    reader = subprocess.run(
        f"'{connector}' schema | true; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        check=True,
    )
    assert reader.stderr == ""
    assert reader.stdout.strip() == "0"


@pytest.mark.parametrize(
    "argv",
    [["calls"], ["trace", "1717171717.1"], ["dlq", "list"], ["quarantine", "list"]],
)
def test_a_command_that_reads_the_store_names_a_missing_one_and_creates_nothing(
    workdir: Path, capsys, argv: list[str]
) -> None:
    write_config(workdir, AMOCRM)
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith(f"connector {argv[0]}: no store at {workdir / 'connector.db'}: ")
    assert "the service creates it when it starts" in err
    assert not (workdir / "connector.db").exists()
