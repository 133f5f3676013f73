"""``connector reconcile``: compare Sipuni's call history with the calls received, now, and
record the calls that never arrived (or arrived without their end); per call, what was found
and done (:mod:`connector_core.reconcile`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from connector_core import reconcile
from connector_core.config import Config
from connector_core.errors import describe_error
from connector_core.reconcile import Finding, Report, Verdict
from connector_core.sipuni_api import SipuniApi
from connector_core.store.base import Store

EXIT_OK, EXIT_FAILED = 0, 1
_DONE = {
    Verdict.WHOLE: "received whole: nothing to do",
    Verdict.MISSING_CALL: "never received: recorded from Sipuni's history ({n} webhook(s))",
    Verdict.MISSING_END: "no final hang-up received: the hang-up recorded from Sipuni's history",
    Verdict.TOO_RECENT: "ended too recently: left for a later run",
}
_WOULD = {
    Verdict.MISSING_CALL: "never received: would be recorded ({n} webhook(s))",
    Verdict.MISSING_END: "no final hang-up received: the hang-up would be recorded",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``connector reconcile``."""
    parser.add_argument(
        "--since",
        default="2h",
        help="the calls started since: 2h, 30m, 3d, or an ISO date/time (default 2h)",
    )
    parser.add_argument("--account", help="only this Sipuni account")
    parser.add_argument(
        "--dry-run", action="store_true", help="say what is missing, record nothing"
    )


def accounts(config: Config, only: str | None) -> tuple[list[str], str | None]:
    """The accounts to reconcile, or why there are none."""
    if only is not None and only not in config.accounts:
        known = ", ".join(sorted(config.accounts)) or "none"
        return [], f"account {only} is not in the config (accounts: {known})"
    chosen = [only] if only else list(config.accounts)
    keyed = [n for n in chosen if config.accounts[n].sipuni_api_key is not None]
    if not keyed:
        which = f"account {only} has no" if only else "no account has a"
        return [], (
            f"{which} sipuni_api_key: Sipuni's call history cannot be read; set it"
            " (the integration key of Sipuni's cabinet, docs/sipuni.md)"
        )
    return keyed, None


def render(report: Report) -> str:
    """What the run found and did per call, then its summary line."""
    lines = [_line(f, report.dry_run) for f in report.findings]
    return "\n".join([*lines, report.summary()])


def _line(finding: Finding, dry_run: bool) -> str:
    row = finding.row
    said = (_WOULD if dry_run else _DONE).get(finding.verdict, _DONE[finding.verdict])
    said = said.format(n=len(finding.events))
    when = row.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    who = f", answered by {row.answered_by}" if row.answered_by else ""
    how = f" (found by {finding.matched_by})" if finding.matched_by == "time and number" else ""
    call_id = finding.call_id or reconcile.call_id_for(row)
    return (
        f"  {when} {call_id} {reconcile.row_direction(row)} {row.source or '-'} →"
        f" {row.destination or '-'}{who}: {said}{how}"
    )


async def run(
    store: Store, config: Config, args: argparse.Namespace, since: float, now: float
) -> int:
    """Reconcile each chosen account over [since, now] and print what was found and done."""
    chosen, why = accounts(config, args.account)
    if why is not None:
        print(f"connector reconcile: {why}", file=sys.stderr)
        return EXIT_FAILED
    code = EXIT_OK
    for number in chosen:
        api = SipuniApi.of_account(config.accounts[number])
        assert api is not None  # accounts() kept only those with a key
        try:
            async with api:
                report = await reconcile.reconcile_account(
                    store,
                    api,
                    since=datetime.fromtimestamp(since, UTC),
                    until=datetime.fromtimestamp(now, UTC),
                    now=now,
                    settle_seconds=config.reconcile.settle_minutes * 60,
                    dry_run=args.dry_run,
                )
        except Exception as exc:
            print(
                f"connector reconcile: account {number}: Sipuni's call history could not be"
                f" read: {describe_error(exc)}",
                file=sys.stderr,
            )
            code = EXIT_FAILED
            continue
        print(render(report))
        if report.appended:
            print(
                f"account {number}: {report.appended} webhook(s) added to the inbox; the"
                " service's worker processes them as it does Sipuni's"
            )
    return code
