"""Call states parsed once per version: a state a store wrote or read is kept by its JSON.

The worker commits a call's state and the dispatcher reads it back at once (``group_work``),
once per integration; parsing the state (every event of the call) was the largest part of
the dispatcher's read. A state is read-only (``CallState`` is frozen), so the object the
worker wrote can be handed back for the same text.

Writing is the other half: a call's state is written on each of its events, and most of its
JSON is the events, which the call's previous write already serialised. Each event is
serialised once (while its call is among the last written) and the state's text is put
together around those texts, byte for byte the text ``model_dump_json`` gives.
"""

from __future__ import annotations

from connector_core.callstate import CallState
from connector_core.events import SipuniEvent
from connector_core.recent import Recent

# States kept: those between the worker's commit and the dispatcher's read. Few, since each
# holds every event of its call (about 15 KB): memory per open call must stay small.
KEPT = 64
# Calls whose events' texts are kept for their next write, as many as states: each is the JSON
# of the call's events (a few KB). A call beyond them has its events serialised again.
EVENTS_KEPT = KEPT

_EVENTS = {"events"}
# What follows the events in a state's JSON. Not to be found inside a text before it: a quote
# in a JSON string is escaped, so there it follows a backslash, never a comma.
_AFTER_EVENTS = ',"emitted":'
_serializer = CallState.__pydantic_serializer__


class ParsedStates:
    """The last ``size`` states by their exact JSON text, most recently used last."""

    def __init__(self, size: int = KEPT) -> None:
        self._by_text: Recent[str, CallState] = Recent(size)
        # Per call, the events last written and their texts, in order.
        self._events: Recent[tuple[str, str], tuple[tuple[SipuniEvent, ...], list[str]]] = Recent(
            EVENTS_KEPT
        )

    def dumped(self, state: CallState) -> str:
        """``state`` as JSON, kept so that reading the same text back gives ``state``."""
        text = self._json(state)
        self._by_text.put(text, state)
        return text

    def _json(self, state: CallState) -> str:
        """``state.model_dump_json()``, with the texts of events written before reused."""
        texts = self._event_texts((state.account, state.call_id), state.events)
        rest = _serializer.to_json(state, exclude=_EVENTS).decode()
        at = rest.index(_AFTER_EVENTS)
        return f'{rest[:at]},"events":[{",".join(texts)}]{rest[at:]}'

    def _event_texts(self, call: tuple[str, str], events: tuple[SipuniEvent, ...]) -> list[str]:
        known = self._events.get(call)
        if known is not None and known[0] is events:
            return known[1]
        if known is not None and len(events) == len(known[0]) + 1 and events[:-1] == known[0]:
            # The usual case: the new event came last. (Comparing the tuples compares the
            # events by identity first, so it costs no field comparison when they are the
            # very objects written before.)
            texts = [*known[1], events[-1].model_dump_json()]
        else:
            # Events are frozen: an event object written before has the same text. The old
            # tuple, kept alive in ``known``, keeps the ids valid.
            before = {id(e): t for e, t in zip(*known, strict=True)} if known else {}
            texts = [before.get(id(e)) or e.model_dump_json() for e in events]
        self._events.put(call, (events, texts))
        return texts

    def parse(self, text: str) -> CallState:
        """The state whose JSON is ``text``: the one kept for it, or parsed now and kept."""
        state = self._by_text.get(text)
        if state is None:
            state = CallState.model_validate_json(text)
            self._by_text.put(text, state)
        return state
