"""The CRM object a call made (a Usedesk ticket), as a link the console can show.

The core does not know how a CRM addresses its records; a plugin tells it through its
runtime, as it tells its rate budget (``connector_core.pacing``). A runtime (what the
integration type's factory returned) opts in with a method ``call_link(record) -> str | None``
(the :class:`Linking` protocol): ``record`` is what the plugin keeps under the effect key
``call:<call_id>`` (the core's convention for a call's links, see ``connector_core.forget``);
the method returns the address of the CRM object it names, or ``None``. It must not do I/O:
the calls page asks it for every row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["Linking", "link_of", "web_link"]

log = logging.getLogger(__name__)


@runtime_checkable
class Linking(Protocol):
    """A runtime that can name the CRM object a call's link record points at."""

    def call_link(self, record: Mapping[str, Any]) -> str | None:
        """The URL of the CRM object ``record`` (the ``call:<call_id>`` effect) names."""
        ...


def link_of(runtime: object, record: Mapping[str, Any] | None) -> str | None:
    """The runtime's link for ``record``; ``None`` when it has none, or gives none we may show.

    Only ``http(s)`` addresses are shown: a ``javascript:`` link would run in the console.
    A runtime whose method raises is logged and shown without a link.
    """
    if record is None or not isinstance(runtime, Linking):
        return None
    try:
        link = runtime.call_link(record)
    except Exception:
        log.exception("call_link of %s raised", type(runtime).__name__)
        return None
    return web_link(link)


def web_link(link: object) -> str | None:
    """``link`` if it is an ``http(s)`` address the console may show, else ``None``: a
    ``javascript:`` link, from a runtime or from a plugin's reported decision, would run in
    the console."""
    if isinstance(link, str) and link.startswith(("https://", "http://")):
        return link
    return None
