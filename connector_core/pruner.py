"""Retention at work: delete what has outlived ``[retention]``, a small batch at a time.

Each batch is one short transaction (on SQLite, one write through the group commit), with a
pause between batches, so webhooks and workers never wait behind a long delete. The
background round runs in one process of the cluster (the ``singleton:prune`` lease); it and
``connector prune`` share ``prune``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from connector_core import retention
from connector_core.clock import Clock
from connector_core.config import RetentionConfig
from connector_core.retention import PruneReport
from connector_core.store.base import Store
from connector_core.store.pruning import PRUNE_RULES, PruneRule

log = logging.getLogger(__name__)
PRUNE_SINGLETON = "singleton:prune"
# Batches in one supervised round: a round that ends now and then shows /readyz the loop is
# alive through a first run with weeks of rows to delete; the next round goes on at once.
ROUND_BATCHES = 200
Sleep = Callable[[float], Awaitable[None]]
OnBatch = Callable[[str, int], None]


async def prune(
    store: Store,
    settings: RetentionConfig,
    now: float,
    *,
    dry_run: bool = False,
    sleep: Sleep = asyncio.sleep,
    on_batch: OnBatch = lambda rule, deleted: None,
    rules: tuple[PruneRule, ...] = PRUNE_RULES,
    max_batches: int | None = None,
) -> PruneReport:
    """Delete (or, ``dry_run``, count) every row older than its retention at ``now``.

    ``on_batch(rule name, rows)`` hears each batch as it commits (metrics), so a run cut
    short still counts what it deleted. After ``max_batches`` batches the run stops with
    ``report.unfinished`` set.
    """
    cutoffs = retention.cutoffs(now, settings, rules)
    counts: dict[str, int] = {}
    batches = 0
    for rule in rules:
        if dry_run:
            counts[rule.name] = await store.count_prunable(rule, cutoffs[rule.name])
            continue
        counts[rule.name] = 0
        while True:
            deleted = await store.prune_batch(rule, cutoffs[rule.name], settings.batch_size)
            counts[rule.name] += deleted
            batches += 1
            if deleted:
                on_batch(rule.name, deleted)
            if deleted < settings.batch_size:
                break
            if max_batches is not None and batches >= max_batches:
                return PruneReport(counts, unfinished=True)
            await sleep(settings.batch_pause_seconds)
    return PruneReport(counts, dry_run=dry_run)


def prune_round(
    store: Store, settings: RetentionConfig, clock: Clock, on_batch: OnBatch
) -> Callable[[], Awaitable[bool]]:
    """The supervised background round: a run of at most ``ROUND_BATCHES`` batches, then a
    log line with its counts; it asks to go again at once when rows were left."""

    async def run() -> bool:
        report = await prune(
            store, settings, clock.now(), on_batch=on_batch, max_batches=ROUND_BATCHES
        )
        more = ", more to go" if report.unfinished else ""
        log.info("retention: %s%s", report.summary(), more)
        return report.unfinished

    return run
