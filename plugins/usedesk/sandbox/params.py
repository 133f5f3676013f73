"""Request parameters as Usedesk (a PHP application) sees them, whatever the body encoding.

JSON, form-encoded and query-string requests all reach the handlers as one dict, with PHP's
bracket syntax (``emails[]=a``, ``fassigned[assignee_id]=5``) decoded into lists and dicts,
so each handler validates one shape only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY_PART = re.compile(r"\[([^\]]*)\]")
_TRUE = {"1", "true", "on", "yes"}


class ApiError(Exception):
    """A refusal Usedesk reports as HTTP 200 with an ``error`` key (usedesk-api.md §5 #13)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode_form(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode PHP-style form fields; a plain repeated key keeps the last value, as PHP does."""
    root: dict[str, Any] = {}
    for key, value in items:
        base, _, rest = key.partition("[")
        if not rest:
            root[key] = value
            continue
        parts = [base, *_KEY_PART.findall("[" + rest)]
        node = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return {k: _listify(v) for k, v in root.items()}


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v) for k, v in value.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ApiError(f"The {name} must be an integer.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ApiError(f"The {name} must be an integer.")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE


class Params:
    """Typed access to one request's parameters; every getter raises ApiError on bad input."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def given(self, key: str) -> bool:
        """Present with a usable value: form clients send empty fields they mean to omit."""
        return key in self.data and not is_blank(self.data[key])

    def req_str(self, key: str) -> str:
        value = self.data.get(key)
        if is_blank(value) or isinstance(value, dict | list):
            raise ApiError(f"The {key} field is required.")
        return str(value)

    def opt_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if is_blank(value):
            return None
        if isinstance(value, dict | list):
            raise ApiError(f"The {key} must be a string.")
        return str(value)

    def req_int(self, key: str) -> int:
        if not self.given(key):
            raise ApiError(f"The {key} field is required.")
        return as_int(key, self.data[key])

    def opt_int(self, key: str) -> int | None:
        return as_int(key, self.data[key]) if self.given(key) else None

    def opt_bool(self, key: str) -> bool:
        return as_bool(self.data.get(key))

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.opt_str(key)
        if value is None:
            return default
        if value not in allowed:
            raise ApiError(f"The selected {key} is invalid.")
        return value

    def csv(self, key: str) -> list[str] | None:
        """A comma-separated filter ("1,5,8" or "a, b"); a JSON list is taken as is."""
        value = self.data.get(key)
        if is_blank(value):
            return None
        if isinstance(value, list):
            items = [str(v).strip() for v in value]
        elif isinstance(value, str | int):
            items = [part.strip() for part in str(value).split(",")]
        else:
            raise ApiError(f"The {key} must be a string.")
        return [item for item in items if item]

    def str_list(self, key: str) -> list[str]:
        """An array field such as ``emails``; a lone string is taken as a one-item array."""
        value = self.data.get(key)
        if is_blank(value):
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v for v in value if v.strip()]
        raise ApiError(f"The {key} must be an array.")

    def page(self) -> int:
        """``offset`` is a page index and may be omitted but not null (usedesk-api.md §1.5)."""
        if "offset" not in self.data:
            return 0
        value = self.data["offset"]
        if is_blank(value) or value == "null":
            raise ApiError("The offset field can not be null.")
        page = as_int("offset", value)
        if page < 0:
            raise ApiError("The offset must be at least 0.")
        return page
