"""A stand-in for Sipuni's API on a loopback port: the schemes, click-to-call and the history.

It answers the three methods the connector uses the way ``shared/reference/sipuni-events.md``
§3 describes them, and checks every request's signature as Sipuni does:

- ``schema/list``: the schemes it was given;
- ``callback/call_number``: rings the employee, then the client (``reverse=0``; the client
  first with ``reverse=1``), and sends the call's webhooks to ``webhook_url`` as the PBX
  would, with the pauses of a real call scaled by ``speed``;
- ``statistic/export``: the CSV of every call it placed or played, in the days asked for.

A call may have its webhooks dropped (all of them, or only the final hang-up), so a test can
make calls that Sipuni knows and the connector never heard of: :meth:`SipuniSandbox.play`
takes any scenario of :mod:`connector_core.simulator.scenarios` with a ``delivery``.

[INF] Where the reference is silent: a bad ``hash`` or ``user`` gets HTTP 401 with
``{"success": false, "message": …}``; a click-to-call answers ``{"success": true,
"callbackId": …}`` and its final webhook carries that ``callbackId`` (C-PROXY's
behaviour); its webhooks look like an outbound call from the employee (sequence D).

By hand: ``python -m connector_core.simulator.sipuni_sandbox --webhook-url URL`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal

import aiohttp
from aiohttp import web

from connector_core.simulator import scenarios as sc
from connector_core.simulator.sender import send_call
from connector_core.sipuni_api import (
    SIPUNI_TZ,
    SchemeKind,
    SipuniScheme,
    history_csv,
    signature,
)

Delivery = Literal["all", "none", "no_final_hangup"]
"""Which of a call's webhooks reach the connector: every one, none, or all but event 2."""

DEFAULT_SCHEMES: tuple[SipuniScheme, ...] = tuple(
    SipuniScheme(number.removeprefix("000-"), name, kind)
    for (number, name), kind in (
        (sc.INBOUND_SCHEME, SchemeKind.INBOUND),
        (sc.OUTBOUND_SCHEME, SchemeKind.OUTBOUND),
        (sc.DISTRIBUTOR, SchemeKind.INBOUND),
        (sc.SALES, SchemeKind.INBOUND),
    )
)
_DIRECTION_WORD = {"inbound": "Входящий", "outbound": "Исходящий", "internal": "Внутренний"}


@dataclass
class PlacedCall:
    """A call the sandbox made or played: its webhooks, what was delivered, its history row."""

    scenario: sc.Scenario
    delivery: Delivery
    callback_id: str | None = None
    delivered: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def history_row(self) -> dict[str, str]:
        """The call as ``statistic/export`` lists it (columns of ``sipuni_api.COLUMNS``)."""
        e = self.scenario.expected
        first = self.scenario.events[0]
        started = datetime.fromtimestamp(e["started_at"], SIPUNI_TZ)
        answered_at = e["answered_at"]
        if e["direction"] == "inbound":
            source, destination = e["client_number"] or "", e["line_number"] or ""
        else:
            source = e["employee"] or first.get("short_src_num", "")
            destination = e["client_number"] or first.get("short_dst_num", "")
        return {
            "kind": _DIRECTION_WORD[e["direction"]],
            "status": "Отвечен" if e["answers"] else "Не отвечен",
            "started_at": started.strftime("%d.%m.%Y %H:%M:%S"),
            "scheme": first.get("treeName", ""),
            "source": source.lstrip("+"),
            "destination": destination.lstrip("+"),
            "answered_by": e["answered_by"] or "",
            "call_seconds": str(e["duration_seconds"] or 0),
            "talk_seconds": str(e["talk_seconds"]),
            "answer_seconds": str(answered_at - e["started_at"] if answered_at else 0),
            "record_id": self.scenario.call_id,
            "new_client": "",
            "callback_state": "",
        }


class SignatureRefused(Exception):
    """A request whose ``user`` or ``hash`` is not the account's."""


class SipuniSandbox:
    """Sipuni's API for one account, in memory.

    ``key``: the integration key requests must be signed with (a random one by default).
    ``extensions``: the employees a click-to-call may ring. ``webhook_url``: where the calls'
    webhooks go (the connector's ``…/sipuni/<token>``); it may be set after start.
    ``speed``: how much faster than real time the webhooks of a call follow each other.
    ``client_answers``: whether the client picks up a click-to-call. ``callback_delivery``:
    which webhooks of click-to-calls are sent. ``clock``: unix seconds, for the calls' times.
    """

    def __init__(
        self,
        *,
        account: str = sc.ACCOUNT,
        key: str | None = None,
        schemes: Iterable[SipuniScheme] = DEFAULT_SCHEMES,
        extensions: Iterable[str] = ("101", "102", "103"),
        webhook_url: str | None = None,
        speed: float = 100.0,
        client_answers: bool = True,
        callback_delivery: Delivery = "all",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.key = key or secrets.token_urlsafe(18)
        self.schemes = list(schemes)
        self.extensions = set(extensions)
        self.webhook_url = webhook_url
        self.speed = speed
        self.client_answers = client_answers
        self.callback_delivery: Delivery = callback_delivery
        self.clock = clock
        self.calls: list[PlacedCall] = []
        self.refused = 0  # requests refused for their signature
        self.requests: list[tuple[str, dict[str, str]]] = []  # (method, params without hash)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # --- what tests and the demo call ---------------------------------------------------

    def check_signature(self, params: dict[str, str]) -> None:
        """Raise ``SignatureRefused`` unless ``params`` carry this account's valid hash."""
        given = params.get("hash", "")
        signed = {k: v for k, v in params.items() if k != "hash"}
        if params.get("user") != self.account:
            raise SignatureRefused("unknown user")
        expected = signature(signed, self.key)
        if not hmac.compare_digest(given.lower().encode(), expected.encode()):
            raise SignatureRefused("Invalid hash")

    def play(self, scenario: sc.Scenario, delivery: Delivery = "all") -> PlacedCall:
        """Put ``scenario`` in the history and send the webhooks ``delivery`` lets through."""
        placed = PlacedCall(scenario, delivery)
        self.calls.append(placed)
        task = asyncio.get_running_loop().create_task(self._deliver(placed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return placed

    async def settled(self) -> None:
        """Wait until every webhook being sent has been sent."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def history(self, first: date, last: date) -> list[PlacedCall]:
        """The calls that started on the days ``first``…``last`` (the cabinet's time zone)."""
        return [
            c
            for c in self.calls
            if first
            <= datetime.fromtimestamp(c.scenario.expected["started_at"], SIPUNI_TZ).date()
            <= last
        ]

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on a port; yields the API's base URL (``http://127.0.0.1:<port>/api``), for
        ``sipuni_api_url``. Webhooks still being sent are waited for on the way out."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            yield f"http://{bound_host}:{bound_port}/api"
            await self.settled()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await runner.cleanup()

    def app(self) -> web.Application:
        """The aiohttp application: ``/api/<method>``, by GET query or POST form."""
        app = web.Application()
        app.router.add_route("*", "/api/{method:.+}", self._handle)
        return app

    # --- the API ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        params = {k: str(v) for k, v in request.query.items()}
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        try:
            self.check_signature(params)
        except SignatureRefused as exc:
            self.refused += 1
            return web.json_response({"success": False, "message": str(exc)}, status=401)
        method = request.match_info["method"].strip("/")
        self.requests.append((method, {k: v for k, v in params.items() if k != "hash"}))
        handler = {
            "schema/list": self._schema_list,
            "callback/call_number": self._call_number,
            "statistic/export": self._export,
        }.get(method)
        if handler is None:
            return web.json_response(
                {"success": False, "message": f"unknown method {method}"}, status=404
            )
        return handler(params)

    def _schema_list(self, params: dict[str, str]) -> web.Response:
        wanted = params.get("type", "")
        items = [
            {
                "id": int(s.id) if s.id.isdigit() else s.id,
                "name": s.name,
                "type": int(s.kind.value) if s.kind else 0,
                "createdAt": 1_700_000_000,
            }
            for s in self.schemes
            if not wanted or (s.kind and s.kind.value == wanted)
        ]
        return web.json_response({"success": True, "data": items})

    def _call_number(self, params: dict[str, str]) -> web.Response:
        missing = [p for p in ("phone", "sipnumber", "reverse", "antiaon") if p not in params]
        if missing:
            return _refuse(f"missing parameter(s): {', '.join(missing)}")
        phone, extension = params["phone"], params["sipnumber"]
        if not phone.isdigit():
            return _refuse("phone must be digits")
        if extension not in self.extensions:
            return _refuse(f"no employee with short number {extension}")
        callback_id = f"cb{next(self._ids)}"
        start = int(self.clock())
        build = sc.outbound_answered if self.client_answers else sc.outbound_unanswered
        scenario = build(
            extension,
            account=self.account,
            client=phone,
            start=start,
            call_id=f"{start}.{90000 + next(self._ids)}",
            duplicate_ring=False,
        )
        # The final webhook of an API call names the callback that started it (C-PROXY).
        events = [dict(e) for e in scenario.events]
        events[-1]["callbackId"] = callback_id
        placed = self.play(replace(scenario, events=events), self.callback_delivery)
        placed.callback_id = callback_id
        return web.json_response({"success": True, "callbackId": callback_id})

    def _export(self, params: dict[str, str]) -> web.Response:
        try:
            first = datetime.strptime(params.get("from", ""), "%d.%m.%Y").date()
            last = datetime.strptime(params.get("to", ""), "%d.%m.%Y").date()
        except ValueError:
            return _refuse("from and to must be dates DD.MM.YYYY")
        kinds = {"1": "inbound", "2": "outbound", "3": "internal"}
        kind = kinds.get(params.get("type", "0"))
        state = params.get("state", "0")
        rows = []
        for call in self.history(first, last):
            e = call.scenario.expected
            if kind and e["direction"] != kind:
                continue
            if (state == "1" and e["answers"]) or (state == "2" and not e["answers"]):
                continue
            rows.append(call.history_row())
        return web.Response(text=history_csv(rows), content_type="text/csv", charset="utf-8")

    # --- webhooks -----------------------------------------------------------------------

    async def _deliver(self, placed: PlacedCall) -> None:
        scenario = placed.scenario
        if placed.delivery == "none":
            return
        if placed.delivery == "no_final_hangup":
            scenario = sc.without_final_hangup(scenario)
        if self.webhook_url is None:
            return
        async with aiohttp.ClientSession() as session:
            sent = await send_call(session, self.webhook_url, scenario, speed=self.speed)
        placed.delivered = [dict(e) for e in scenario.events]
        placed.statuses = [s.status for s in sent]


def _refuse(message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=400)


def main(argv: list[str] | None = None) -> None:
    """Serve the sandbox until Ctrl-C, printing the two lines to put in ``connector.toml``."""
    parser = argparse.ArgumentParser(
        prog="python -m connector_core.simulator.sipuni_sandbox",
        description="Sipuni's API (schema/list, callback/call_number, statistic/export) "
        "for one account, in memory",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092, help="0: any free port")
    parser.add_argument("--account", default=sc.ACCOUNT, help="the account number (user)")
    parser.add_argument("--key", help="the integration key to accept (default: a random one)")
    parser.add_argument(
        "--webhook-url",
        help="where click-to-calls send their webhooks: the connector's …/sipuni/<token>"
        " (without it, calls are placed and listed but no webhook is sent)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="how much faster than real time a call goes"
    )
    parser.add_argument(
        "--extension",
        action="append",
        dest="extensions",
        help="an employee a click-to-call may ring (repeat it; default: 101, 102, 103)",
    )
    args = parser.parse_args(argv)
    sandbox = SipuniSandbox(
        account=args.account,
        key=args.key,
        webhook_url=args.webhook_url,
        speed=args.speed,
        extensions=args.extensions or ("101", "102", "103"),
    )

    async def serve() -> None:
        async with sandbox.serve(args.host, args.port) as url:
            print(f"Sipuni sandbox on {url} for account {sandbox.account}", flush=True)
            print(f"[accounts.{sandbox.account}] in connector.toml:", flush=True)
            print(f'sipuni_api_url = "{url}"', flush=True)
            print(f'sipuni_api_key = "{sandbox.key}"', flush=True)
            if sandbox.webhook_url is None:
                print("no --webhook-url: click-to-calls send no webhooks", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
