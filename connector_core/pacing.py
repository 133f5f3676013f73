"""How fast an integration's CRM lets work through, told to the dispatcher.

A CRM with a rate limit serves a burst of calls at its own pace whatever the core does; a hook
call started long before the budget can serve it only waits, holding its call's state, and
pushes the calls ahead of it further back. So the dispatcher starts an integration's work at
the pace its budget allows, when the integration's runtime says what that pace is.

A runtime (what the integration type's factory returned) opts in by having a method
``crm_budget(within: float) -> Budget`` (the :class:`Paced` protocol). The dispatcher then
keeps at most ``Budget.requests`` of the integration's calls running at once, counting each
running call as one request of that budget: a plugin whose hooks send their requests one
after another (as most do) then never has more requests waiting than the budget serves
within ``within`` seconds. When the budget has no room, the dispatcher looks again after
``Budget.more_in`` seconds, or as soon as a running call finishes. A runtime without the
method is not paced (the dispatcher's fixed cap on running calls still applies).

The Usedesk plugin's runtime reports its rate limiter's figures
(``plugins/usedesk/ratelimit.py``, ``SlidingWindowLimiter.budget``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Budget", "Paced", "budget_of", "room_to_start"]


@dataclass(frozen=True)
class Budget:
    """What an integration's CRM budget can serve soon.

    ``requests``: how many requests it would let through in the next ``within`` seconds
    (requests already waiting for it not subtracted). ``more_in``: seconds until that figure
    grows, when it is smaller than the budget's maximum (0 when it cannot grow by waiting).
    """

    requests: int
    more_in: float = 0.0


@runtime_checkable
class Paced(Protocol):
    """A runtime that tells the dispatcher its CRM budget (see the module's docstring)."""

    def crm_budget(self, within: float) -> Budget:
        """The budget's room over the next ``within`` seconds. Cheap: called on every scan."""
        ...


def budget_of(runtime: object, within: float) -> Budget | None:
    """The runtime's budget, or ``None`` when it does not report one."""
    if isinstance(runtime, Paced):
        return runtime.crm_budget(within)
    return None


def room_to_start(budget: Budget | None, running: int, cap: int) -> int:
    """How many more calls of an integration may start, with ``running`` already running."""
    limit = cap if budget is None else min(cap, budget.requests)
    return max(0, limit - running)
