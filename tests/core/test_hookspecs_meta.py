"""Every hook is documented in its docstring and in docs/hooks.md, and has a test.

A hook "has a test" when some test module defines ``test_hook_<name>`` (the hook name
without its ``connector_`` prefix): adding a hook without one fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from connector_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if name.startswith("connector_") and callable(fn) and hasattr(fn, "connector_core_spec")
)


def test_there_are_hooks() -> None:
    assert "connector_call_started" in HOOKS and len(HOOKS) >= 10


@pytest.mark.parametrize("name", HOOKS)
def test_hook_docstring_names_every_parameter(name: str) -> None:
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc.splitlines()) >= 3, f"{name} needs a docstring saying when it is called"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"{name}: docstring does not explain '{param}'"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_in_docs(name: str) -> None:
    text = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert name in sections, f"docs/hooks.md has no '## {name}' section"
    for param in inspect.signature(getattr(hookspecs, name)).parameters:
        assert f"`{param}`" in sections[name], f"docs/hooks.md: {name} does not explain {param}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    wanted = f"def test_hook_{name.removeprefix('connector_')}"
    found = [
        path
        for path in (ROOT / "tests").rglob("test_*.py")
        if wanted in path.read_text(encoding="utf-8")
    ]
    assert found, f"no test named {wanted.removeprefix('def ')}(…) for hook {name}"
