"""Python values written as TOML: ``connector init`` writes a config, the test kit builds one.

The standard library reads TOML (``tomllib``) but does not write it; what the connector writes
is small (strings, numbers, booleans, lists, inline tables), so two functions do.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretBytes, SecretStr

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """``key`` bare when TOML allows it, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """``value`` written as TOML (strings, numbers, booleans, dates, lists, inline tables).

    ``None`` has no TOML spelling: keys whose value is ``None`` are left out of tables, so the
    setting takes its default. ``SecretStr`` values are written in clear (this is a config).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, SecretStr):
        return toml_value(value.get_secret_value())
    if isinstance(value, SecretBytes):
        return toml_value(value.get_secret_value().decode())
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        items = [f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value: {value!r}")
