"""``/healthz`` (the process answers) and ``/readyz`` (it can take and keep webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging

from aiohttp import web
from pydantic import SecretStr

from connector_core.appkeys import (
    CONFIG,
    DISPATCHER,
    INTEGRATIONS,
    METRICS,
    ROLE,
    STORE,
    SUPERVISOR,
)
from connector_core.cluster import AuthMirror, Role
from connector_core.integrations import AuthStatus

log = logging.getLogger(__name__)
STATS_TIMEOUT = 5.0  # seconds: a store that hangs must not hang the load balancer's check
# A proxy in front names the real client in one of these: such a request is not local.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready means webhooks are safe to send and will be processed.

    503 when a real write to the store fails, when a background loop with work waiting
    has completed no round for ``[server] loop_stall_seconds``, or when this worker has failed
    to move an ingest process's spooled webhooks for that long (SQLite). A CRM that refuses its
    credentials does not make the service unready (its work waits in the store), but it
    is reported in the details so monitoring can alert on it. The details are shown to
    loopback requests and to requests with the ``[server] readyz_token``; anyone else
    (a load balancer) gets only ``{"ready": …}`` and the status code.
    """
    app = request.app
    server = app[CONFIG].server
    writable = await app[STORE].writable()
    try:
        async with asyncio.timeout(STATS_TIMEOUT):
            stats = await app[STORE].stats()
    except Exception:
        log.warning("/readyz: the store's counts could not be read", exc_info=True)
        stats = {}
    stalled = app[SUPERVISOR].stalled(server.loop_stall_seconds, stats)
    # The worker's rounds go on while the spool's webhooks cannot be moved: no loop stalls.
    unmoved = stats.get("spool_failing_seconds", 0)
    spool_stuck = unmoved > server.loop_stall_seconds
    ready = writable and not stalled and not spool_stuck
    status = 200 if ready else 503
    if not may_see_details(request, server.readyz_token):
        return web.json_response({"ready": ready}, status=status)
    problems = [] if writable else ["the store cannot write: a real write to it failed"]
    problems += [
        f"loop {name} has completed no round for over {server.loop_stall_seconds:g} s"
        " while it has work waiting"
        for name in stalled
    ]
    if spool_stuck:
        problems.append(
            f"webhooks in the spool could not be moved into the inbox for {unmoved} s: they"
            " are kept there, not processed; the worker's log says why"
        )
    if app[ROLE] is Role.INGEST:
        # An ingest process runs no loops: it shows the cluster's checks as stored.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STATS_TIMEOUT):
                await AuthMirror(app[STORE], app[INTEGRATIONS]).refresh()
    integrations = {
        key: {"auth": i.auth.status.value, "reason": i.auth.reason}
        for key, i in app[INTEGRATIONS].items()
    }
    degraded = any(
        v["auth"] in (AuthStatus.AUTH_FAILED, AuthStatus.CANNOT_CONNECT)
        for v in integrations.values()
    )
    now = app[SUPERVISOR].clock.now()
    body = {
        "ready": ready,
        "role": app[ROLE].value,  # connector serve --role
        "problems": problems,
        "store": "writable" if writable else "not writable",
        "loops": {name: loop.describe(now) for name, loop in app[SUPERVISOR].loops.items()},
        "degraded": degraded,
        "integrations": integrations,
        "stats": stats,
    }
    return web.json_response(body, status=status)


def may_see_details(request: web.Request, token: SecretStr | None) -> bool:
    """A request with the right bearer token, or from this machine and not through a proxy."""
    header = request.headers.get("Authorization", "")
    if token is not None and header.startswith("Bearer "):
        given = header.removeprefix("Bearer ").strip().encode()
        return hmac.compare_digest(given, token.get_secret_value().encode())
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:  # a Unix socket has no address
        return False


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    for key, breaker in app[DISPATCHER].breakers.items():
        app[METRICS].breaker_open.labels(key).set(int(breaker.is_open))
    body = app[METRICS].render(await app[STORE].stats())
    return web.Response(
        body=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
