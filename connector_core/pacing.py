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

**Completing work first.** Under a saturated budget the work that completes a call (the
ticket's owner, the call's comment, and what they wait for: a ticket still to be made) goes
ahead of the other calls' ring-time work, since a person waits for it and a lookup for a call
that is over helps nobody. The store hands the dispatcher the calls that hung up first
(``Store.due_heads``, ``DueHead.completes_call``); it starts them against the budget counting
only the completing calls already running (:func:`room_to_complete`: a hang-up does not wait
for ring-time calls to end), and runs each call's hooks under :func:`prioritised` with an
:class:`Urgency` that it raises when the call hangs up while its earlier hook still waits. A
rate limiter serves waiters by :func:`work_urgency` (the Usedesk one does); plugins pass
nothing by hand: it is a context variable every request and task of the hook call sees.

What bounds the ring-time work's wait: one call's rows run in order, so the completing work
that overtakes a ring-time row is that of calls that have hung up, one finish per call; and
a limiter serves a waiter overtaken a bounded number of times before any later arrival
(``plugins/usedesk/ratelimit.py``: ``max_overtaken``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, runtime_checkable

from connector_core.callstate import LifecycleKind

__all__ = [
    "COMPLETING_KEY",
    "Budget",
    "Paced",
    "Priority",
    "Urgency",
    "budget_of",
    "prioritised",
    "room_to_complete",
    "room_to_start",
    "work_urgency",
]


class Priority(IntEnum):
    """Which work goes first when several wait for the same CRM budget (higher first)."""

    ROUTINE = 0  # ring-time and mid-call work: lookups, creates
    COMPLETING = 1  # the work that completes a call: its owner and comment at hang-up


# The dispatch key of a call's ``finished`` row: the tracker names the record by its kind.
# The stores find the calls that hung up by it (``Store.due_heads``).
COMPLETING_KEY = LifecycleKind.FINISHED.value


@dataclass(frozen=True)
class Budget:
    """What an integration's CRM budget can serve soon.

    ``requests``: how many requests it would let through in the next ``within`` seconds
    (requests already waiting for it not subtracted). ``more_in``: seconds until that figure
    grows, when it is smaller than the budget's maximum (0 when it cannot grow by waiting).
    """

    requests: int
    more_in: float = 0.0


@dataclass(eq=False)
class Urgency:
    """The priority of one call's work, read live: the dispatcher raises it while the work
    waits (a ring-time hook still queued when its call hangs up), and a rate limiter serves
    its waiters by what it is when a slot frees, told at once of a raise (:meth:`watch`)."""

    priority: Priority = Priority.ROUTINE
    _watchers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def raise_to(self, priority: Priority) -> None:
        """Raise the priority (never lower it) and tell the watchers."""
        if priority > self.priority:
            self.priority = priority
            for watcher in list(self._watchers):
                watcher()

    @contextmanager
    def watch(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call ``callback`` on each raise while the body runs (a waiter in a limiter)."""
        self._watchers.append(callback)
        try:
            yield
        finally:
            self._watchers.remove(callback)


_urgency: ContextVar[Urgency | None] = ContextVar("connector_work_urgency", default=None)


def work_urgency() -> Urgency:
    """The urgency of the work running now (a routine one outside :func:`prioritised`)."""
    return _urgency.get() or Urgency()


@contextmanager
def prioritised(urgency: Urgency) -> Iterator[None]:
    """Run the body (and the tasks it starts) with ``urgency``."""
    token = _urgency.set(urgency)
    try:
        yield
    finally:
        _urgency.reset(token)


@runtime_checkable
class Paced(Protocol):
    """A runtime that tells the dispatcher its CRM budget (see the module's docstring)."""

    def crm_budget(self, within: float) -> Budget:
        """The budget's room over the next ``within`` seconds. Cheap: called on every scan."""
        ...


def budget_of(runtime: object, within: float) -> Budget | None:
    """The runtime's budget, or ``None`` when it does not report one."""
    # What ``isinstance(runtime, Paced)`` decides, without its protocol walk on every scan.
    crm_budget = getattr(runtime, "crm_budget", None)
    if crm_budget is None or not callable(crm_budget):
        return None
    budget: Budget = crm_budget(within)
    return budget


def room_to_start(budget: Budget | None, running: int, cap: int) -> int:
    """How many more calls of an integration may start, with ``running`` already running."""
    limit = cap if budget is None else min(cap, budget.requests)
    return max(0, limit - running)


def room_to_complete(budget: Budget | None, completing: int, running: int, cap: int) -> int:
    """How many more calls' completing work may start, with ``completing`` of the ``running``
    calls running theirs: paced against the completing work alone, since it overtakes the
    rest at the limiter; the fixed ``cap`` on all running calls still holds."""
    return min(room_to_start(budget, completing, cap), max(0, cap - running))
