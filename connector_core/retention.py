"""Retention: which stored rows are old enough to delete, given the time and the settings.

Pure: no store, no clock. ``pruner.py`` runs it against a store; the rules of what each
table keeps are in ``store/pruning.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connector_core.config import RetentionConfig
from connector_core.store.pruning import PRUNE_RULES, Period, PruneRule

DAY = 86_400.0


def cutoff(period: Period, now: float, settings: RetentionConfig) -> float:
    """The moment before which a row dated for ``period`` is old (seconds since the epoch)."""
    days = settings.calls_days if period is Period.CALLS else settings.inbox_days
    return now - days * DAY


def is_old(dated: float, period: Period, now: float, settings: RetentionConfig) -> bool:
    """Whether a row dated ``dated`` has outlived ``period`` at ``now``."""
    return dated < cutoff(period, now, settings)


def cutoffs(
    now: float, settings: RetentionConfig, rules: tuple[PruneRule, ...] = PRUNE_RULES
) -> dict[str, float]:
    """Each rule's cutoff at ``now``, by rule name: one moment for a whole run."""
    return {rule.name: cutoff(rule.period, now, settings) for rule in rules}


@dataclass(frozen=True)
class PruneReport:
    """What one run deleted (or, dry, would delete), by rule name, in ``PRUNE_RULES`` order."""

    counts: Mapping[str, int] = field(default_factory=dict)
    dry_run: bool = False
    unfinished: bool = False  # stopped after its share of batches: rows older are left

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for the log: ``pruned 1200 rows: inbox 1000, calls 200``."""
        verb = "would prune" if self.dry_run else "pruned"
        parts = ", ".join(f"{name} {n}" for name, n in self.counts.items() if n)
        return f"{verb} {self.total} rows" + (f": {parts}" if parts else "")

    def table(self) -> str:
        """Per rule, for ``connector prune``: every rule, zero or not."""
        verb = "would delete" if self.dry_run else "deleted"
        width = max((len(name) for name in self.counts), default=0)
        lines = [f"  {name:<{width}}  {n}" for name, n in self.counts.items()]
        return "\n".join(
            [f"{verb} (rows per table):", *lines, f"  {'total':<{width}}  {self.total}"]
        )
