"""A map that keeps only its most recently used entries: the bounded memories of the service.

Each of them (the parsed call states, the lifecycle records of the last states, the dispatch
rows stored per call, the console's sessions) must not grow with the calls or logins it has
seen, and the oldest entry is the one least likely to be wanted again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Up to ``size`` entries; reading or writing one makes it the most recent, and a write
    beyond ``size`` lets the least recent go."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.size:  # one entry was added at most
            entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)
