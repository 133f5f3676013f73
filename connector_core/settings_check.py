"""``connector check`` beyond the config file: do the settings name things that exist?

The plugin answers for its CRM (``connector_check_settings``: agents, groups…); the core
answers for what it owns itself: the ``schemes``/``transfer_schemes`` routing keys, compared
with the schemes the stored calls went through, or, when the account has a
``sipuni_api_key``, with the schemes Sipuni itself lists (``schema/list``). Only an ``ERROR``
fails the check.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from connector_core.config import AccountConfig
from connector_core.errors import CrmError
from connector_core.hooks import PluginHost
from connector_core.integrations import CheckFinding, CheckLevel, Integration, RoutingSettings
from connector_core.sipuni_api import SipuniApi, SipuniScheme
from connector_core.store.base import SeenScheme, Store

# The schemes are read when a person waits for them (check, the setup page): a slow Sipuni
# must not hold either for long.
SCHEMES_TIMEOUT = 10.0


def _entries(routing: RoutingSettings) -> list[tuple[str, str]]:
    """Each scheme selector of ``routing`` with the setting it is in (``schemes[0]``…)."""
    return [
        (f"{key}[{i}]", selector)
        for key, selectors in (
            ("schemes", [] if routing.selects_all() else list(routing.schemes)),
            ("transfer_schemes", routing.transfer_schemes),
        )
        for i, selector in enumerate(selectors)
    ]


def scheme_findings(routing: RoutingSettings, seen: list[SeenScheme]) -> list[CheckFinding]:
    """A warning for each routing scheme entry that names no scheme any stored call went through.

    A scheme nobody has called through yet is not proof of a typo, hence a warning. With no
    scheme seen at all (a new install) nothing can be compared, and one line says so.
    """
    entries = _entries(routing)
    if not entries:
        return []
    if not seen:
        return [
            CheckFinding(
                CheckLevel.INFO,
                "no stored call went through a scheme yet, so the scheme names in `schemes`"
                " and `transfer_schemes` cannot be compared with real ones",
            )
        ]
    names = [s.name for s in seen if s.name] + [s.id for s in seen if s.id]
    known = ", ".join(_label(s) for s in seen)
    return [
        CheckFinding(
            CheckLevel.WARNING,
            f"'{selector}' is no scheme the stored calls went through"
            f"{'; ' + _did_you_mean(close) if close else ''} (a scheme is"
            f" named by its number or its exact name; seen: {known})",
            setting,
        )
        for setting, selector, close in _unmatched(entries, seen, names)
    ]


def _did_you_mean(close: str) -> str:
    return f"did you mean '{close}'?"


def _unmatched(
    entries: list[tuple[str, str]],
    schemes: Sequence[SeenScheme | SipuniScheme],
    names: list[str],
) -> list[tuple[str, str, str | None]]:
    """(setting, selector, the closest of ``names``) for each entry no scheme matches."""
    return [
        (setting, selector, next(iter(difflib.get_close_matches(selector, names, n=1)), None))
        for setting, selector in entries
        if not any(s.matches(selector) for s in schemes)
    ]


@dataclass(frozen=True)
class SipuniSchemes:
    """What reading an account's schemes from Sipuni gave: the schemes, or why there are none
    (``problem``: the read failed, an error; ``skipped``: it was not tried)."""

    schemes: list[SipuniScheme] | None = None
    problem: str | None = None
    skipped: str | None = None

    @property
    def copy_line(self) -> str:
        """``schemes = [...]`` with every scheme's name, ready to paste into the config."""
        names = list(dict.fromkeys(s.name for s in self.schemes or []))
        return "schemes = " + json.dumps(names, ensure_ascii=False)


async def read_sipuni_schemes(account: AccountConfig) -> SipuniSchemes:
    """The account's schemes from Sipuni's ``schema/list``, never raising: without a key the
    read is skipped, and a failure is a message an operator can act on (never the key)."""
    if account.sipuni_api_key is None:
        return SipuniSchemes(
            skipped=f"accounts.{account.number}.sipuni_api_key is not set, so the schemes"
            " were not compared with Sipuni's own list (docs/sipuni.md says where the key is)"
        )
    api = SipuniApi.of_account(account, timeout=SCHEMES_TIMEOUT)
    assert api is not None  # the key is set
    try:
        async with api:
            return SipuniSchemes(schemes=await api.schemes())
    except CrmError as exc:
        return SipuniSchemes(problem=f"{type(exc).__name__}: {exc.message}")


@dataclass(frozen=True)
class UnknownScheme:
    """A routing entry naming no scheme Sipuni has: its setting (``schemes[1]``), the entry,
    and the closest of Sipuni's names, if any."""

    setting: str
    selector: str
    close: str | None


def schemes_sipuni_lacks(
    routing: RoutingSettings, sipuni: Sequence[SipuniScheme]
) -> list[UnknownScheme]:
    """The entries of ``schemes`` / ``transfer_schemes`` that match none of Sipuni's schemes."""
    names = [s.name for s in sipuni]
    return [UnknownScheme(*found) for found in _unmatched(_entries(routing), sipuni, names)]


def sipuni_scheme_findings(
    routing: RoutingSettings, sipuni: Sequence[SipuniScheme], copy_line: str
) -> list[CheckFinding]:
    """An error for each routing scheme entry that names no scheme Sipuni has.

    Sipuni's list is the truth (unlike the schemes stored calls went through), so a miss is
    an error: that entry can never match a call.
    """
    labels = ", ".join(f"«{s.name}» ({s.tree_number})" for s in sipuni) or "none"
    return [
        CheckFinding(
            CheckLevel.ERROR,
            f"Sipuni has no scheme '{u.selector}'; "
            f"{_did_you_mean(u.close) + ' ' if u.close else ''}"
            f"Sipuni's schemes: {labels}; to copy: {copy_line}",
            u.setting,
        )
        for u in schemes_sipuni_lacks(routing, sipuni)
    ]


def _label(scheme: SeenScheme) -> str:
    if scheme.id and scheme.name:
        return f"{scheme.id} «{scheme.name}»"
    return f"«{scheme.name}»" if scheme.name else str(scheme.id)


async def check_settings(
    host: PluginHost,
    integration: Integration,
    store: Store,
    sipuni: SipuniSchemes | None = None,
) -> list[CheckFinding]:
    """The plugin's findings about ``integration``, then the core's about its schemes:
    compared with Sipuni's list when ``sipuni`` holds it, else with the stored calls'.

    A plugin check that raises or hangs is itself an error finding (with the exception's type
    only: its text could hold a secret), so one broken plugin cannot hide the others.
    """
    try:
        findings = await host.check_settings(integration)
    except TimeoutError:
        findings = [
            CheckFinding(
                CheckLevel.ERROR,
                "the settings check did not finish in hook_timeout_seconds "
                f"({integration.routing.hook_timeout_seconds:g} s)",
            )
        ]
    except Exception as exc:
        findings = [
            CheckFinding(CheckLevel.ERROR, f"the settings check raised {type(exc).__name__}")
        ]
    if sipuni is not None and sipuni.schemes is not None:
        return findings + sipuni_scheme_findings(
            integration.routing, sipuni.schemes, sipuni.copy_line
        )
    if sipuni is not None and sipuni.skipped is not None and _entries(integration.routing):
        findings = [*findings, CheckFinding(CheckLevel.INFO, sipuni.skipped)]
    seen = await store.seen_schemes(integration.account)
    return findings + scheme_findings(integration.routing, seen)


def describe(integration: Integration, finding: CheckFinding) -> str:
    """The line a person reads: level, the setting's full config path, the message."""
    where = f"accounts.{integration.account}.integrations.{integration.name}"
    if finding.setting:
        where = f"{where}.{finding.setting}"
    if finding.level is CheckLevel.INFO:
        return f"{where}: {finding.message}" if finding.setting else finding.message
    return f"{finding.level.value}: {where}: {finding.message}"
