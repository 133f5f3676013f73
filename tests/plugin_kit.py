"""Throwaway plugins installed through a real entry point, for tests of the plugin host.

``install_test_plugins(root)`` writes a package and a ``*.dist-info`` folder with an
``entry_points.txt`` into ``root``; with ``root`` on ``sys.path`` (or ``PYTHONPATH`` for a
subprocess), ``importlib.metadata`` finds the plugins exactly as it finds installed ones.
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path
from types import ModuleType

RECORDER = '''
"""Records every hook call in the store, so tests (and a restarted process) can read them."""
import asyncio
import os
from typing import Any
from pydantic import BaseModel, ConfigDict
from connector_core import hookimpl
from connector_core.integrations import AuthResult, AuthStatus, IntegrationType

CALLS: list[tuple[str, str, str, str]] = []  # (integration key, call id, hook, argument)
# Seconds each hook waits before it records: a test can kill the process while hooks run.
HOOK_SECONDS = float(os.environ.get("RECORDER_HOOK_SECONDS", "0"))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = ""


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("recorder", Settings))


async def _seen(integration, call, hook: str, arg: str = "", journal: str = "seen") -> None:
    if HOOK_SECONDS:
        await asyncio.sleep(HOOK_SECONDS)
    CALLS.append((integration.key, call.call_id, hook, arg))
    key = f"{journal}:{call.call_id}:{hook}:{arg}"
    if not await integration.effects.put(key, {"outcome": call.outcome.value}):
        # A second delivery of the same hook call: kept visible so tests can count it.
        n = 1
        while not await integration.effects.put(f"dup{n}:{key}", {}):
            n += 1


@hookimpl
def connector_check_authorization(integration):
    return AuthResult(AuthStatus.OK, "recorder")


@hookimpl
def connector_check_settings(integration):
    from connector_core.integrations import CheckFinding, CheckLevel
    label = integration.settings.label
    if label == "check-raises":
        raise RuntimeError("text that could hold a secret")
    if label == "check-answers-a-string":
        return "all good"
    if label == "check-warns":
        return [CheckFinding(CheckLevel.WARNING, "a label only tests use", "label")]
    return []


@hookimpl
async def connector_call_started(integration, call):
    await _seen(integration, call, "started")


@hookimpl
async def connector_call_answered(integration, call):
    await _seen(integration, call, "answered", call.first_answered_by or "")


@hookimpl
async def connector_call_transferred(integration, call, transfer):
    await _seen(integration, call, "transferred", transfer.to_extension)


@hookimpl
async def connector_call_entered_scheme(integration, call, scheme):
    await _seen(integration, call, "entered_scheme", scheme.key)


@hookimpl
async def connector_call_reached_transfer_scheme(integration, call, scheme):
    await _seen(integration, call, "reached_transfer_scheme", scheme.key)


@hookimpl
async def connector_call_finished(integration, call):
    await _seen(integration, call, "finished", call.outcome.value)


async def _missed(integration, call, hook: str, arg: str) -> None:
    # Kept apart from the calls' own hooks ("seen:"), which tests compare whole.
    await _seen(integration, call, hook, arg, journal="missed")


def _ids(calls) -> str:
    return ",".join(m.call_id for m in calls)


@hookimpl
async def connector_call_missed_again(integration, call, earlier):
    await _missed(integration, call, "missed_again", _ids(earlier))


@hookimpl
async def connector_call_called_back(integration, call, callback):
    await _missed(
        integration,
        call,
        "called_back",
        f"{_ids(callback.missed)}/{callback.by_extension}/{callback.after_seconds}",
    )


@hookimpl
async def connector_call_missed_overdue(integration, call, overdue):
    await _missed(integration, call, "missed_overdue", _ids(overdue.missed))


@hookimpl
def connector_agent_card(integration, call, extension):
    from connector_core.integrations import CardPart
    return CardPart(title=f"recorder {integration.name}", lines=[f"rings {extension}"],
                    links=[("call", f"https://crm.example/calls/{call.call_id}")])
'''

SABOTEUR = '''
"""A plugin that fails on purpose: raises, or hangs past its timeout."""
import asyncio
from typing import Literal
from pydantic import BaseModel, ConfigDict
from connector_core import hookimpl
from connector_core.integrations import IntegrationType

ATTEMPTS: list[str] = []


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["raise", "hang"] = "raise"


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("saboteur", Settings))


async def _fail(integration, call):
    ATTEMPTS.append(call.call_id)
    if integration.settings.mode == "hang":
        await asyncio.sleep(3600)
    raise RuntimeError("saboteur plugin fails on purpose")


@hookimpl
async def connector_call_started(integration, call):
    await _fail(integration, call)


@hookimpl
async def connector_call_finished(integration, call):
    await _fail(integration, call)


@hookimpl
def connector_check_authorization(integration):
    raise RuntimeError("the check itself is broken")
'''


def install_plugins(root: Path, package: str, modules: dict[str, str]) -> Path:
    """Write ``package`` (one module per plugin, source dedented) and its dist-info into
    ``root``, each module an entry point of the ``connector_core`` group under its name."""
    folder = root / package
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    dist = root / f"{package}-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[connector_core]\n" + "".join(f"{name} = {package}.{name}\n" for name in modules)
    )
    return root


def install_test_plugins(root: Path) -> Path:
    return install_plugins(
        root, "connector_test_plugins", {"recorder": RECORDER, "saboteur": SABOTEUR}
    )


def add_test_plugin(root: Path, name: str, source: str) -> ModuleType:
    """Add plugin ``name`` (module text ``source``) to the test plugins under ``root`` and
    import it: found through the entry point like the others."""
    (root / "connector_test_plugins" / f"{name}.py").write_text(source)
    entry_points = root / "connector_test_plugins-1.0.dist-info" / "entry_points.txt"
    if f"\n{name} = " not in entry_points.read_text():
        entry_points.write_text(
            entry_points.read_text() + f"{name} = connector_test_plugins.{name}\n"
        )
    return importlib.import_module(f"connector_test_plugins.{name}")
