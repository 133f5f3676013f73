"""The ceiling: an aiohttp server whose webhook handler answers ``{"success": true}`` and does
nothing else (no token check, no parsing, no storage, no access log).

``python -m bench.bare_server --port 8099`` — started by ``bench.ingest`` as its own process.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    return web.json_response({"success": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/sipuni/{token}", webhook),
            web.post("/sipuni/{token}", webhook),
            web.get("/healthz", healthz),
        ]
    )
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(create_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
