"""aioresponses that works with aiohttp 3.14, for the API clients' tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
from aioresponses import aioresponses


class CompatResponse(aiohttp.ClientResponse):
    """aiohttp 3.14 made ``stream_writer`` a required argument and aioresponses 0.7.9 does not
    pass it (pnuckowski/aioresponses#289). A finished request only reads ``output_size`` from it.
    ``setdefault`` keeps this inert once aioresponses passes a real one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


class Mocked(aioresponses):
    """``aioresponses`` whose responses build on aiohttp 3.14."""

    def add(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", CompatResponse)
        super().add(*args, **kwargs)
