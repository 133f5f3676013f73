"""``python -m plugins.usedesk.sandbox --port 8091 --seed seed.json``: a standalone sandbox."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from .app import create_app
from .core import UsedeskSandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m plugins.usedesk.sandbox", description="In-memory Usedesk API sandbox"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--seed", help="seed file (.json or .toml); default: built-in seed")
    parser.add_argument("--token", help="api_token to accept instead of the seed's")
    parser.add_argument("--phone-search", choices=("raw", "digits"), default="raw")
    parser.add_argument(
        "--literal-search",
        action="store_true",
        help="take %% and _ in /clients queries literally (an API that escapes them)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sandbox = UsedeskSandbox(
        seed=args.seed,
        api_token=args.token,
        phone_search=args.phone_search,
        like_wildcards=not args.literal_search,
    )
    print(f"Usedesk sandbox: http://{args.host}:{args.port}  api_token={sandbox.token}", flush=True)
    web.run_app(
        create_app(sandbox), host=args.host, port=args.port, shutdown_timeout=2.0, print=None
    )


if __name__ == "__main__":
    main()
