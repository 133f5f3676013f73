"""``connector calls`` and ``connector trace``: the calls list and one call's trace, on the
command line, for people or as JSON (the read model is :mod:`connector_core.calls_view`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import datetime

from connector_core import calls_view
from connector_core.callrecords import HookCall
from connector_core.calls_view import CallFilter, CallSummary, CallTrace, RawEvent, ViewError
from connector_core.store.base import Store

EXIT_OK, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
# The webhook fields a trace line shows, in this order, when the event has them.
_EVENT_FIELDS = ("status", "treeNumber", "treeName", "last_called", "transfer_from")


def add_calls_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``connector calls``."""
    parser.add_argument("--since", help="calls started since: 2h, 30m, 3d, or an ISO date/time")
    parser.add_argument("--phone", help='the caller\'s number, any spelling: "8 (916) 123-45-67"')
    parser.add_argument("--account", help="only this Sipuni account")
    parser.add_argument("--extension", help="only calls that rang, or were made from, it")
    parser.add_argument("--outcome", help="answered, missed, not_answered, ringing or talking")
    parser.add_argument(
        "--status", help="only calls with an integration in it: dead, retrying, pending, done"
    )
    parser.add_argument("--integration", help="with --status: only this <account>/<name>")
    parser.add_argument("--limit", type=int, default=50, help="how many calls (default 50)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``connector trace``."""
    parser.add_argument("call_id", help="the call's id (as `connector calls` prints it)")
    parser.add_argument("--account", help="the call's account, if several have that id")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def calls(
    store: Store, regions: Mapping[str, str], args: argparse.Namespace, since: float | None
) -> int:
    """``connector calls``: print the calls the options name, newest first."""
    wanted = CallFilter(
        limit=args.limit,
        since=since,
        account=args.account,
        phone=args.phone,
        extension=args.extension,
        outcome=args.outcome,
        status=args.status,
        integration=args.integration,
    )
    try:
        found = await calls_view.list_calls(store, wanted, regions)
    except ViewError as exc:
        print(f"connector calls: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({"calls": calls_view.to_json(found)}, indent=2, ensure_ascii=False))
    elif not found:
        print("no stored call matches")
    else:
        print(render_calls(found))
    return EXIT_OK


async def trace(store: Store, args: argparse.Namespace) -> int:
    """``connector trace CALL_ID``: print everything stored about one call."""
    try:
        found = await calls_view.load_trace(store, args.call_id, args.account)
    except ViewError as exc:
        print(f"connector trace: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(calls_view.to_json(found), indent=2, ensure_ascii=False))
    else:
        print(render_trace(found))
    return EXIT_OK


# -- for people ------------------------------------------------------------------------------


def _local(seconds: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime(fmt)


def _zone() -> str:
    return datetime.now().astimezone().strftime("UTC%z")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


_DIRECTION = {"inbound": "in", "outbound": "out", "internal": "int", "unknown": "?"}


def render_calls(found: list[CallSummary]) -> str:
    """The calls as a table, one line each; times in the machine's time zone."""
    header = [f"started ({_zone()})", "call id", "account", "dir", "number", "rang", "answered"]
    header += ["outcome", "length", "integrations"]
    rows = [
        [
            _local(c.started_at),
            c.call_id,
            c.account,
            _DIRECTION[c.direction.value],
            c.number or c.employee or "-",
            # An outbound call rings no extension: its employee is who dialled.
            ",".join(c.extensions) or c.employee or "-",
            c.answered_by or "-",
            c.outcome.value + ("" if c.finished else " (open)"),
            _duration(c.duration_seconds),
            "  ".join(f"{i.integration.split('/', 1)[-1]} {i.status.value}" for i in c.integrations)
            or "-",
        ]
        for c in found
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_trace(found: CallTrace) -> str:
    """One call's trace for people: the call, Sipuni's webhooks, then each integration."""
    c, state = found.summary, found.state
    lines = [f"Call {c.call_id} of account {c.account}"]
    if c.direction.value == "outbound":
        # The client is the one called; the employee is who dialled.
        to = f"to {c.number}" if c.number else ""
        who = " ".join(x for x in (to, f"dialled by {c.employee}" if c.employee else "") if x)
    else:
        who = f"from {c.number}" if c.number else (f"by {c.employee}" if c.employee else "")
    # Sipuni's spelling, when it is more than the number without its "+".
    shown_raw = c.number_raw and c.number and c.number_raw != c.number.lstrip("+")
    raw = f" (sent as {c.number_raw})" if shown_raw else ""
    lines.append(f"  {c.direction.value} {who}{raw}".rstrip())
    if c.extensions:
        answered = f"; answered by {c.answered_by}" if c.answered_by else ""
        lines.append(f"  rang {', '.join(c.extensions)}{answered}")
    finished = f", finished by {state.finished_by}" if state.finished_by else ", still open"
    lines.append(
        f"  outcome {c.outcome.value}, length {_duration(c.duration_seconds)}"
        f" (talk {_duration(c.talk_seconds)}){finished}"
    )
    if state.schemes:
        path = " → ".join(
            f"{v.id} ({v.name})" if v.id and v.name else (v.id or v.name or "?")
            for v in state.schemes
        )
        lines.append(f"  schemes: {path}")
    lines.append(f"  started {_local(c.started_at)} ({_zone()})")
    lines += _click_to_call_lines(found)
    lines += ["", "Webhooks from Sipuni, in arrival order (received, event, Sipuni's time):"]
    lines += [f"  {_event_line(e)}" for e in found.events] or ["  none stored"]
    for integration in found.integrations:
        lines.append("")
        status = integration.status.value if integration.status else "not routed"
        link = f"  {integration.link}" if integration.link else ""
        lines.append(f"{integration.integration}: {status}{link}")
        for step in integration.routing:
            verdict = "sees the call" if step.sees else "does not see the call"
            lines.append(f"  routing at {_local(step.at, '%H:%M:%S')}: {verdict}: {step.reason}")
        shown: set[int] = set()
        for row in integration.rows:
            nxt = (
                f", next attempt {_local(row.next_attempt_at, '%H:%M:%S')}"
                if row.next_attempt_at and row.attempts
                else ""
            )
            error = f": {row.last_error}" if row.last_error and row.status != "done" else ""
            lines.append(
                f"  {row.hook} ({row.record}): {row.status}, {row.attempts} attempt(s){nxt},"
                f" dispatch id {row.dispatch_id}{error}"
            )
            for index, call in enumerate(integration.hook_calls):
                if call.record == row.record:
                    lines += _hook_lines(call)
                    shown.add(index)
        for index, call in enumerate(integration.hook_calls):
            if index not in shown:  # its row is gone (an older release's row, say)
                lines += _hook_lines(call)
    lines += [f"note: {note}" for note in found.notes]
    return "\n".join(lines)


def _click_to_call_lines(found: CallTrace) -> list[str]:
    """Where the call came from («Перезвонить»), and the click-to-calls started from it."""
    lines = []
    if (origin := found.started_from) is not None:
        cb = f", callbackId {origin.request.callback_id}" if origin.request.callback_id else ""
        lines.append(
            f"  started from the connector: click-to-call by {origin.request.by}"
            f" at {_local(origin.at, '%H:%M:%S')} from call {origin.call_id}{cb}"
        )
    for step in found.click_to_call:
        r = step.request
        said = (
            f"Sipuni started it, callbackId {r.callback_id or '-'}"
            if r.outcome == "started"
            else f"failed: {r.error}"
        )
        lines.append(
            f"  click-to-call at {_local(step.at, '%H:%M:%S')} by {r.by}: ring {r.extension},"
            f" then {r.phone}: {said}"
        )
    return lines


def _event_line(event: RawEvent) -> str:
    sipuni_time = _local(event.timestamp, "%H:%M:%S") if event.timestamp else "-"
    parts = [
        _local(event.received_at, "%H:%M:%S") + f".{int(event.received_at * 1000) % 1000:03d}",
        f"#{event.inbox_id}",
        f"{event.event or '?'} {event.event_name}".ljust(18),
        sipuni_time,
    ]
    src, dst = event.params.get("src_num"), event.params.get("dst_num")
    if src or dst:
        parts.append(f"{src or '?'} → {dst or '?'}")
    parts += [f"{name}={event.params[name]}" for name in _EVENT_FIELDS if event.params.get(name)]
    if event.status != "done":
        parts.append(f"[{event.status}{': ' + event.error if event.error else ''}]")
    return "  ".join(parts)


def _hook_lines(call: HookCall) -> list[str]:
    ended = call.outcome.value
    if call.retry_at is not None:
        ended += f", retry at {_local(call.retry_at, '%H:%M:%S')}"
    if call.error:
        ended += f": {call.error}"
    lines = [
        f"    attempt {call.attempt} at {_local(call.started_at, '%H:%M:%S')},"
        f" {call.seconds:.2f} s: {ended}"
    ]
    for request in call.requests:
        status = f"HTTP {request.status} " if request.status is not None else ""
        path = f" {request.path}" if request.path else ""
        lines.append(
            f"      request {request.method}{path}: {status}{request.outcome},"
            f" {request.seconds:.3f} s"
        )
    for decision in call.decisions:
        why = f": {decision.why}" if decision.why else ""
        link = f"  {decision.link}" if decision.link else ""
        lines.append(f"      decided {decision.what}{why}{link}")
        if decision.text:
            lines += [f"        | {line}" for line in decision.text.splitlines()]
    if call.dropped:
        lines.append(f"      ({call.dropped} more request(s) and decision(s) not kept)")
    return lines
