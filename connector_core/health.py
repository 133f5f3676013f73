"""``/healthz`` (the process answers) and ``/readyz`` (it can take and keep webhooks)."""

from __future__ import annotations

from aiohttp import web

from connector_core.appkeys import DISPATCHER, INTEGRATIONS, METRICS, STORE
from connector_core.integrations import AuthStatus


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready means webhooks are safe to send: the store takes writes.

    A CRM that refuses its credentials does not make the service unready (its work waits
    in the store), but it is reported here so monitoring can alert on it.
    """
    writable = await request.app[STORE].writable()
    integrations = {
        key: {"auth": i.auth.status.value, "reason": i.auth.reason}
        for key, i in request.app[INTEGRATIONS].items()
    }
    degraded = any(
        v["auth"] in (AuthStatus.AUTH_FAILED, AuthStatus.CANNOT_CONNECT)
        for v in integrations.values()
    )
    body = {
        "ready": writable,
        "store": "writable" if writable else "not writable",
        "degraded": degraded,
        "integrations": integrations,
        "stats": await request.app[STORE].stats() if writable else {},
    }
    return web.json_response(body, status=200 if writable else 503)


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
