"""Retention's pure part (what is old, given the time and the settings), its settings, and
``connector prune`` on a store written by ``connector replay``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_core.config import RetentionConfig, parse_config_text
from connector_core.errors import ConfigError
from connector_core.retention import DAY, PruneReport, cutoffs, is_old
from connector_core.simulator import scenarios
from connector_core.store.pruning import PRUNE_RULES, Period
from tests.core.test_cli import AMOCRM, run, write_config

NOW = 1_800_000_000.0
SETTINGS = RetentionConfig(calls_days=30, inbox_days=7)


def test_a_row_is_old_once_its_period_has_passed() -> None:
    assert is_old(NOW - 30 * DAY - 1, Period.CALLS, NOW, SETTINGS)
    assert not is_old(NOW - 30 * DAY + 1, Period.CALLS, NOW, SETTINGS)
    assert is_old(NOW - 8 * DAY, Period.INBOX, NOW, SETTINGS)
    assert not is_old(NOW - 8 * DAY, Period.CALLS, NOW, SETTINGS)


def test_each_rule_gets_the_cutoff_of_its_period() -> None:
    found = cutoffs(NOW, RetentionConfig(calls_days=0.5, inbox_days=2))
    assert found["calls"] == NOW - 0.5 * DAY
    assert found["inbox"] == NOW - 2 * DAY
    assert found["inbox_quarantined"] == NOW - 0.5 * DAY  # an operator's: the longer wait
    assert set(found) == {rule.name for rule in PRUNE_RULES}


def test_the_report_names_what_went() -> None:
    report = PruneReport({"inbox": 1000, "rejected": 0, "calls": 200})
    assert report.summary() == "pruned 1200 rows: inbox 1000, calls 200"
    assert PruneReport({"inbox": 0}, dry_run=True).summary() == "would prune 0 rows"


def test_defaults_keep_calls_a_month_and_webhooks_a_week() -> None:
    config = parse_config_text('[accounts.012345]\ntoken = "abcdefghijklmnop-1"\n', types={})
    assert config.retention == SETTINGS
    assert config.retention.enabled and config.retention.batch_size == 500


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "calls_days = 0",
            "retention.calls_days: must be more than 0 days, not 0; to keep everything for"
            " ever, set [retention] enabled = false",
        ),
        (
            "inbox_days = -7",
            "retention.inbox_days: must be more than 0 days, not -7; to keep everything for"
            " ever, set [retention] enabled = false",
        ),
        ("batch_size = 0", "retention.batch_size: Input should be greater than or equal to 1"),
        ("forever = true", "retention.forever: unknown key"),
    ],
)
def test_a_bad_retention_setting_says_what_to_write(line: str, error: str) -> None:
    text = f'[retention]\n{line}\n[accounts.012345]\ntoken = "abcdefghijklmnop-1"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, types={})
    assert caught.value.errors[0].startswith(error), caught.value.errors


# -- connector prune ---------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    yield tmp_path


def test_prune_prints_what_it_deletes_per_table(workdir: Path, capsys) -> None:
    # Calls kept 0.1 s: the call replayed is old by the time prune runs.
    write_config(workdir, AMOCRM, head=f"[retention]\ncalls_days = {0.1 / DAY}")
    lines = [
        json.dumps({"account": "012345", "params": p}) for p in scenarios.inbound_missed().events
    ]
    (workdir / "calls.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(capsys, "replay", "calls.jsonl")[0] == 0
    time.sleep(0.2)

    code, out, _ = run(capsys, "prune", "--dry-run")
    assert code == 0
    assert out.splitlines()[:2] == [
        f"retention: calls {0.1 / DAY:g} days, inbox 7 days, 500 rows per batch",
        "would delete (rows per table):",
    ]
    assert "  calls              1" in out.splitlines()

    code, out, _ = run(capsys, "prune")
    assert code == 0
    assert "deleted (rows per table):" in out
    assert "  calls              1" in out.splitlines()
    assert "  inbox              0" in out.splitlines()  # received just now: kept a week
    assert run(capsys, "calls")[1] == "no stored call matches\n"
    assert "  calls              0" in run(capsys, "prune")[1].splitlines()


def test_prune_with_retention_off_deletes_nothing_and_says_so(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM, head="[retention]\nenabled = false")
    code, out, err = run(capsys, "prune")
    assert code == 1 and out == ""
    assert err.startswith("connector prune: retention is off ([retention] enabled = false)")


def test_prune_before_the_store_exists_creates_nothing(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM)
    code, out, _ = run(capsys, "prune", "--dry-run")
    assert code == 0
    assert (
        out == f"connector prune: no store at {workdir / 'connector.db'} yet: nothing to delete\n"
    )
    assert not (workdir / "connector.db").exists()
