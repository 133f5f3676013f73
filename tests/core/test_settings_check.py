"""The core's own settings check: routing scheme names compared with the schemes seen.

Pure logic (``settings_check.scheme_findings``); tests/e2e/test_usedesk_check.py runs it
through ``connector check`` over calls stored by ``connector replay``.
"""

from __future__ import annotations

from connector_core.integrations import CheckFinding, CheckLevel, RoutingSettings
from connector_core.settings_check import scheme_findings
from connector_core.store.base import SeenScheme

SEEN = [SeenScheme("000-100", "Распределитель"), SeenScheme("000-200", None)]


def routing(**keys: object) -> RoutingSettings:
    return RoutingSettings.model_validate(keys)


def test_a_scheme_named_by_its_number_or_its_name_is_known() -> None:
    found = scheme_findings(
        routing(schemes=["000-100", "Распределитель"], transfer_schemes=["000-200"]), SEEN
    )
    assert found == []


def test_all_schemes_and_no_transfer_schemes_need_no_comparison() -> None:
    assert scheme_findings(routing(), []) == []
    assert scheme_findings(routing(), SEEN) == []


def test_each_unknown_entry_is_a_warning_naming_its_key_and_what_was_seen() -> None:
    found = scheme_findings(routing(schemes=["000-100", "000-201"], transfer_schemes=["X"]), SEEN)
    seen = "seen: 000-100 «Распределитель», 000-200"
    assert found == [
        CheckFinding(
            CheckLevel.WARNING,
            "'000-201' is no scheme the stored calls went through; did you mean '000-200'?"
            f" (a scheme is named by its number or its exact name; {seen})",
            "schemes[1]",
        ),
        CheckFinding(
            CheckLevel.WARNING,
            "'X' is no scheme the stored calls went through (a scheme is named by its number"
            f" or its exact name; {seen})",
            "transfer_schemes[0]",
        ),
    ]


def test_with_no_scheme_seen_one_line_says_nothing_could_be_compared() -> None:
    [finding] = scheme_findings(routing(transfer_schemes=["Продажи"]), [])
    assert finding.level is CheckLevel.INFO
    assert "cannot be compared" in finding.message
