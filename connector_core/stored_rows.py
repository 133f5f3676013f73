"""Which dispatch rows of a call this process has stored, so the worker sends only new ones.

The router proposes every row a call is owed on each of its events, and the store ignores the
ones it has (``Store.commit_event``); each ignored row still costs a unique-index probe, its
record's JSON, and the dispatcher a wake-up for no new work. The worker leaves out the rows
this process has committed for the call: they are in the store, since rows are only ever
deleted with their call, and a call that is not in the store (new, pruned, forgotten) starts
with none known (:meth:`StoredRows.forget`). Bounded: the calls seen last are kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from connector_core.recent import Recent
from connector_core.store.base import NewDispatch

# Calls whose stored rows are remembered: more than a busy line has in progress at once.
# Beyond them a call's rows are sent again and the store ignores the ones it has, as it
# always may; a larger memory is RAM every open call costs (bench.memory).
MAX_CALLS = 1_000

CallKey = tuple[str, str]  # (account, call_id)


class StoredRows:
    """The (integration, record id) of each row committed per call, for the latest calls."""

    def __init__(self, max_calls: int = MAX_CALLS) -> None:
        self._rows: Recent[CallKey, set[tuple[str, str]]] = Recent(max_calls)

    def new(self, call: CallKey, proposed: list[NewDispatch]) -> list[NewDispatch]:
        """The rows of ``proposed`` not known to be stored for ``call``, in order."""
        known = self._rows.get(call)
        if not known:
            return proposed
        return [d for d in proposed if (d.integration, d.key) not in known]

    def stored(self, call: CallKey, rows: Iterable[NewDispatch]) -> None:
        """``rows`` of ``call`` were committed (or were there already)."""
        known = self._rows.get(call)
        if known is None:
            known = set()
            self._rows.put(call, known)
        known.update((d.integration, d.key) for d in rows)

    def forget(self, call: CallKey) -> None:
        """``call`` is not in the store (or is to be routed afresh): no row of it is known."""
        self._rows.pop(call)
