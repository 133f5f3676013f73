"""The app factory: one aiohttp application wiring ingest, store, worker and dispatcher.

Start-up and shutdown live in ``cleanup_ctx`` so that they run in order and undo in reverse:
the store opens first and closes last; integrations are built after it and closed before it;
background tasks start last and stop first, letting in-flight hook calls finish.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from connector_core import (
    agent_stream,
    callrecords,
    click_to_call,
    cluster,
    health,
    ingest,
    pruner,
    public_url,
    reconcile,
)
from connector_core.appkeys import (
    ACCOUNTS,
    BOARD,
    CLOCK,
    CONFIG,
    DISPATCHER,
    HOST,
    INTEGRATIONS,
    LEASES,
    METRICS,
    MISSED_CALLS,
    NOTIFIER,
    REFUSALS,
    ROLE,
    STORE,
    SUPERVISOR,
    WORKER,
    AccountRuntime,
)
from connector_core.clock import Clock, SystemClock
from connector_core.cluster import Role
from connector_core.config import Config, StorageConfig
from connector_core.console import web as console
from connector_core.dispatcher import Dispatcher
from connector_core.hooks import PluginHost
from connector_core.httplog import Redactor, ServerErrorLog
from connector_core.integrations import AuthResult, AuthStatus, Integration, KeyedLocks, SharedRate
from connector_core.metrics import Metrics
from connector_core.missed_calls import MissedCalls
from connector_core.notifications import CardBoard, ChannelSink, Notifier, Sink
from connector_core.refusals import Refusals
from connector_core.store.base import (
    CARD_CHANNEL,
    DISPATCH_CHANNEL,
    INBOX_CHANNEL,
    Dispatch,
    Store,
    StoredAuth,
)
from connector_core.store.choose import make_store
from connector_core.store.sqlite import SQLiteStore
from connector_core.store.urls import masked_url
from connector_core.supervisor import Supervisor
from connector_core.worker import Worker

log = logging.getLogger(__name__)
AUTH_CHECK_INTERVAL = 300.0
# The expiry loop looks a quarter of the hang-up timeout apart (a call is finished at most
# 25% late), but never idles more than a minute nor spins faster than a second.
EXPIRY_INTERVAL = 60.0
EXPIRY_MIN_INTERVAL = 1.0
EXPIRY_FRACTION = 0.25
StoreFactory = Callable[[StorageConfig, Clock], Store]


def expiry_interval(hangup_timeout: float) -> float:
    """Seconds between expiry rounds for ``hangup_timeout``: a fraction of it, bounded."""
    return min(EXPIRY_INTERVAL, max(EXPIRY_MIN_INTERVAL, hangup_timeout * EXPIRY_FRACTION))


def plugin_host_for(config: Config) -> PluginHost:
    """A plugin host with exactly the plugins the config's enabled integrations use."""
    host = PluginHost()
    host.load(
        {i.plugin for a in config.accounts.values() for i in a.integrations.values() if i.enabled}
    )
    return host


def create_app(
    config: Config,
    *,
    host: PluginHost | None = None,
    clock: Clock | None = None,
    background: bool = True,
    store_factory: StoreFactory = make_store,
    role: Role = Role.ALL,
) -> web.Application:
    """Build the service. ``background=False`` leaves the worker loops to the caller (tests).

    ``role`` (``connector serve --role``): ``ingest`` takes webhooks only (no background
    loops, no agent page, no console); ``worker`` runs the loops and serves agents and the
    console, and refuses webhooks; ``all`` does both.

    ``store_factory(config.storage, clock)`` makes the store (``make_store``: the backend the
    config names); a test may pass one that injects faults (``testing.faults.FaultyStore``).
    """
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    app[ROLE] = role
    app[CLOCK] = clock or SystemClock()
    app[HOST] = host or plugin_host_for(config)
    app[METRICS] = Metrics()
    app[REFUSALS] = Refusals()
    for account in reconcile.accounts_with_key(config):
        for missing in _MISSING.values():  # at 0 from the start, for an alert on its increase
            app[METRICS].reconciled_calls.labels(account, missing)
    app[HOST].on_routing_error = lambda plugin, hook: (
        app[METRICS].routing_hook_errors.labels(plugin, hook).inc()
    )
    app[SUPERVISOR] = Supervisor(
        app[CLOCK], on_error=lambda loop: app[METRICS].loop_errors.labels(loop).inc()
    )
    app.add_routes(ingest.routes() if role.ingests else _not_ingest_routes())
    app.add_routes(health.routes())
    if role.works:
        app.add_routes(agent_stream.routes())
        click_to_call.install(app)  # «Перезвонить» on the agent page
        console.install(app)  # /console/, when [console] enabled = true
    app.cleanup_ctx.append(functools.partial(_store_ctx, factory=store_factory))
    if background and role.works:
        app.cleanup_ctx.append(_one_worker_ctx)
    app.cleanup_ctx.append(_integrations_ctx)
    if background and role.works:
        app.cleanup_ctx.append(_background_ctx)
    return app


async def _store_ctx(app: web.Application, factory: StoreFactory) -> AsyncIterator[None]:
    store = factory(app[CONFIG].storage, app[CLOCK])
    if isinstance(store, SQLiteStore):
        # One write lock for the whole file, shared by every process on it: how long each
        # transaction takes (waiting for it included) shows a slow disk or a busy neighbour.
        store.on_commit = app[METRICS].store_writes.observe
        # An ingest process beside a worker process: its webhooks go to a file of their own,
        # so they never wait for the worker's write transactions (store/spool.py).
        store.spools = not app[ROLE].works
    _subscribe(app, store)
    await store.open()
    app[STORE] = store
    yield
    await store.close()


def _subscribe(app: web.Application, store: Store) -> None:
    """Wake this process's worker and dispatcher, and fill its card board, from the store's
    channels: the webhook, the new hook calls or the card may come from another process."""
    if not app[ROLE].works:
        return

    def wake(key: web.AppKey[Worker] | web.AppKey[Dispatcher]) -> Callable[[str], None]:
        # The worker and dispatcher are made after the store opens; a message before is moot.
        return lambda payload: app[key].notify() if key in app else None

    store.subscribe(INBOX_CHANNEL, wake(WORKER))
    store.subscribe(DISPATCH_CHANNEL, wake(DISPATCHER))
    store.subscribe(
        CARD_CHANNEL, lambda payload: app[BOARD].on_message(payload) if BOARD in app else None
    )


def _not_ingest_routes() -> list[web.RouteDef]:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "success": False,
                "error": "this process runs --role worker: point Sipuni at an ingest process",
            },
            status=503,
        )

    return [
        web.route("*", path, refuse) for path in ("/sipuni/{token:[^/]+}", "/sipuni/{token:[^/]+}/")
    ]


async def _one_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """SQLite's coordination is in one process's memory: refuse a second worker on the file."""
    if app[STORE].shared:
        yield
        return
    with cluster.exclusive_worker(app[CONFIG].storage.path):
        yield


async def _integrations_ctx(app: web.Application) -> AsyncIterator[None]:
    config, host, store = app[CONFIG], app[HOST], app[STORE]
    app[LEASES] = leases = cluster.Leases(store, ttl=config.cluster.lease_seconds)
    shared_rate = SharedRate(store) if store.shared else None
    accounts: list[AccountRuntime] = []
    by_key: dict[str, Integration] = {}
    for number, account in config.accounts.items():
        instances = []
        for name, item in account.integrations.items():
            if not item.enabled:
                continue
            kind = host.types.get(item.plugin)
            if kind is None:
                raise RuntimeError(
                    f"accounts.{number}.integrations.{name}: plugin "
                    f"'{item.plugin}' is not installed ({host.errors})"
                )
            integration = Integration(
                account=number,
                name=name,
                type=kind,
                settings=item.settings,
                routing=item.routing,
                effects=store.effects(f"{number}/{name}"),
                region=account.default_region,
                answered_owner=config.tracker.answered_owner,
                on_crm_request=callrecords.crm_request_observer(
                    app[METRICS].crm_request_observer(f"{number}/{name}")
                ),
                locks=KeyedLocks(_cluster_locks(store, f"{number}/{name}")),
                shared_rate=shared_rate,
            )
            if kind.factory is not None:
                runtime = kind.factory(integration)
                integration.runtime = await runtime if inspect.isawaitable(runtime) else runtime
            instances.append(integration)
            by_key[integration.key] = integration
        accounts.append(
            AccountRuntime(
                number=number,
                token=account.token.get_secret_value(),
                region=account.default_region,
                allowed_networks=list(account.allowed_ips),
                integrations=instances,
            )
        )
    app[ACCOUNTS] = accounts
    app[INTEGRATIONS] = by_key
    tracker = config.tracker
    metrics = app[METRICS]

    def count_hook_call(row: Dispatch, outcome: str) -> None:
        metrics.hook_call(row.integration, row.kind or "unknown", outcome)

    dispatcher = Dispatcher(
        store,
        host,
        by_key,
        app[CLOCK],
        on_result=count_hook_call,
        redact=Redactor(config.secrets()),
        leases=leases,
    )
    app[DISPATCHER] = dispatcher
    board = CardBoard(origin=leases.owner)
    # Other processes' boards are fed from the card channel (_subscribe), so an agent's
    # stream gets the cards this worker makes wherever it is held; plugin sinks are called
    # from here, once per card.
    sinks: list[Sink] = [ChannelSink(store, board), *host.notification_sinks()]
    notifier = Notifier(
        host,
        {a.number: a.integrations for a in accounts},
        sinks,
        phone_format=config.notifications.phone_format,
        regions={a.number: a.region for a in accounts},
    )
    app[BOARD], app[NOTIFIER] = board, notifier
    for integration in by_key.values():
        if integration.routing.notifications:
            integration.notify = notifier.notice
    app[WORKER] = Worker(
        store,
        host,
        {a.number: a.integrations for a in accounts},
        {a.number: a.region for a in accounts},
        app[CLOCK],
        hangup_timeout=tracker.hangup_timeout_seconds,
        finish_settle=tracker.finish_settle_seconds,
        on_call=lambda call, keys: notifier.on_call(call),
        on_processed=metrics.events_processed.inc,
        leases=leases,
        keep_number_calls=config.missed_calls.enabled,
    )
    app[MISSED_CALLS] = MissedCalls(
        store,
        app[CLOCK],
        config.missed_calls.rules(),
        settle_seconds=config.missed_calls.settle_seconds,
        on_settled=metrics.missed_call_observer(),
    )
    yield
    await notifier.wait_idle()
    for integration in by_key.values():
        close = getattr(integration.runtime, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                log.exception("closing %s failed", integration.key)


def _cluster_locks(
    store: Store, integration: str
) -> Callable[[str], AbstractAsyncContextManager[None]] | None:
    """``integration.locks``' cluster-wide half: the store's lock of the key, when shared."""
    if not store.shared:
        return None
    return lambda key: store.lock(f"{integration}:{key}")


async def check_authorization(host: PluginHost, integration: Integration) -> AuthResult:
    """Run the plugin's authorisation check; a check that raises counts as a failed check."""
    try:
        result = await host.check_authorization(integration)
    except TimeoutError:
        result = AuthResult(AuthStatus.CANNOT_CONNECT, "the check did not finish in time")
    except Exception as exc:
        result = AuthResult(AuthStatus.CANNOT_CONNECT, f"the check raised {type(exc).__name__}")
    if result is None:
        result = AuthResult(AuthStatus.OK, "the plugin has no authorisation check")
    integration.auth = result
    return result


async def _auth_round(app: web.Application) -> bool:
    """The authorisation loop's round: check every integration once, log each result, and
    store it for every process to show (only one process of a cluster runs this round)."""
    for integration in app[INTEGRATIONS].values():
        result = await check_authorization(app[HOST], integration)
        stored = StoredAuth(integration.key, result.status.value, result.reason, app[CLOCK].now())
        await app[STORE].save_auth(stored)
        level = logging.INFO if result.ok else logging.ERROR
        log.log(
            level,
            "%s authorisation: %s %s",
            integration.key,
            result.status.value,
            result.reason,
        )
    return False


# The ``missing`` label of connector_reconciled_calls, by what reconciliation found.
_MISSING = {reconcile.Verdict.MISSING_CALL: "call", reconcile.Verdict.MISSING_END: "end"}


def reconcile_round(app: web.Application) -> Callable[[], Awaitable[bool]]:
    """The reconciliation loop's round, counting the calls it records in ``/metrics``."""
    counter = app[METRICS].reconciled_calls
    return reconcile.reconcile_round(
        app[STORE],
        app[CONFIG],
        app[CLOCK],
        lambda account, verdict: counter.labels(account, _MISSING[verdict]).inc(),
    )


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    worker, dispatcher, supervisor = app[WORKER], app[DISPATCHER], app[SUPERVISOR]
    leases = app[LEASES]
    mirror = cluster.AuthMirror(app[STORE], app[INTEGRATIONS])

    async def leases_round() -> bool:
        await leases.renew()
        await mirror.refresh()  # the cluster's latest authorisation checks
        return False

    # On SQLite every lease is this process's whether renewed or not: nothing to report.
    shared = app[STORE].shared
    supervisor.add("leases", leases_round, interval=leases.ttl / 3, has_work=lambda _: shared)
    supervisor.add(
        "worker",
        worker.drain_round,
        interval=1.0,
        wakeup=worker.wakeup,
        has_work=lambda stats: stats.get("inbox_pending", 0) > 0,
    )
    supervisor.add(
        "dispatcher",
        dispatcher.scan_round,
        interval=0.5,
        wakeup=dispatcher.wakeup,
        has_work=lambda stats: stats.get("dispatches_pending", 0) > 0,
    )
    supervisor.add(
        "expiry",
        cluster.singleton(leases, cluster.EXPIRY_SINGLETON, worker.expiry_round),
        interval=expiry_interval(worker.hangup_timeout),
        has_work=lambda stats: stats.get("calls_open", 0) > 0,
    )
    if app[CONFIG].missed_calls.enabled:
        supervisor.add(
            "missed_calls",
            cluster.singleton(leases, cluster.MISSED_SINGLETON, app[MISSED_CALLS].settle_round),
            interval=1.0,
            has_work=lambda stats: app[MISSED_CALLS].waiting,
        )
    supervisor.add(
        "auth",
        cluster.singleton(leases, cluster.AUTH_SINGLETON, functools.partial(_auth_round, app)),
        interval=AUTH_CHECK_INTERVAL,
        has_work=lambda stats: bool(app[INTEGRATIONS]),
    )
    retention = app[CONFIG].retention
    if retention.enabled:
        pruned = app[METRICS].pruned_rows
        supervisor.add(
            "prune",
            cluster.singleton(
                leases,
                pruner.PRUNE_SINGLETON,
                pruner.prune_round(
                    app[STORE],
                    retention,
                    app[CLOCK],
                    lambda table, rows: pruned.labels(table).inc(rows),
                ),
            ),
            interval=retention.interval_minutes * 60,
        )
    settings = app[CONFIG].reconcile
    if settings.enabled and reconcile.accounts_with_key(app[CONFIG]):
        supervisor.add(
            "reconcile",
            cluster.singleton(leases, reconcile.RECONCILE_SINGLETON, reconcile_round(app)),
            interval=settings.interval_minutes * 60,
        )
    for name in supervisor.loops:  # each loop's error count exists, at 0, from the start
        app[METRICS].loop_errors.labels(name)
    supervisor.start()
    yield
    # Stop taking new work, then let running hook calls finish within their timeouts (those
    # waiting for their turn are cancelled: Dispatcher.stop).
    await supervisor.stop()
    await dispatcher.stop()
    await leases.release_all()  # the next process need not wait for them to lapse


class RedactingAccessLogger(AbstractAccessLogger):
    """The access log without the secret token in ``/sipuni/<token>``, however it is spelt
    (any case, doubled slashes, %-encoded)."""

    _redact = Redactor()

    @property
    def enabled(self) -> bool:
        # aiohttp skips log() entirely when this is false: no path rewriting per webhook
        # when the level hides the access log anyway.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms',
            request.remote,
            request.method,
            self._redact(request.path),
            response.status,
            time * 1000,
        )


# Reading what a refused client still sends lets it see the answer; waiting longer than the
# body timeout for it would hand a stalled sender the connection back.
LINGER_SECONDS = 10.0


def run(config: Config, host: PluginHost | None = None, role: Role = Role.ALL) -> None:
    """Serve until SIGINT/SIGTERM; aiohttp then stops accepting and runs the cleanups.

    Raises ``cluster.WorkerLocked`` when another worker serves the same SQLite file.
    """
    app = create_app(config, host=host, role=role)
    metrics = app[METRICS]
    server_log = logging.getLogger("aiohttp.server")
    errors = ServerErrorLog(
        server_log, on_error=lambda kind: metrics.http_errors.labels(kind.value).inc()
    )
    server_log.addFilter(errors)
    store = "SQLite at " + str(config.storage.path)
    if config.storage.url is not None:
        store = "PostgreSQL at " + masked_url(config.storage.url.get_secret_value())
    log.info("role %s, store: %s", role.value, store)
    for line in public_url.addresses(config):
        if role is Role.WORKER and " webhook: " in line:
            continue  # this process refuses webhooks: its address is not one for Sipuni
        log.info(line)
    try:
        web.run_app(
            app,
            host=config.server.host,
            port=config.server.port,
            access_log_class=RedactingAccessLogger,
            shutdown_timeout=30.0,
            keepalive_timeout=config.server.keepalive_timeout_seconds,
            lingering_time=min(LINGER_SECONDS, config.server.body_timeout_seconds),
            print=lambda text: log.info(text.strip()),
        )
    finally:
        errors.flush()
        server_log.removeFilter(errors)
