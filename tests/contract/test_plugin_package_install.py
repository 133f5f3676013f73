"""A CRM plugin published as its own package: pip installs it, and the service uses it.

The test writes a throwaway distribution (pyproject.toml with a ``connector_core`` entry
point, one module), installs it with pip into an empty ``--target`` folder, and runs the
real ``connector`` commands in subprocesses with that folder on ``PYTHONPATH``: ``plugins``
lists it, ``check`` refuses bad settings with their TOML paths and accepts good ones,
``serve`` calls its hooks for a call sent over HTTP, and ``journal`` reads back what they
recorded in the store.

Building offline: pip builds the wheel without network (``--no-index
--no-build-isolation``), so the build backend must already be importable. setuptools is
used when it can build wheels by itself (70.1 or later, or with ``wheel`` installed); the
venv of a plain ``python3 -m venv`` on Python 3.11 has setuptools 65 without ``wheel``, and
then the package carries a minimal in-tree PEP 517 backend (``backend-path``) instead. pip,
the wheel and its ``entry_points.txt`` are real either way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from connector_core.simulator import scenarios
from tests.e2e.process import ROOT, ServiceProcess, free_port

# Runs on SQLite and on PostgreSQL (tests/backends.py).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("on_store_backend")]

TOKEN = "throwaway-token-0123456789"
PLUGIN = "throwaway_crm"
VERSION = "0.3.1"

PLUGIN_SOURCE = '''
"""Throwaway CRM: a connector plugin shipped as its own distribution."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connector_core import hookimpl
from connector_core.integrations import AuthResult, AuthStatus, IntegrationType


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr = Field(description="the CRM's API key")
    board: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="board new calls go to")
    priority: Literal["low", "high"] = "low"


@hookimpl
def connector_register_integration_types(register):
    register(IntegrationType("throwaway_crm", Settings, description="Throwaway CRM: a journal"))


@hookimpl
def connector_check_authorization(integration):
    return AuthResult(AuthStatus.OK, f"board {integration.settings.board} reachable")


async def _journal(integration, call, hook):
    await integration.effects.put(
        f"journal:{call.call_id}:{hook}",
        {"hook": hook, "outcome": call.outcome.value, "board": integration.settings.board},
    )


@hookimpl
async def connector_call_started(integration, call):
    await _journal(integration, call, "started")


@hookimpl
async def connector_call_answered(integration, call):
    await _journal(integration, call, "answered")


@hookimpl
async def connector_call_finished(integration, call):
    await _journal(integration, call, "finished")
'''

PYPROJECT = """
[build-system]
{build_system}

[project]
name = "connector-throwaway-crm"
version = "{version}"
description = "Throwaway CRM plugin for connector"
requires-python = ">=3.11"
dependencies = ["connector"]

[project.entry-points.connector_core]
throwaway_crm = "throwaway_crm"
"""

SETUPTOOLS = (
    'requires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
    '\n[tool.setuptools]\npackages = ["throwaway_crm"]'
)
IN_TREE = 'requires = []\nbuild-backend = "wheel_backend"\nbackend-path = ["."]'

# A PEP 517 backend that is enough for pip: a pure-Python wheel of the throwaway_crm package.
WHEEL_BACKEND = """
import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    files = {p.relative_to(ROOT).as_posix(): p.read_bytes()
             for p in (ROOT / "throwaway_crm").rglob("*.py")}
    requires = "".join(f"Requires-Dist: {d}\\n" for d in project.get("dependencies", []))
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {version}\\n{requires}"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\\nGenerator: wheel_backend\\nRoot-Is-Purelib: true\\n"
        b"Tag: py3-none-any\\n"
    )
    files[f"{info}/entry_points.txt"] = "".join(
        f"[{group}]\\n" + "".join(f"{k} = {v}\\n" for k, v in items.items())
        for group, items in project.get("entry-points", {}).items()
    ).encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel
"""

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
[storage]
path = "{db}"
[tracker]
finish_settle_seconds = 0
[accounts.012345]
token = "{token}"
[accounts.012345.integrations.throwaway]
plugin = "throwaway_crm"
{settings}
"""


def setuptools_builds_wheels() -> bool:
    """True when setuptools can build a wheel here with no download (bdist_wheel available)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("setuptools")) >= Version("70.1")


def write_package(root: Path) -> tuple[Path, str]:
    package = root / "connector-throwaway-crm"
    (package / PLUGIN).mkdir(parents=True)
    (package / PLUGIN / "__init__.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    if setuptools_builds_wheels():
        backend, build_system = "setuptools", SETUPTOOLS
    else:
        backend, build_system = "in-tree", IN_TREE
        (package / "wheel_backend.py").write_text(textwrap.dedent(WHEEL_BACKEND))
    pyproject = textwrap.dedent(PYPROJECT).format(build_system=build_system, version=VERSION)
    (package / "pyproject.toml").write_text(pyproject)
    return package, backend


def connector(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``connector <args>`` with the plugin's install folder on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "connector_core", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_an_installed_plugin_package_is_discovered_validated_and_called(tmp_path: Path) -> None:
    package, backend = write_package(tmp_path)
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--target",
            str(site),
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pip.returncode == 0, f"pip ({backend} backend) failed:\n{pip.stdout}\n{pip.stderr}"
    dist = site / f"connector_throwaway_crm-{VERSION}.dist-info"
    assert (site / PLUGIN / "__init__.py").is_file()
    assert "throwaway_crm = throwaway_crm" in (dist / "entry_points.txt").read_text()
    # Nothing of the plugin is importable from the test's own environment: only via site/.
    assert importlib.util.find_spec(PLUGIN) is None

    # Discovered: `connector plugins` lists it with its version, hooks and settings.
    listed = connector(site, "plugins", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"{PLUGIN} {VERSION}  ({PLUGIN})" in listed.stdout
    assert f"integration type '{PLUGIN}', settings:" in listed.stdout
    as_json = json.loads(connector(site, "plugins", "--json", cwd=tmp_path).stdout)
    entry = next(e for e in as_json if e["name"] == PLUGIN)
    assert entry["version"] == VERSION and entry["error"] is None
    assert {"connector_call_started", "connector_call_finished"} <= set(entry["hooks"])
    assert set(entry["integration_types"][PLUGIN]["properties"]) == {"api_key", "board", "priority"}

    # Validated: bad settings are refused with their TOML paths (exit 2), good ones accepted.
    db = tmp_path / "connector.db"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        CONFIG.format(
            port=free_port(),
            db=db,
            token=TOKEN,
            settings=(
                'api_key = "tw-key-123456"\nboard = "Sales Board"\n'
                'priority = "urgent"\ncolour = "red"'
            ),
        )
    )
    refused = connector(site, "check", "--config", str(bad), cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    where = "accounts.012345.integrations.throwaway"
    for path in (f"{where}.board:", f"{where}.priority:", f"{where}.colour:"):
        assert path in refused.stderr, refused.stderr
    assert "tw-key-123456" not in refused.stdout + refused.stderr

    port = free_port()
    good = tmp_path / "connector.toml"
    good.write_text(
        CONFIG.format(
            port=port,
            db=db,
            token=TOKEN,
            settings=('api_key = "tw-key-123456"\nboard = "sales"\npriority = "high"'),
        )
    )
    accepted = connector(site, "check", "--config", str(good), cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert f"012345/throwaway [{PLUGIN}]: ok (board sales reachable)" in accepted.stdout

    # Called: a call sent over HTTP to the running service runs the plugin's hooks.
    service = ServiceProcess(good, pythonpath=[site], port=port)
    service.start()
    try:
        call = scenarios.inbound_answered()
        for params in call.events:
            url = f"{service.url}/sipuni/{TOKEN}?{urllib.parse.urlencode(params)}"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert json.loads(response.read()) == {"success": True}
        service.wait_until(
            lambda s: (
                s.get("calls_total") == 1
                and s.get("inbox_pending") == 0
                and s.get("dispatches_pending") == 0
            )
        )
    finally:
        assert service.stop() == 0, service.log_path.read_text()[-3000:]

    journal = connector(site, "journal", "throwaway", "--config", str(good), cwd=tmp_path)
    assert journal.returncode == 0, journal.stderr
    lines = journal.stdout.splitlines()
    for hook in ("started", "answered", "finished"):
        expected = f'012345/throwaway {call.call_id}:{hook} {{"hook": "{hook}", '
        assert any(line.startswith(expected) for line in lines), journal.stdout
    assert '"outcome": "answered", "board": "sales"' in lines[-1]
