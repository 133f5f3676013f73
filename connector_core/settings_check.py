"""``connector check`` beyond the config file: do the settings name things that exist?

The plugin answers for its CRM (``connector_check_settings``: agents, groups…); the core
answers for what it owns itself: the ``schemes``/``transfer_schemes`` routing keys, compared
with the schemes the stored calls went through. Only an ``ERROR`` fails the check.
"""

from __future__ import annotations

import difflib

from connector_core.hooks import PluginHost
from connector_core.integrations import CheckFinding, CheckLevel, Integration, RoutingSettings
from connector_core.store.base import SeenScheme, Store


def scheme_findings(routing: RoutingSettings, seen: list[SeenScheme]) -> list[CheckFinding]:
    """A warning for each routing scheme entry that names no scheme any stored call went through.

    A scheme nobody has called through yet is not proof of a typo, hence a warning. With no
    scheme seen at all (a new install) nothing can be compared, and one line says so.
    """
    entries = [
        (f"{key}[{i}]", selector)
        for key, selectors in (
            ("schemes", [] if routing.selects_all() else list(routing.schemes)),
            ("transfer_schemes", routing.transfer_schemes),
        )
        for i, selector in enumerate(selectors)
    ]
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
    findings = []
    for setting, selector in entries:
        if any(s.matches(selector) for s in seen):
            continue
        close = difflib.get_close_matches(selector, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        findings.append(
            CheckFinding(
                CheckLevel.WARNING,
                f"'{selector}' is no scheme the stored calls went through{hint} (a scheme is"
                f" named by its number or its exact name; seen: {known})",
                setting,
            )
        )
    return findings


def _label(scheme: SeenScheme) -> str:
    if scheme.id and scheme.name:
        return f"{scheme.id} «{scheme.name}»"
    return f"«{scheme.name}»" if scheme.name else str(scheme.id)


async def check_settings(
    host: PluginHost, integration: Integration, store: Store
) -> list[CheckFinding]:
    """The plugin's findings about ``integration``, then the core's about its schemes.

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
