"""The aiohttp application: the Usedesk API routes, fault injection, and /_sandbox/ control."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .core import ENDPOINTS, LoggedRequest, UsedeskSandbox
from .faults import FaultConfigError, FaultPlan
from .params import ApiError, decode_form
from .seed import SeedError

SANDBOX_KEY = web.AppKey("usedesk_sandbox", UsedeskSandbox)
View = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SERVER_ERROR_PAGE = (
    "<html><head><title>{status} Internal Server Error</title></head>"
    "<body><center><h1>{status} Internal Server Error</h1></center><hr>"
    "<center>nginx</center></body></html>"
)


class BadBody(Exception):
    """The body is neither a form nor a JSON object."""


async def read_params(request: web.Request) -> dict[str, Any]:
    """Query string first, then the body on top, so a body ``api_token`` wins."""
    data = decode_form(request.query.items())
    if request.method != "POST" or not request.body_exists:
        return data
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        # Uploaded files are accepted and ignored: the sandbox stores no attachments.
        data.update(decode_form((k, v) for k, v in form.items() if isinstance(v, str)))
        return data
    raw = await request.read()
    if not raw.strip():
        return data
    # Any other content type is tried as JSON: clients often forget the header.
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadBody("Malformed JSON body") from exc
    if not isinstance(body, dict):
        raise BadBody("The JSON body must be an object")
    data.update(body)
    return data


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without a status line; aiohttp then skips writing the response."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


async def _faulty(
    request: web.Request, sandbox: UsedeskSandbox, plan: FaultPlan, entry: LoggedRequest
) -> web.StreamResponse:
    entry.fault = plan.mode
    if plan.apply:
        entry.applied, entry.response = entry.response, None
    entry.status = None
    if plan.mode == "429":
        headers = {} if plan.retry_after is None else {"Retry-After": _seconds(plan.retry_after)}
        entry.status, entry.response = 429, {"error": "Too Many Attempts."}
        return web.json_response(entry.response, status=429, headers=headers)
    if plan.mode == "500":
        entry.status = plan.status
        return web.Response(
            status=plan.status,
            content_type="text/html",
            text=_SERVER_ERROR_PAGE.format(status=plan.status),
        )
    if plan.mode == "error":
        entry.status, entry.response = 200, {"error": plan.message}
        return web.json_response(entry.response)
    if plan.mode == "hang":
        await sandbox.faults.hang(
            plan, lambda: request.transport is None or request.transport.is_closing()
        )
    return _drop(request)


async def _carry_out_late(
    sandbox: UsedeskSandbox, entry: LoggedRequest, params: dict[str, Any], seconds: float
) -> tuple[int, Any]:
    await asyncio.sleep(seconds)
    return sandbox.dispatch(entry, params)


def _api_view(path: str) -> View:
    async def view(request: web.Request) -> web.StreamResponse:
        sandbox = request.app[SANDBOX_KEY]
        arrived = sandbox.rate.record(path)
        latency = sandbox.faults.plan.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000)
        try:
            params = await read_params(request)
        except BadBody as exc:
            entry = sandbox.begin(request.method, path, {}, arrived)
            entry.status, entry.error = 400, str(exc)
            return web.json_response({"error": str(exc)}, status=400)
        entry = sandbox.begin(request.method, path, params, arrived)
        plan = sandbox.faults.take(path)
        if plan is not None and plan.mode == "late":
            entry.fault = plan.mode
            # Carried out later whatever the client does (aiohttp may cancel this handler
            # when the client gives up; the write must land all the same).
            landing = asyncio.ensure_future(_carry_out_late(sandbox, entry, params, plan.late_s))
            sandbox.late_writes.add(landing)
            landing.add_done_callback(sandbox.late_writes.discard)
            status, body = await asyncio.shield(landing)
            return web.json_response(body, status=status)
        if plan is None:
            status, body = sandbox.dispatch(entry, params)
            return web.json_response(body, status=status)
        if plan.apply:
            sandbox.dispatch(entry, params)
        return await _faulty(request, sandbox, plan, entry)

    return view


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    raw = await request.read()
    if not raw.strip():
        return None
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def state_view(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX_KEY].snapshot())


async def requests_view(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    entries = sandbox.requests(
        request.query.get("path"), writes_only=request.query.get("writes") in ("1", "true")
    )
    return web.json_response(
        {"requests": [e.to_json() for e in entries], "rate": sandbox.rate.summary()}
    )


async def rate_view(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    path = request.query.get("path")
    try:
        window = float(request.query.get("window", "1"))
        peak = sandbox.max_requests_in_window(window, path)
    except ValueError as exc:
        return _bad_request(f"window: {exc}")
    return web.json_response(
        {"window_s": window, "path": path, "max": peak, "total": len(sandbox.rate.timestamps(path))}
    )


async def reset_view(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    try:
        sandbox.reset(await _json_body(request))
    except (ValueError, SeedError) as exc:
        return _bad_request(str(exc))
    return web.json_response(
        {
            "status": "reset",
            "clients": len(sandbox.state.clients),
            "tickets": len(sandbox.state.tickets),
        }
    )


async def faults_view(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    if request.method == "DELETE":
        sandbox.clear_faults()
    elif request.method == "POST":
        try:
            sandbox.faults.configure(await _json_body(request) or {})
        except (ValueError, FaultConfigError) as exc:
            return _bad_request(str(exc))
    return web.json_response(sandbox.faults.plan.to_json())


async def client_admin_view(request: web.Request) -> web.Response:
    """``POST /_sandbox/clients/{id}/delete`` and ``…/merge`` with ``{"into": other_id}``."""
    sandbox = request.app[SANDBOX_KEY]
    try:
        client_id = int(request.match_info["client_id"])
        if request.match_info["action"] == "delete":
            sandbox.delete_client(client_id)
            return web.json_response({"status": "deleted", "client_id": client_id})
        body = await _json_body(request) or {}
        into = body.get("into")
        if not isinstance(into, int) or isinstance(into, bool):
            return _bad_request('merge needs {"into": <the surviving client id>}')
        sandbox.merge_clients(into=into, merged=client_id)
    except KeyError:
        return _bad_request(f"no client {request.match_info['client_id']}")
    except ApiError as exc:
        return _bad_request(exc.message)
    except ValueError as exc:
        return _bad_request(str(exc))
    return web.json_response({"status": "merged", "client_id": client_id, "into": into})


async def release_view(request: web.Request) -> web.Response:
    request.app[SANDBOX_KEY].release_hung()
    return web.json_response({"status": "released"})


async def _release_on_shutdown(app: web.Application) -> None:
    # Hung handlers would otherwise hold the runner's cleanup until its shutdown timeout.
    app[SANDBOX_KEY].release_hung()


def create_app(sandbox: UsedeskSandbox) -> web.Application:
    app = web.Application()
    app[SANDBOX_KEY] = sandbox
    for path, endpoint in ENDPOINTS.items():
        view = _api_view(path)
        app.router.add_post(path, view)
        if endpoint.allow_get:
            app.router.add_get(path, view, allow_head=False)
    app.router.add_get("/_sandbox/state", state_view)
    app.router.add_get("/_sandbox/requests", requests_view)
    app.router.add_get("/_sandbox/rate", rate_view)
    app.router.add_post("/_sandbox/reset", reset_view)
    app.router.add_get("/_sandbox/faults", faults_view)
    app.router.add_post("/_sandbox/faults", faults_view)
    app.router.add_delete("/_sandbox/faults", faults_view)
    app.router.add_post("/_sandbox/release", release_view)
    app.router.add_post(r"/_sandbox/clients/{client_id}/{action:delete|merge}", client_admin_view)
    app.on_shutdown.append(_release_on_shutdown)
    return app
