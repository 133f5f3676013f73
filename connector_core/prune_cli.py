"""``connector prune``: one retention run now, on the configured store, with what it deleted
(or, ``--dry-run``, would delete) per table."""

from __future__ import annotations

import argparse
import sys
import time

from connector_core import pruner
from connector_core.config import RetentionConfig
from connector_core.store.base import Store

EXIT_OK, EXIT_OFF = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``connector prune``."""
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )


def refused(settings: RetentionConfig) -> str | None:
    """Why nothing is to be pruned, or ``None``."""
    if settings.enabled:
        return None
    return (
        "connector prune: retention is off ([retention] enabled = false): nothing deleted;"
        " set enabled = true (or remove the line) to delete finished work after"
        " calls_days / inbox_days"
    )


async def run(store: Store, settings: RetentionConfig, args: argparse.Namespace) -> int:
    """Prune (or count) once and print the counts per table."""
    if (why := refused(settings)) is not None:
        print(why, file=sys.stderr)
        return EXIT_OFF
    print(
        f"retention: calls {settings.calls_days:g} days, inbox {settings.inbox_days:g} days"
        f", {settings.batch_size} rows per batch"
    )
    report = await pruner.prune(store, settings, time.time(), dry_run=args.dry_run)
    print(report.table())
    return EXIT_OK
