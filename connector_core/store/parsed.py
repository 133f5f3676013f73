"""Call states parsed once per version: a state a store wrote or read is kept by its JSON.

The worker commits a call's state and the dispatcher reads it back at once (``group_work``),
once per integration; parsing the state (every event of the call) was the largest part of
the dispatcher's read. A state is read-only (``CallState`` is frozen), so the object the
worker wrote can be handed back for the same text.
"""

from __future__ import annotations

from connector_core.callstate import CallState
from connector_core.recent import Recent

# States kept: those between the worker's commit and the dispatcher's read. Few, since each
# holds every event of its call (about 15 KB): memory per open call must stay small.
KEPT = 64


class ParsedStates:
    """The last ``size`` states by their exact JSON text, most recently used last."""

    def __init__(self, size: int = KEPT) -> None:
        self._by_text: Recent[str, CallState] = Recent(size)

    def dumped(self, state: CallState) -> str:
        """``state`` as JSON, kept so that reading the same text back gives ``state``."""
        text = state.model_dump_json()
        self._by_text.put(text, state)
        return text

    def parse(self, text: str) -> CallState:
        """The state whose JSON is ``text``: the one kept for it, or parsed now and kept."""
        state = self._by_text.get(text)
        if state is None:
            state = CallState.model_validate_json(text)
            self._by_text.put(text, state)
        return state
