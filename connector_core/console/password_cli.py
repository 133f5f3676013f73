"""``connector console-password``: the line to put in ``[console] password_hash``.

The password is read from the terminal without echo (twice), or from the first line of
standard input when that is not a terminal (``--stdin`` forces it); ``--generate`` makes a
random token instead and prints it once. Only the hash is meant for the config file.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from connector_core.console.auth import MIN_PASSWORD_LENGTH, hash_password, new_token


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--generate", action="store_true", help="make a random token, print it and its hash"
    )
    which.add_argument("--stdin", action="store_true", help="read the password from standard input")


def _ask() -> str | None:
    first = getpass.getpass("console password: ")
    if first != getpass.getpass("again: "):
        print("the two passwords differ; nothing was made", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    """Print ``password_hash = "…"``; exit 2 when the password is unusable."""
    if args.generate:
        secret: str | None = new_token()
    elif args.stdin or not sys.stdin.isatty():
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = _ask()
    if secret is None:
        return 2
    if len(secret) < MIN_PASSWORD_LENGTH:
        print(
            f"the password must be at least {MIN_PASSWORD_LENGTH} characters; nothing was made",
            file=sys.stderr,
        )
        return 2
    if args.generate:
        print(f"token (shown once; sign in with it): {secret}", file=sys.stderr)
    print("# [console] in connector.toml:")
    print(f'password_hash = "{hash_password(secret)}"')
    return 0
