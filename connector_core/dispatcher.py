"""The dispatcher: runs due hook calls from the outbox, with retries and isolation.

Dispatch rows for one (integration, call) run one at a time in the order they were added,
so a call's ``finished`` never overtakes its ``started``; different integrations and
different calls run concurrently. A failing row blocks only the rows behind it for that
same integration and call, and is retried on a backoff schedule stored with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from connector_core import callrecords
from connector_core.callrecords import HookCall, HookOutcome, NewCallRecord
from connector_core.callstate import CallState
from connector_core.clock import Clock
from connector_core.cluster import Leases, dispatch_lease
from connector_core.errors import (
    AuthError,
    InvalidRequestError,
    RetryLater,
    TransientError,
    describe_error,
)
from connector_core.hooks import PluginHost
from connector_core.hooktime import waiting_for_turn
from connector_core.integrations import AuthResult, AuthStatus, Integration
from connector_core.logcontext import call_context
from connector_core.pacing import (
    COMPLETING_KEY,
    Priority,
    Urgency,
    budget_of,
    prioritised,
    room_to_complete,
    room_to_start,
)
from connector_core.store.base import Dispatch, GroupWork, Store, is_store_failure

log = logging.getLogger(__name__)
BUSY_SCAN_ROWS = 200  # pending rows a scan found above which notifications are coalesced
# Calls of one integration whose hooks run at once, at most: more cannot go faster than the
# CRM's rate limit lets them, and each waiting one holds its call's state.
MAX_GROUPS_PER_INTEGRATION = 100
# A paced integration (pacing.Paced) runs at most as many calls as its budget serves within
# this many seconds, so no request waits much longer than that for its turn.
PACING_HORIZON_SECONDS = 2.0
# Chunks of due groups one scan tries to lease, at most (see Dispatcher._lease).
MAX_LEASE_CHUNKS = 8


class GroupFailed(RuntimeError):
    """Call groups failed outside their hooks (the store): reported by the next scan."""


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 1.0
    max_delay_seconds: float = 600.0
    horizon_seconds: float = 72 * 3600.0  # then the work goes to the dead letters
    auth_retry_seconds: float = 60.0
    breaker_threshold: int = 5  # consecutive failures that open an integration's circuit
    breaker_cooldown_seconds: float = 30.0
    breaker_max_cooldown_seconds: float = 300.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        # Jitter spreads the retries of many calls that failed together.
        delay = backoff / 2 + random.uniform(0, backoff / 2)
        return max(delay, retry_after or 0.0)


class Breaker:
    """A circuit breaker per integration: a CRM that keeps failing is probed, not hammered.

    Closed: everything runs. After ``threshold`` consecutive failures it opens for a
    cooldown; then one call group may run as a probe (half-open). Its success closes the
    circuit; its failure opens it again for twice as long, up to a maximum.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.open_until = 0.0
        self.cooldown = policy.breaker_cooldown_seconds
        self.probing = False
        self.trips = 0  # times the circuit opened (a failed probe included)

    @property
    def is_open(self) -> bool:
        return self.failures >= self.policy.breaker_threshold

    def may_probe(self, now: float) -> bool:
        return now >= self.open_until and not self.probing

    def allow(self, now: float) -> bool:
        if not self.is_open:
            return True
        if not self.may_probe(now):
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures, self.probing = 0, False
        self.cooldown = self.policy.breaker_cooldown_seconds

    def failure(self, now: float) -> bool:
        """Count a CRM failure; ``True`` when it opened the circuit (again)."""
        was_probe, was_open, self.probing = self.probing, self.is_open, False
        self.failures += 1
        if was_probe:
            self.cooldown = min(self.cooldown * 2, self.policy.breaker_max_cooldown_seconds)
        if not self.is_open:
            return False
        self.open_until = now + self.cooldown
        opened = was_probe or not was_open
        self.trips += opened
        return opened

    def release(self) -> None:
        """A probe ended without a verdict on the CRM (an auth or invalid request, no row
        run): the next group may probe."""
        self.probing = False


class Dispatcher:
    def __init__(
        self,
        store: Store,
        host: PluginHost,
        integrations: dict[str, Integration],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        on_result: Callable[[Dispatch, str], None] = lambda d, outcome: None,
        redact: Callable[[str], str] = lambda text: text,
        leases: Leases | None = None,
    ) -> None:
        # on_result(row, outcome): outcome is "done", "retry", "dead" or "waiting".
        self.store = store
        self.host = host
        self.integrations = integrations  # by Integration.key
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.on_result = on_result
        # Masks configured secrets in what is kept of each hook call (httplog.Redactor).
        self.redact = redact
        # Another process may dispatch the same outbox: a call group runs only under its
        # lease (on SQLite this process holds every lease).
        self.leases = leases or Leases(store)
        self.wakeup = asyncio.Event()
        self._running: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._probes: set[tuple[str, str, str]] = set()
        # The priority of each running group's work (pacing.Urgency), raised on hang-up.
        self._urgency: dict[tuple[str, str, str], Urgency] = {}
        self._pace_timer: asyncio.TimerHandle | None = None
        self.last_scan_rows = 0
        self.breakers: dict[str, Breaker] = {}
        self._group_errors: list[BaseException] = []
        self._groups_failing = False
        self._stopping = False  # groups end after their rows, for stop() to wait for

    def breaker(self, integration: str) -> Breaker:
        if integration not in self.breakers:
            self.breakers[integration] = Breaker(self.policy)
        return self.breakers[integration]

    def notify(self) -> None:
        self.wakeup.set()

    def running(self, integration: str) -> int:
        """How many of ``integration``'s calls have hooks running now."""
        return sum(1 for group in self._running if group[0] == integration)

    async def scan_round(self, coalesce_seconds: float = 0.02) -> bool:
        """The dispatcher loop's round: one scan for due rows; then wait for a wake-up.

        A call group that failed outside its hook (the store could not record the result)
        fails the next round, so the supervisor logs it and backs off instead of rerunning
        the group at once; its rows stay pending. Until a round's groups succeed again, each
        round waits for the groups it started, so a store that still fails fails the round
        and the backoff grows.
        """
        self._raise_group_errors()
        await self.dispatch_due()
        if self._groups_failing:
            await self.wait_idle()
            self._raise_group_errors()
            self._groups_failing = False
        if self.last_scan_rows >= BUSY_SCAN_ROWS:
            # A backlog (a slow CRM): one scan for a burst of notifications, not one each. A
            # scan then reads up to 1000 rows per integration, and every event paying for
            # one starved the worker.
            await asyncio.sleep(coalesce_seconds)
        return False

    def _raise_group_errors(self) -> None:
        if self._group_errors:
            errors, self._group_errors = self._group_errors, []
            self._groups_failing = True
            raise GroupFailed(
                f"{len(errors)} call group(s) failed outside the hook; their rows stay pending"
            ) from errors[0]

    async def stop(self) -> None:
        """Let running hook calls finish their work at the CRM (bounded by their timeouts).

        A call waiting for its turn (a rate limiter, a lock: ``hooktime.queue_wait``) has no
        request in flight and is not bounded by its timeout: it is cancelled, and its row stays
        pending for the next start.
        """
        self._stopping = True
        try:
            while self._running:
                tasks = list(self._running.values())
                for task in tasks:
                    if waiting_for_turn(task):
                        task.cancel()
                await asyncio.wait(tasks, timeout=0.1)
        finally:
            self._stopping = False

    async def dispatch_due(self, limit: int = 1000) -> int:
        """Start a task per (integration, call) whose next row is due; returns how many.

        Each integration gets its own batch of up to ``limit`` calls, so a stalled CRM's
        backlog never holds up another; an open circuit is not even asked for (one probe
        when its cooldown is over). A paced integration starts no more calls than its CRM
        budget serves soon (:mod:`connector_core.pacing`); it is looked at again when the
        budget grows or one of its calls finishes. The calls that hung up start first, paced
        against the completing work already running (``pacing.room_to_complete``).
        """
        now = self.clock.now()
        started = scanned = 0
        for key, integration in self.integrations.items():
            breaker = self.breaker(key)
            if breaker.is_open and not breaker.may_probe(now):
                continue
            running = self.running(key)
            budget = budget_of(integration.runtime, PACING_HORIZON_SECONDS)
            room = room_to_start(budget, running, MAX_GROUPS_PER_INTEGRATION)
            completing = sum(
                1
                for group, urgency in self._urgency.items()
                if group[0] == key and urgency.priority is Priority.COMPLETING
            )
            first = room_to_complete(budget, completing, running, MAX_GROUPS_PER_INTEGRATION)
            if room <= 0 and budget is not None and budget.more_in > 0:
                self._wake_in(budget.more_in)
            if room <= 0 and first <= 0:
                continue
            # Completing heads come first (Store.due_heads orders them so): with no room for
            # the rest, the few that may start (past the running groups' heads) are enough.
            want = limit if room > 0 else min(limit, first + running)
            heads = await self.store.due_heads(key, now, 1 if breaker.is_open else want)
            scanned += len(heads)
            wanted: dict[Priority, list[tuple[str, str, str]]] = {p: [] for p in Priority}
            for head in heads:
                group = (head.integration, head.account, head.call_id)
                priority = Priority.COMPLETING if head.completes_call else Priority.ROUTINE
                if group not in self._running:
                    wanted[priority].append(group)
                else:
                    # The call hung up while its earlier hook waits for the CRM: that hook's
                    # requests now go first too (the comment waits for them).
                    self._urgency[group].raise_to(priority)
            if first > 0 and wanted[Priority.COMPLETING]:
                begun = await self._start(
                    wanted[Priority.COMPLETING], first, breaker, now, Priority.COMPLETING
                )
                started += begun
                room -= begun  # they run beside the rest, and count against its room
            if room > 0 and wanted[Priority.ROUTINE]:
                routine = wanted[Priority.ROUTINE]
                started += await self._start(routine, room, breaker, now, Priority.ROUTINE)
        self.last_scan_rows = scanned
        return started

    async def _start(
        self,
        wanted: list[tuple[str, str, str]],
        room: int,
        breaker: Breaker,
        now: float,
        priority: Priority,
    ) -> int:
        """Start up to ``room`` of ``wanted`` (in order) whose lease this process takes, at
        ``priority``; returns how many."""
        held = await self._lease(wanted, room)
        unused = set(held)
        begun = 0
        for group in wanted:
            lease = dispatch_lease(*group)
            if lease not in held:
                continue
            if room <= 0:  # before allow(): a half-open breaker must not mark a probe
                break
            probe = breaker.is_open
            if not breaker.allow(now):
                continue
            room -= 1
            unused.discard(lease)
            urgency = self._urgency[group] = Urgency(priority)
            task = asyncio.create_task(self._run_leased(group, urgency), name=f"dispatch {group}")
            self._running[group] = task
            if probe:
                self._probes.add(group)
            task.add_done_callback(functools.partial(self._done, group))
            begun += 1
        await self.leases.release(unused)
        return begun

    async def _lease(self, wanted: list[tuple[str, str, str]], room: int) -> set[str]:
        """Leases for up to ``room`` of ``wanted`` (in order), a chunk of ``room`` per round
        trip: a group another process holds is its, and with several dispatchers the first
        groups of a scan are often another's, so the next chunk is tried (up to
        ``MAX_LEASE_CHUNKS``) rather than leaving this one idle."""
        held: set[str] = set()
        for start in range(0, min(len(wanted), room * MAX_LEASE_CHUNKS), room):
            chunk = wanted[start : start + room]
            held |= await self.leases.take(dispatch_lease(*group) for group in chunk)
            if len(held) >= room:
                break
        return held

    def _done(self, group: tuple[str, str, str], task: asyncio.Task[None]) -> None:
        self._running.pop(group, None)
        self._urgency.pop(group, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._group_errors.append(error)
        if group in self._probes:
            self._probes.discard(group)
            # A probe that reached no verdict (no row run, an auth or invalid request)
            # must not keep the circuit half-open for good.
            self.breaker(group[0]).release()
        self.wakeup.set()  # rows may have been added behind the ones just run

    def _wake_in(self, seconds: float) -> None:
        """Scan again in ``seconds`` (when a paced integration's budget has grown)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        timer = self._pace_timer
        if timer is not None and not timer.cancelled() and when >= timer.when() > loop.time():
            return  # an earlier wake-up is already set
        if timer is not None:
            timer.cancel()
        self._pace_timer = loop.call_at(when, self.wakeup.set)

    async def wait_idle(self) -> None:
        """Wait until no group is running (tests and shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _run_leased(self, group: tuple[str, str, str], urgency: Urgency) -> None:
        try:
            # The CRM client's limiter serves the hooks' requests by it (pacing).
            with prioritised(urgency):
                await self._run_group(group, urgency)
        finally:
            await self.leases.release([dispatch_lease(*group)])

    async def _run_group(self, group: tuple[str, str, str], urgency: Urgency) -> None:
        # The rows and the call's state in one read: the state holds every event that made
        # these rows, and the dispatcher never changes it, so each row runs with it. The rows
        # added meanwhile are read, with the state then, in the write of the last row's
        # result (Store.complete_and_read_group), and run in the same turn when it may go on.
        work: GroupWork | None = await self.store.group_work(*group)
        with call_context(group[1], group[2], group[0]):
            while work is not None and work.rows:
                if any(row.key == COMPLETING_KEY for row in work.rows):
                    urgency.raise_to(Priority.COMPLETING)  # the call hung up meanwhile
                work = await self._run_rows(work)

    async def _run_rows(self, work: GroupWork) -> GroupWork | None:
        """Run ``work``'s rows in order; the group's rows added meanwhile, when they may run
        in this turn (``None``: the group's turn is over)."""
        last, more = work.rows[-1], None
        for row in work.rows:
            if row.not_before > self.clock.now():
                return None
            read_group = row is last and self._may_go_on(row.integration)
            may_go_on, more = await self._run_one(row, work.call, read_group)
            if not may_go_on:
                return None
        # Asked again after the hook: the service may have begun to stop, or the circuit
        # opened, while it ran; the rows read stay stored for the next scan.
        return more if more is not None and self._may_go_on(last.integration) else None

    def _may_go_on(self, key: str) -> bool:
        """Whether a group whose rows ran may run the rows added meanwhile in the same turn.

        Not when the scan should choose what runs next: a paced integration's budget goes to
        the calls that hung up first, and one at its cap of running calls has others waiting;
        an open circuit lets only its probe run; stop() waits for the groups to end."""
        integration = self.integrations[key]
        return (
            not self._stopping
            and not self.breaker(key).is_open
            and budget_of(integration.runtime, PACING_HORIZON_SECONDS) is None
            and self.running(key) < MAX_GROUPS_PER_INTEGRATION
        )

    async def _run_one(
        self, row: Dispatch, call: CallState | None, read_group: bool = False
    ) -> tuple[bool, GroupWork | None]:
        """Run one row with its call's state; ``True`` if the rows behind it may run now,
        and, with ``read_group``, the group's pending rows read in the write of its result.

        The attempt is kept with the call (``callrecords.HookCall``: start, duration,
        outcome, and the CRM requests and decisions the plugin reported meanwhile), in the
        same write that records the row's result.
        """
        # Only configured integrations are dispatched (dispatch_due asks per integration):
        # rows of one removed from the config wait, pending, for it to come back.
        integration = self.integrations[row.integration]
        if call is None:
            await self.store.fail_dispatch(row.id, "call state missing", None)
            return True, None
        started_at, monotonic_start = self.clock.now(), time.monotonic()
        failure: Exception | None = None
        with callrecords.recording(integration.key, self.clock.now) as recording:
            try:
                await self._call_hook(integration, call, row)
            except Exception as exc:  # every plugin failure is contained to this row
                failure = exc
        attempt = _Attempt(row, started_at, time.monotonic() - monotonic_start, recording)
        if failure is not None:
            return await self._failed(integration, row, failure, attempt), None
        self.breaker(integration.key).success()
        records = self._records(attempt, HookOutcome.DONE)
        more = None
        if read_group:
            more = await self.store.complete_and_read_group(row, records)
        else:
            await self.store.complete_dispatch(row.id, records)
        self.on_result(row, "done")
        return True, more

    def _records(
        self,
        attempt: _Attempt,
        outcome: HookOutcome,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> list[NewCallRecord]:
        """The attempt's record, with every text in it masked (a CRM may echo a secret)."""
        row, reported = attempt.row, attempt.recording
        # Built in one go with what the plugin reported (a frozen dataclass copied with
        # ``replace`` is built twice).
        record = HookCall(
            hook=row.kind.hook if row.kind else "unknown",
            record=row.key,
            attempt=row.attempts + 1,
            started_at=attempt.started_at,
            seconds=attempt.seconds,
            outcome=outcome,
            error=error,
            retry_at=retry_at,
            requests=tuple(reported.requests),
            decisions=tuple(reported.decisions),
            dropped=reported.dropped,
        )
        masked = callrecords.redacted(record, self.redact)
        return [NewCallRecord(row.integration, masked, attempt.started_at)]

    async def _call_hook(self, integration: Integration, call: CallState, row: Dispatch) -> None:
        # The row's own record, refreshed: a scheme stored by its name is passed with the
        # number the call has learnt since. Nothing is worked out from the key.
        record = row.hook_record(call)
        await self.host.call_lifecycle(integration, call, record)

    async def _failed(
        self, integration: Integration, row: Dispatch, exc: Exception, attempt: _Attempt
    ) -> bool:
        now = self.clock.now()
        attempts = row.attempts + 1
        reason = _describe(exc)
        expired = now - row.created_at > self.policy.horizon_seconds
        breaker = self.breaker(integration.key)
        # Only a CRM that failed to serve counts towards the breaker: a refused key or an
        # invalid request was answered (and waits for a turn never reach here as timeouts:
        # hooktime.queue_wait).
        if isinstance(exc, InvalidRequestError) or expired:
            retry_at = None
        elif is_store_failure(exc):
            # The plugin could not record its effect keys (a full disk): the CRM is not at
            # fault, and its circuit must not keep calls back once the store is writable.
            retry_at = now + self.policy.delay(attempts)
        elif isinstance(exc, RetryLater):
            # The plugin is waiting for the CRM to settle, not failing: no breaker, no backoff.
            retry_at = now + exc.seconds
        elif isinstance(exc, AuthError):
            # Not the call's fault: keep it queued until an operator fixes the credentials.
            integration.auth = AuthResult(AuthStatus.AUTH_FAILED, reason)
            retry_at = now + self.policy.auth_retry_seconds
        else:
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            retry_at = now + self.policy.delay(attempts, retry_after)
            if breaker.failure(now):
                log.warning(
                    "%s: circuit open for %.0f s after %d consecutive failures",
                    integration.key,
                    breaker.cooldown,
                    breaker.failures,
                )
            if breaker.is_open:
                retry_at = max(retry_at, breaker.open_until)
        if retry_at is None:
            why = "beyond the retry horizon" if expired else "not retryable"
            log.error(
                "%s %s dead-lettered (%s) after %d attempt(s): %s",
                integration.key,
                row.key,
                why,
                attempts,
                reason,
            )
        elif isinstance(exc, RetryLater):
            log.info("%s %s waits %.1f s: %s", integration.key, row.key, exc.seconds, exc.message)
        else:
            log.warning(
                "%s %s failed (attempt %d), retry in %.1f s: %s",
                integration.key,
                row.key,
                attempts,
                retry_at - now,
                reason,
            )
        outcome = HookOutcome.DEAD if retry_at is None else HookOutcome.RETRY
        records = self._records(attempt, outcome, reason, retry_at)
        await self.store.fail_dispatch(row.id, reason, retry_at, records)
        self.on_result(row, outcome.value)
        return False


@dataclass(frozen=True)
class _Attempt:
    """One run of a row's hook: when it started, and what its plugin reported."""

    row: Dispatch
    started_at: float  # the service clock, for people
    seconds: float
    recording: callrecords.Recording


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the plugin did not finish within its hook timeout"
    return describe_error(exc)
