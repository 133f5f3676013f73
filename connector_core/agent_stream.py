"""The agent page and its event stream: the built-in notification channel.

``/agent/?account=…&extension=…&token=…`` serves a small page; it opens
``/agent/events`` (server-sent events) with the same parameters, authenticated by the
extension's token from ``accounts.<n>.agents``. The stream sends the extension's current
card at once, then every change; nothing is queued for an agent who is not connected: the
board holds only each extension's latest card.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from importlib.resources import files

from aiohttp import web

from connector_core.appkeys import BOARD, CONFIG

KEEPALIVE_SECONDS = 15.0
PAGE = files("connector_core").joinpath("agent_page.html")


def _authorised(request: web.Request) -> tuple[str, str] | None:
    account = request.query.get("account", "")
    extension = request.query.get("extension", "")
    given = request.query.get("token", "").encode()
    config = request.app[CONFIG].accounts.get(account)
    expected = config.agents.get(extension) if config else None
    # Compared even when there is no such agent, so timing does not tell which exist.
    secret = expected.get_secret_value().encode() if expected else b"\0" * 32
    if hmac.compare_digest(given, secret) and expected is not None:
        return account, extension
    return None


async def agent_page(request: web.Request) -> web.Response:
    # The page rings by default when the operator says so; each agent's own choice, kept in
    # the browser, wins over it.
    sound = "true" if request.app[CONFIG].notifications.sound else "false"
    return web.Response(
        text=PAGE.read_text(encoding="utf-8").replace("__SOUND_DEFAULT__", sound),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def agent_events(request: web.Request) -> web.StreamResponse:
    who = _authorised(request)
    if who is None:
        return web.json_response({"success": False, "error": "not found"}, status=404)
    board = request.app[BOARD]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # reverse proxies must not hold the stream back
        }
    )
    await response.prepare(request)
    last: str | None = None
    while True:
        changed = asyncio.ensure_future(board.wait_change(*who))
        card = board.cards.get(who)
        current = json.dumps(card, ensure_ascii=False) if card else ""
        if current != last:
            message = f"event: card\ndata: {current}\n\n" if card else "event: clear\ndata: {}\n\n"
            await response.write(message.encode())
            last = current
        try:
            await asyncio.wait_for(asyncio.shield(changed), KEEPALIVE_SECONDS)
        except TimeoutError:
            await response.write(b": keep-alive\n\n")
        finally:
            if not changed.done():
                changed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await changed


def routes() -> list[web.RouteDef]:
    return [web.get("/agent/", agent_page), web.get("/agent/events", agent_events)]
