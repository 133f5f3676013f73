"""Every string the console shows comes from one table, in Russian and in English.

The keys are collected from the templates (``t('…')``), from the console's Python modules
(string constants shaped like a key) and from the enums whose values pick a key
(``t('outcome.' ~ row.outcome)``); each must be in the table with both texts, and the table
holds no key nothing uses.
"""

from __future__ import annotations

import ast
import re
from importlib.resources import files

from connector_core.callrecords import HookOutcome
from connector_core.callstate import Direction, Outcome
from connector_core.console.filters import Period
from connector_core.console.i18n import LANGUAGES, TEXT, translator
from connector_core.events import EventType
from connector_core.integrations import AuthStatus
from connector_core.store.base import DeliveryStatus

PACKAGE = files("connector_core.console")
TEMPLATE_KEY = re.compile(r"""\bt\(\s*'([a-z_]+\.[a-z0-9_]+)'\s*\)""")
DYNAMIC = re.compile(r"""\bt\(\s*'([a-z_]+)\.'\s*~""")
FAMILIES: dict[str, list[str]] = {
    "outcome": [o.value for o in Outcome],
    "direction": [d.value for d in Direction],
    "hook": [s.value for s in DeliveryStatus],
    "attempt": [o.value for o in HookOutcome],
    "event": [e.name.lower() for e in EventType] + ["unreadable"],  # RawEvent.event_name
    "period": [p.value for p in Period],
    "auth": [a.value for a in AuthStatus],
    "inbox": ["pending", "done", "quarantined", "dropped"],
    "finished": ["hangup", "timeout", "open"],
}


def templates() -> dict[str, str]:
    return {
        f.name: f.read_text(encoding="utf-8") for f in PACKAGE.iterdir() if f.name.endswith(".html")
    }


def python_keys() -> set[str]:
    namespaces = {key.split(".")[0] for key in TEXT}
    found = set()
    for module in PACKAGE.iterdir():
        if not module.name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if (
                    re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", text)
                    and text.split(".")[0] in namespaces
                    and not text.endswith(("html", "css", "js"))
                ):
                    found.add(text)
    return found


def used_keys() -> set[str]:
    keys = python_keys()
    for text in templates().values():
        keys |= set(TEMPLATE_KEY.findall(text))
        for family in DYNAMIC.findall(text):
            assert family in FAMILIES, f"t('{family}.' ~ …): add the family to FAMILIES"
            keys |= {f"{family}.{value}" for value in FAMILIES[family]}
    return keys


def test_every_key_the_pages_use_has_a_russian_and_an_english_text() -> None:
    keys = used_keys()
    assert len(keys) > 150
    missing = sorted(keys - set(TEXT))
    assert missing == []
    for key in keys:
        russian, english = TEXT[key]
        assert russian.strip() and english.strip(), key
        assert not re.search(r"[А-Яа-яЁё]", english), key


def test_the_table_holds_no_string_nothing_uses() -> None:
    assert sorted(set(TEXT) - used_keys()) == []


def test_russian_is_first_and_an_unknown_key_is_an_error_not_a_blank() -> None:
    assert LANGUAGES == ("ru", "en")
    assert translator("ru")("nav.calls") == "Звонки"
    assert translator("en")("nav.calls") == "Calls"
    try:
        translator("ru")("nav.nothing")
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown key must fail loudly")


def test_templates_contain_no_text_outside_the_table() -> None:
    """Between tags, a template has only expressions, punctuation and symbols: no words."""
    for name, text in templates().items():
        plain = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|<[^>]+>", " ", text, flags=re.DOTALL)
        words = re.findall(r"[A-Za-zА-Яа-яЁё]{3,}", plain)
        assert words == [] or set(words) <= {"connector"}, (name, words)
