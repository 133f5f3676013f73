"""The ``connector`` command: init, serve, check, plugins, schema, replay, calls, trace…"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import json
import os
import random
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypedDict, TypeVar
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from connector_core import app as service
from connector_core import (
    calls_cli,
    demo,
    forget,
    init_config,
    prune_cli,
    public_url,
    reconcile_cli,
    settings_check,
)
from connector_core.appkeys import CLOCK, DISPATCHER, HOST, INTEGRATIONS, STORE, WORKER
from connector_core.clock import Clock, SystemClock
from connector_core.cluster import Role, WorkerLocked
from connector_core.config import (
    Config,
    StorageConfig,
    config_json_schema,
    default_config,
    load_config,
    read_config_text,
    scrub_secrets,
)
from connector_core.console import password_cli as console_password
from connector_core.errors import ConfigError
from connector_core.events import EventError, SipuniEvent, parse_event
from connector_core.hooks import PluginHost
from connector_core.httplog import Redactor
from connector_core.integrations import CheckLevel
from connector_core.logcontext import setup_logging
from connector_core.prompts import Questions, TerminalAsker
from connector_core.simulator import scenarios
from connector_core.simulator.sender import send_calls
from connector_core.store import sqlite
from connector_core.store.base import Dispatch, InboxItem, Store, StoreInfo, StoreUnavailable
from connector_core.store.choose import NoPostgres, inspect_store, make_store
from connector_core.store.migrations import SchemaError, too_new
from connector_core.store.sqlite_commit import cannot_create
from connector_core.store.urls import masked_url, url_password

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_CONFIG = 0, 1, 2
DEFAULTS = Path(__file__).with_name("defaults.toml")


NO_CONFIG_FILE = (
    "no config file (no --config, no $CONNECTOR_CONFIG, no connector.toml in {cwd}):"
    " the embedded demo defaults, for trying only"
)


def _config_path(given: str | None) -> Path | None:
    """--config, then $CONNECTOR_CONFIG, then ./connector.toml; None means embedded defaults."""
    if given:
        return Path(given)
    if os.environ.get("CONNECTOR_CONFIG"):
        return Path(os.environ["CONNECTOR_CONFIG"])
    local = Path("connector.toml")
    return local if local.exists() else None


def _named_plugins(text: str) -> set[str]:
    """The plugins of the config's enabled integrations: the only ones imported.

    A disabled integration's plugin is not imported, so its settings are not checked
    (``load_config`` warns about that) — a broken or absent package cannot stop the service.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return set()  # load_config reports the syntax error with its position
    names = set()
    for account in (raw.get("accounts") or {}).values():
        for name, table in ((account or {}).get("integrations") or {}).items():
            table = table if isinstance(table, dict) else {}
            plugin = table.get("plugin", name)
            if isinstance(plugin, str) and table.get("enabled", True) is not False:
                names.add(plugin)
    return names


def load(given: str | None) -> tuple[Config, PluginHost]:
    """Read the config, importing only the plugins it names (enabled or not).

    A named plugin that is installed but cannot be used (it does not import, or it was
    refused: a misspelt hook) is a ``ConfigError`` naming the plugin and its function.
    """
    host = PluginHost()
    path = _config_path(given)
    if path is None:
        host.load(_named_plugins(DEFAULTS.read_text(encoding="utf-8")))
        _refuse_broken_plugins(host)
        config = default_config(host.types)
        # Said first: started from the wrong folder, a service would otherwise run on the
        # public demo account with nothing but the token's warning to show for it.
        config.warnings.insert(0, NO_CONFIG_FILE.format(cwd=Path.cwd()))
        return config, host
    try:
        text = read_config_text(path)
    except (OSError, UnicodeDecodeError):
        text = ""  # load_config says what is wrong with the file
    host.load(_named_plugins(text))
    _refuse_broken_plugins(host)
    return load_config(path, types=host.types), host


def _refuse_broken_plugins(host: PluginHost) -> None:
    # Plugins not installed at all are left to load_config: it names the config line.
    installed = host.available()
    broken = sorted((name, error) for name, error in host.errors.items() if name in installed)
    if broken:
        raise ConfigError([f"plugin '{name}': {error}" for name, error in broken])


def _readable_by_others(path: Path) -> str | None:
    """What to say of a config file other users of the machine may read: it holds the webhook
    token (whoever has it can send calls) and, unless they come from the environment, keys."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{path} may be read by other users of this machine (mode {mode:o}), and it holds the"
        f" webhook token and the CRM keys: chmod 600 {path}"
    )


def _print_warnings(config: Config) -> None:
    for line in config.warnings:
        print(f"warning: {line}", file=sys.stderr)


def _print_config_errors(error: ConfigError) -> None:
    print(f"The configuration has {len(error.errors)} error(s):", file=sys.stderr)
    for line in error.errors:
        print(f"  - {line}", file=sys.stderr)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {text!r}")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    config, host = load(args.config)
    listen = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v}
    if listen:
        config = config.model_copy(update={"server": config.server.model_copy(update=listen)})
    setup_logging(config.logging.level, config.secrets(), json_lines=config.logging.json_format)
    _print_warnings(config)
    try:
        service.run(config, host, Role(args.role))
    except WorkerLocked as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        # Nothing was acknowledged yet: a one-line reason, not a traceback.
        where = f"{config.server.host}:{config.server.port}"
        hint = _LISTEN_HINTS[exc.errno]
        print(f"cannot listen on {where}: {os.strerror(exc.errno)}; {hint}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process (another connector?) listens there: stop it, or choose"
    " another port with --port or [server] port",
    errno.EADDRNOTAVAIL: "this machine has no such address: correct --host or [server] host"
    " (0.0.0.0 listens on every address)",
    errno.EACCES: "ports below 1024 need root: listen on a higher port, behind a web server"
    " if Sipuni must reach port 80 or 443",
}


async def _with_service(
    config: Config,
    host: PluginHost,
    body: Callable[[web.Application], Awaitable[int]],
    store_factory: service.StoreFactory = make_store,
) -> int:
    """Start the service's contexts without a listening socket, run ``body(app)``, stop."""
    app = service.create_app(config, host=host, background=False, store_factory=store_factory)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        return await body(app)
    finally:
        await runner.cleanup()


def cmd_check(args: argparse.Namespace) -> int:
    config, host = load(args.config)  # an invalid config: main() prints it, exit 2
    _print_warnings(config)
    path = _config_path(args.config)
    readable = _readable_by_others(path) if path is not None else None
    if readable is not None:
        print(f"warning: {readable}", file=sys.stderr)
    if path is None:
        # On stdout too: a script reading only it must not take the demo for its own file.
        print("configuration: ok (the embedded demo defaults: no config file was read)")
    else:
        print("configuration: ok")

    async def checks(app: web.Application) -> int:
        failed = 0
        sipuni = {}
        for number, account in config.accounts.items():
            sipuni[number] = read = await settings_check.read_sipuni_schemes(account)
            failed += read.problem is not None
            if read.skipped is None:  # a skip is said where an integration names schemes
                print(_sipuni_line(number, read))
        integrations = app[INTEGRATIONS]
        if not integrations:
            print("no enabled integrations")
        for key, integration in integrations.items():
            result = await service.check_authorization(app[HOST], integration)
            failed += not result.ok
            reason = f" ({result.reason})" if result.reason else ""
            print(f"{key} [{integration.type.name}]: {result.status.value}{reason}")
            if not result.ok:
                continue  # the settings can be compared with the CRM only once it answers
            findings = await settings_check.check_settings(
                app[HOST], integration, app[STORE], sipuni.get(integration.account)
            )
            failed += any(f.level is CheckLevel.ERROR for f in findings)
            for finding in findings:
                print(f"  {settings_check.describe(integration, finding)}")
        return EXIT_CHECK_FAILED if failed else EXIT_OK

    async def run() -> int:
        with tempfile.TemporaryDirectory(prefix="connector-check-") as scratch:
            stand_in = Path(scratch) / "check.db"
            store_ok, use_stand_in = await _check_store(config, stand_in)
            factory: service.StoreFactory = make_store
            if use_stand_in:
                factory = functools.partial(_stand_in_store, stand_in)
            code = await _with_service(config, host, checks, factory)
            return code if store_ok else EXIT_CHECK_FAILED

    return asyncio.run(run())


def _sipuni_line(number: str, read: settings_check.SipuniSchemes) -> str:
    """What ``connector check`` says of an account's schemes in Sipuni."""
    if read.problem is not None:
        return f"error: accounts.{number}.sipuni_api_key: Sipuni's schemes: {read.problem}"
    names = ", ".join(f"«{s.name}»" for s in read.schemes or []) or "none"
    return f"sipuni api {number}: ok, {len(read.schemes or [])} scheme(s): {names}"


async def _check_store(config: Config, stand_in: Path) -> tuple[bool, bool]:
    """Print what ``connector check`` says of the store, creating and migrating nothing.

    Returns whether the store is usable, and whether the integrations' checks must read a
    stand-in at ``stand_in`` instead: the real store is opened only when it is at this
    release's version (opening it would create or upgrade it). The stand-in is empty (what a
    store not created yet holds) or, for an older SQLite file, an upgraded copy of it.
    """
    storage = config.storage
    url = storage.url.get_secret_value() if storage.url is not None else None
    setting, where = ("storage.path", str(storage.path)) if url is None else ("storage.url", "")
    if url is not None:
        where = masked_url(url)
    try:
        info = await inspect_store(storage)
    except StoreUnavailable as exc:
        # A driver's message may quote the URL: never its password.
        reason = Redactor(config.secrets())(str(exc))
        missing = url is None or isinstance(exc, NoPostgres)
        problem = reason if missing else f"cannot connect to {where}: {reason}"
        if not missing and url is not None and url_password(url) is None:
            problem += (
                "; the URL has no password: set CONNECTOR_STORAGE_URL to the whole URL with"
                " it (it replaces storage.url)"
            )
        print(f"error: {setting}: {problem}")
        return False, True
    exists = url is not None or storage.path.exists()
    unwritable = None if exists else cannot_create(storage.path)
    if unwritable is not None:
        print(f"error: {setting}: {unwritable}")
        return False, True
    line = _store_line(info, exists=exists)
    if info.version > info.latest:
        print(f"error: {setting}: {info.where}: {too_new(info.version, info.latest)}")
        return False, True
    print(line)
    if info.version == info.latest:
        return True, False
    if url is None and info.version:
        await asyncio.to_thread(sqlite.backup, storage.path, stand_in)
    return True, True


def _stand_in_store(path: Path, _storage: StorageConfig, clock: Clock) -> Store:
    return make_store(StorageConfig(path=path), clock)


def _store_line(info: StoreInfo, *, exists: bool) -> str:
    """The line ``connector check`` prints for a store it can use."""
    head = f"store: {info.backend} {info.where}"
    if info.version == info.latest:
        return f"{head}: schema version {info.version}"
    if not exists:
        return f"{head}: will be created at schema version {info.latest} when the service starts"
    if info.version == 0:
        return (
            f"{head}: empty; its tables will be created at schema version {info.latest}"
            " when the service starts"
        )
    return (
        f"{head}: schema version {info.version};"
        f" will be upgraded to {info.latest} when the service starts"
    )


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the SQLite store, taken while the service runs."""
    config, _ = load(args.config)
    if config.storage.url is not None:
        print(
            "connector backup: the store is PostgreSQL; back it up with pg_dump"
            " (pg_dump --format=custom --file=connector.dump DATABASE_URL), restore it with"
            " pg_restore",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / config.storage.path.name
    if dest.exists() and not args.force:
        print(f"connector backup: {dest} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_CHECK_FAILED
    try:
        sqlite.backup(config.storage.path, dest)
    except StoreUnavailable as exc:
        print(f"connector backup: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    print(f"backed up {config.storage.path} to {dest}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """Ask the set-up questions and write the config (:mod:`connector_core.init_config`)."""
    path = Path(args.config or os.environ.get("CONNECTOR_CONFIG") or init_config.DEFAULT_FILE)
    try:
        init_config.refuse_existing(path, force=args.force)
        host = PluginHost()
        host.load()
        for name, error in sorted(host.errors.items()):
            print(f"warning: plugin {name} cannot be used: {error}", file=sys.stderr)
        questions = Questions(TerminalAsker())
        asyncio.run(init_config.run(path, questions, host, force=args.force))
    except init_config.InitError as exc:
        print(f"connector init: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except EOFError:
        print("\nconnector init: the input ended before every answer; nothing was written")
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("\nconnector init: stopped; nothing was written")
        return EXIT_CHECK_FAILED
    return EXIT_OK


class _PluginEntry(TypedDict):
    """One installed plugin as `connector plugins --json` prints it."""

    name: str
    module: str
    version: str | None
    hooks: list[str]
    integration_types: dict[str, dict[str, Any]]
    error: str | None


def cmd_plugins(args: argparse.Namespace) -> int:
    host = PluginHost()
    host.load()
    entries: list[_PluginEntry] = []
    for info in host.info():
        types: dict[str, dict[str, Any]] = {}
        for name in info.integration_types:
            schema = host.types[name].settings_model.model_json_schema()
            scrub_secrets(schema)  # a secret's default must not be printed
            types[name] = schema
        entries.append(
            {
                "name": info.name,
                "module": info.module,
                "version": info.version,
                "hooks": list(info.hooks),
                "integration_types": types,
                "error": info.error,
            }
        )
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return EXIT_OK
    for entry in entries:
        print(f"{entry['name']} {entry['version'] or ''}  ({entry['module']})")
        if entry["error"]:
            print(f"  error: {entry['error']}")
        for hook in entry["hooks"]:
            print(f"  hook: {hook}")
        for name, schema in entry["integration_types"].items():
            print(f"  integration type '{name}', settings:")
            for field, spec in schema.get("properties", {}).items():
                kind = spec.get("type") or spec.get("anyOf") or spec.get("$ref", "")
                print(
                    f"    {field}: {json.dumps(kind, ensure_ascii=False)}"
                    f"  {spec.get('description', '')}".rstrip()
                )
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    host = PluginHost()
    host.load()
    print(json.dumps(config_json_schema(host.types), indent=2, ensure_ascii=False))
    return EXIT_OK


def read_recording(
    path: Path, default_account: str | None
) -> list[tuple[str, dict[str, Any]] | str]:
    """Events from a file: JSON lines ``{"account": …, "params": {…}}`` or query strings.

    A line that cannot be read is returned as the reason, so replay counts it as refused.
    """
    events: list[tuple[str, dict[str, Any]] | str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line, parse_float=str)
            except json.JSONDecodeError as exc:
                events.append(f"line {number}: not valid JSON ({exc.msg})")
                continue
            params = record.get("params", record)
            account = record.get("account", default_account)
            if not isinstance(params, dict):
                events.append(f'line {number}: "params" must be an object of Sipuni fields')
                continue
        else:
            params = dict(parse_qsl(line.split("?", 1)[-1], keep_blank_values=True))
            account = default_account
        if account is None:
            raise SystemExit(f'{path}:{number}: no account: pass --account or add "account"')
        events.append((str(account), params))
    return events


def cmd_replay(args: argparse.Namespace) -> int:
    config, host = load(args.config)  # an invalid config: main() prints it, exit 2
    setup_logging(config.logging.level, config.secrets(), json_lines=config.logging.json_format)
    if bool(args.file) == bool(args.since):
        print("replay needs a FILE or --since (not both)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.since:
        since = parse_since(args.since, time.time())
        return asyncio.run(_with_service(config, host, lambda app: _replay_stored(app, since)))
    events = read_recording(Path(args.file), args.account)

    async def replay(app: web.Application) -> int:
        store = app[STORE]
        accepted = refused = 0
        for index, event in enumerate(events, 1):
            if isinstance(event, str):
                print(f"event {index}: refused: {event}", file=sys.stderr)
                refused += 1
                continue
            account, params = event
            if account not in config.accounts:
                print(f"event {index}: account {account} is not in the config", file=sys.stderr)
                refused += 1
                continue
            try:
                parsed = parse_event(params)
            except EventError as exc:
                print(f"event {index}: refused: {exc}", file=sys.stderr)
                refused += 1
                continue
            if isinstance(parsed, SipuniEvent):
                await store.append_event(account, params, app[CLOCK].now(), parsed)
                accepted += 1
            if index % 1000 == 0:
                print(f"{index}/{len(events)} read", file=sys.stderr)
        stats = await _finish_work(app)
        print(
            f"replayed {accepted} event(s), refused {refused}; "
            f"{stats['calls_total']} call(s), {stats['dispatches_pending']} hook call(s) "
            f"waiting for retry, {stats['dispatches_dead']} dead-lettered"
        )
        return EXIT_OK if not refused else EXIT_CHECK_FAILED

    return asyncio.run(_with_service(config, host, replay))


async def _finish_work(app: web.Application) -> dict[str, int]:
    """Process what is stored and run every hook call that is due now."""
    worker, dispatcher = app[WORKER], app[DISPATCHER]
    while await worker.drain():
        pass
    while await dispatcher.dispatch_due():
        await dispatcher.wait_idle()
    return await app[STORE].stats()


async def _replay_stored(app: web.Application, since: float) -> int:
    """Run stored events through the tracker and router again.

    The tracker already has them, so nothing is merged twice; what replay adds is routing:
    integrations added since, or whose rows were dropped, get the hook calls they are owed.
    """
    store, worker = app[STORE], app[WORKER]
    after, count, set_aside = 0, 0, 0
    while items := await store.inbox_items(since=since, after_id=after, limit=1000):
        ran = await worker.replay(items)
        count, set_aside = count + ran, set_aside + len(items) - ran
        after = items[-1].id
        print(f"{count} stored event(s) replayed", file=sys.stderr)
    stats = await _finish_work(app)
    print(
        f"replayed {count} stored event(s) received since {_when(since)}; "
        f"{stats['dispatches_pending']} hook call(s) waiting for retry, "
        f"{stats['dispatches_dead']} dead-lettered"
        + (f"; {set_aside} quarantined or dropped, not replayed" if set_aside else "")
    )
    return EXIT_OK


def cmd_journal(args: argparse.Namespace) -> int:
    config, host = load(args.config)

    async def show(app: web.Application) -> int:
        store = app[STORE]
        keys = [k for k in app[INTEGRATIONS] if args.integration in (k, k.split("/", 1)[1])]
        if not keys:
            print(f"no enabled integration named {args.integration}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        for key in keys:
            entries = await store.effects(key).items("journal:")
            for name, value in entries:
                print(
                    f"{key} {name.removeprefix('journal:')} {json.dumps(value, ensure_ascii=False)}"
                )
            if not entries:
                # Said, not left blank: most plugins (Usedesk) keep no journal at all.
                print(
                    f"{key}: no journal entries (only a plugin that journals, such as"
                    " amocrm_stub, writes them); what a call did: `connector trace <call_id>`",
                    file=sys.stderr,
                )
        return EXIT_OK

    return asyncio.run(_with_service(config, host, show))


# The scenario builders differ in their other parameters; all take call_id and start.
KINDS: dict[str, Callable[..., scenarios.Scenario]] = {
    "inbound_answered": scenarios.inbound_answered,
    "inbound_missed": scenarios.inbound_missed,
    "inbound_transferred": scenarios.inbound_transferred,
    "scheme_transfer": scenarios.scheme_transfer,
    "outbound_answered": scenarios.outbound_answered,
    "outbound_unanswered": scenarios.outbound_unanswered,
    "internal": scenarios.internal,
}


def simulated_calls(kinds: list[str], count: int, seed: int) -> list[scenarios.Scenario]:
    """``count`` calls cycling through ``kinds``, each with its own id and a random client."""
    rng = random.Random(seed)
    start = int(time.time())
    calls = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        extra = {} if kind == "internal" else {"client": f"7916{rng.randrange(10**7):07d}"}
        calls.append(
            KINDS[kind](call_id=f"{start + i}.{rng.randrange(10**6)}", start=start + i, **extra)
        )
    return calls


def simulate_target(args: argparse.Namespace) -> tuple[str, str]:
    """Where ``simulate`` sends, and with which account's token: ``--url`` and ``--token``
    when given, else the config's (the address it listens on, from this machine; the token
    of ``--account``, or of its first account). With no config file: the demo's."""
    url, token = args.url, args.token
    if url is None or token is None:
        config, _ = load(args.config)
        if url is None:
            host = config.server.host
            host = "127.0.0.1" if host in public_url.WILDCARD_HOSTS else host
            url = f"http://{f'[{host}]' if ':' in host else host}:{config.server.port}"
        if token is None:
            number = args.account or next(iter(config.accounts))
            if number not in config.accounts:
                known = ", ".join(config.accounts)
                raise ConfigError([f"--account {number}: no such account; the config has {known}"])
            token = config.accounts[number].token.get_secret_value()
    return str(url).rstrip("/"), str(token)


def cmd_simulate(args: argparse.Namespace) -> int:
    kinds = list(KINDS) if args.kinds == "all" else args.kinds.split(",")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(
            f"unknown call kind(s): {', '.join(unknown)}; known: {', '.join(KINDS)}",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    calls = simulated_calls(kinds, args.count, args.seed)
    try:
        base, token = simulate_target(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    url = f"{base}/sipuni/{token}"
    try:
        sent = asyncio.run(
            send_calls(url, calls, method=args.method, speed=args.speed, stagger=args.stagger)
        )
    except aiohttp.ClientConnectionError as exc:
        print(
            f"cannot reach the service at {base}: {exc}; start it with `connector serve`"
            " (or `connector demo`), or give its address with --url",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    refused = [s for s in sent if s.status != 200]
    print(
        f"sent {len(calls)} call(s), {len(sent)} webhook(s): "
        f"{len(sent) - len(refused)} acknowledged, {len(refused)} refused"
    )
    for i, call in enumerate(calls):
        print(f"  {call.call_id}  {kinds[i % len(kinds)]}")
    if len(refused) < len(sent):
        print("what became of each: `connector trace <call id>` (or `connector calls`)")
    for s in refused[:10]:
        print(f"  {s.call_id}: HTTP {s.status} {s.body[:200]}", file=sys.stderr)
    if any(s.status == 404 for s in refused):
        print(
            "404: the service has no account with this token; give the account's token"
            " (accounts.<number>.token in its config) with --token, or its config with --config",
            file=sys.stderr,
        )
    return EXIT_OK if not refused else EXIT_CHECK_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    try:
        asyncio.run(
            _until_terminated(
                demo.run(
                    port=args.port,
                    sandbox_port=args.sandbox_port,
                    speed=args.speed,
                    keep_running=not args.once,
                )
            )
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        # aiohttp's message names the address: the service's or the sandbox's.
        print(
            f"cannot start the demo: {exc.strerror or exc};"
            f" the service listens on {args.port}, the Usedesk sandbox on {args.sandbox_port}:"
            " choose free ports with --port and --sandbox-port",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return EXIT_OK


async def _until_terminated(work: Awaitable[Any]) -> None:
    """``work``, stopped by SIGTERM as Ctrl-C stops it: cancelled, so that it cleans up (the
    demo's temporary folder, whose store holds the simulated callers' numbers)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _no_store_yet(config: Config) -> bool:
    """A SQLite store whose file does not exist: opening it would create it empty."""
    return config.storage.url is None and not Path(config.storage.path).exists()


def _read_store(config: Config, command: str, body: Callable[[Store], Awaitable[int]]) -> int:
    """``_with_store`` for a command that only looks at what is stored: a SQLite file that
    does not exist yet is named (a wrong config path, or a service never started) rather
    than created empty by opening it."""
    if _no_store_yet(config):
        print(
            f"connector {command}: no store at {config.storage.path}: nothing is stored there"
            " (is it the config the service runs with? the service creates it when it starts)",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return asyncio.run(_with_store(config, body))


async def _with_store(config: Config, body: Callable[[Store], Awaitable[int]]) -> int:
    """Open the configured store, run ``body(store)``, close it."""
    store = make_store(config.storage, SystemClock())
    await store.open()
    try:
        return await body(store)
    finally:
        await store.close()


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Row(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=_Row)


@dataclass(frozen=True)
class _SetAside(Generic[R]):
    """Work set aside after failing (dead letters, quarantined webhooks), as the CLI sees it."""

    name: str  # as the messages name it: "the dead-letter queue"
    ids_hint: str  # what to type when no id was given
    rows: Callable[[Store, int], Awaitable[list[R]]]  # the set-aside rows, oldest first
    get: Callable[[Store, int], Awaitable[R | None]]
    is_set_aside: Callable[[R], bool]
    line: Callable[[R], str]  # one row of `list`
    shown: Callable[[Store, R], Awaitable[dict[str, Any]]]  # `show`, as JSON
    label: Callable[[R], str]  # what the row is, after its id
    requeue: Callable[[Store, int], Awaitable[bool]]
    drop: Callable[[Store, int], Awaitable[bool]]
    requeued_note: str = ""


def _manage(args: argparse.Namespace, aside: _SetAside[Any]) -> int:
    """``list``, ``show``, ``retry`` or ``drop`` set-aside work; exit 1 if an id is not there."""
    config, _ = load(args.config)

    async def run(store: Store) -> int:
        if args.action == "list":
            rows = await aside.rows(store, args.limit)
            if not rows:
                print(f"{aside.name} is empty")
            for row in rows:
                print(aside.line(row))
            return EXIT_OK
        ids: list[int] = list(args.ids)
        if args.action == "retry" and args.all:
            ids = [row.id for row in await aside.rows(store, 1_000_000)]
            if not ids:  # nothing to do is not a failure (a cron job runs this)
                print(f"{aside.name} is empty: nothing to retry")
                return EXIT_OK
        if not ids:
            print(aside.ids_hint, file=sys.stderr)
            return EXIT_CHECK_FAILED
        failed = 0
        for row_id in ids:
            row = await aside.get(store, row_id)
            if row is None or not aside.is_set_aside(row):
                print(f"{row_id}: not in {aside.name}", file=sys.stderr)
                failed += 1
                continue
            if args.action == "show":
                shown = await aside.shown(store, row)
                print(json.dumps(shown, indent=2, ensure_ascii=False))
            elif args.action == "retry":
                await aside.requeue(store, row_id)
                print(f"{row_id}: queued again ({aside.label(row)}){aside.requeued_note}")
            else:
                await aside.drop(store, row_id)
                print(f"{row_id}: dropped ({aside.label(row)})")
        return EXIT_CHECK_FAILED if failed else EXIT_OK

    return _read_store(config, args.command, run)


async def _dead_letter_shown(store: Store, row: Dispatch) -> dict[str, Any]:
    call = await store.load_call(row.account, row.call_id)
    summary = call.model_dump(mode="json", exclude={"events"}) if call else None
    record = row.record.model_dump(mode="json") if row.record else None
    return {"dispatch": {**row.__dict__, "record": record}, "call": summary}


async def _quarantined_shown(store: Store, item: InboxItem) -> dict[str, Any]:
    event = item.event.model_dump(mode="json") if item.event is not None else None
    return {"item": {**item.__dict__, "event": event}}


DEAD_LETTERS: _SetAside[Dispatch] = _SetAside(
    name="the dead-letter queue",
    ids_hint="name the dead-letter ids (see `connector dlq list`), or --all",
    rows=lambda store, limit: store.dead_dispatches(limit=limit),
    get=lambda store, row_id: store.get_dispatch(row_id),
    is_set_aside=lambda d: d.status == "dead",
    line=lambda d: (
        f"{d.id:>6}  {_when(d.created_at)}  {d.integration}  {d.call_id}  "
        f"{d.key}  attempts={d.attempts}  {d.last_error}"
    ),
    shown=_dead_letter_shown,
    label=lambda d: f"{d.integration} {d.key}",
    requeue=lambda store, row_id: store.requeue_dispatch(row_id),
    drop=lambda store, row_id: store.drop_dispatch(row_id),
)
QUARANTINE: _SetAside[InboxItem] = _SetAside(
    name="the quarantine",
    ids_hint="name the quarantined ids (see `connector quarantine list`), or --all",
    rows=lambda store, limit: store.quarantined_events(limit=limit),
    get=lambda store, item_id: store.get_event(item_id),
    is_set_aside=lambda i: i.status == "quarantined",
    line=lambda i: (
        f"{i.id:>6}  {_when(i.received_at)}  {i.account}  {i.params.get('call_id', '')}  "
        f"event={i.params.get('event', '')}  attempts={i.attempts}  {i.last_error}"
    ),
    shown=_quarantined_shown,
    label=lambda i: f"call {i.params.get('call_id', '')}",
    requeue=lambda store, item_id: store.requeue_event(item_id),
    drop=lambda store, item_id: store.drop_event(item_id),
    requeued_note="; a running service takes it up",
)


def cmd_forget(args: argparse.Namespace) -> int:
    """Drop the stored CRM links of a number or a call (:mod:`connector_core.forget`)."""
    config, _ = load(args.config)
    try:
        req = forget.request(
            config, phone=args.phone, call_id=args.call, integration=args.integration
        )
    except forget.ForgetError as exc:
        print(f"connector forget: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    async def run(store: Store) -> int:
        dropped = await forget.forget(store, req)
        for integration, key in dropped:
            print(f"forgot {integration} {key}")
        if not dropped:
            print(f"no stored links of {req.what}; nothing to forget")
            note = config.not_configured(req.integrations or ())
            if note is not None:
                print(f"note: {note}", file=sys.stderr)
        else:
            print(f"{len(dropped)} link(s) of {req.what} dropped; the next call looks it up again")
        return EXIT_OK

    return _read_store(config, "forget", run)


def cmd_dlq(args: argparse.Namespace) -> int:
    """The dead-letter queue: hook calls that failed for good, and what to do with them."""
    return _manage(args, DEAD_LETTERS)


def cmd_quarantine(args: argparse.Namespace) -> int:
    """Stored webhooks whose processing kept failing, and what to do with them."""
    return _manage(args, QUARANTINE)


def cmd_calls(args: argparse.Namespace) -> int:
    """Recent calls, found by number, extension, outcome or integration status."""
    config, _ = load(args.config)
    since = parse_since(args.since, time.time()) if args.since else None
    regions = {number: account.default_region for number, account in config.accounts.items()}
    if args.integration is not None:
        # The calls table heads its column with the bare name: that is what people type.
        keys = config.integrations_named(args.integration)
        if len(keys) != 1:
            why = "is in several accounts" if keys else "is not in the config"
            print(
                f"connector calls: integration {args.integration!r} {why}; give it as"
                f" ACCOUNT/NAME ({config.integrations_listed()})",
                file=sys.stderr,
            )
            return calls_cli.EXIT_BAD_INPUT
        args.integration = keys[0]
        note = config.not_configured(keys)
        if note is not None:
            print(f"note: {note}; its stored calls are shown, if any", file=sys.stderr)
    return _read_store(config, "calls", lambda store: calls_cli.calls(store, regions, args, since))


def cmd_trace(args: argparse.Namespace) -> int:
    """Everything stored about one call: its webhooks, routing, hook calls, CRM requests."""
    config, _ = load(args.config)
    return _read_store(config, "trace", lambda store: calls_cli.trace(store, args))


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete what has outlived ``[retention]`` now (:mod:`connector_core.prune_cli`)."""
    config, _ = load(args.config)
    if _no_store_yet(config) and prune_cli.refused(config.retention) is None:
        # Opening the store would create it: a dry run, or a prune, must not leave a file.
        print(f"connector prune: no store at {config.storage.path} yet: nothing to delete")
        return EXIT_OK
    return asyncio.run(
        _with_store(config, lambda store: prune_cli.run(store, config.retention, args))
    )


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare Sipuni's call history with the calls received (:mod:`reconcile_cli`)."""
    config, _ = load(args.config)
    setup_logging(config.logging.level, config.secrets(), json_lines=config.logging.json_format)
    now = time.time()
    since = parse_since(args.since, now)
    return asyncio.run(
        _with_store(config, lambda store: reconcile_cli.run(store, config, args, since, now))
    )


def parse_since(text: str, now: float) -> float:
    """``2h``, ``30m``, ``90s``, ``3d`` ago, or an ISO date/time (UTC unless it says)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].replace(".", "", 1).isdigit() and text[-1:] in units:
        return now - float(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"--since: {text!r} is neither a duration (2h, 30m) nor an ISO date/time"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    config_help = "config file (default: $CONNECTOR_CONFIG, ./connector.toml, embedded defaults)"
    p = command("serve", cmd_serve, "run the service")
    p.add_argument("--config", help=config_help)
    p.add_argument("--host", help="the address to listen on, instead of [server] host")
    p.add_argument("--port", type=_port, help="the port to listen on, instead of [server] port")
    p.add_argument(
        "--role",
        choices=[role.value for role in Role],
        default=Role.ALL.value,
        help="all (default): everything; ingest: take webhooks only; worker: process them,"
        " run hooks, serve agents and the console (several processes: docs/architecture.md)",
    )
    p = command(
        "check",
        cmd_check,
        "validate the config, check every integration's authorisation and whether its"
        " settings name things that exist (exit 0 ok, 1 a check failed, 2 invalid config)",
    )
    p.add_argument("--config", help=config_help)
    p = command(
        "backup",
        cmd_backup,
        "copy the SQLite store to DEST while the service runs (SQLite's online backup: one"
        " consistent snapshot, written to a temporary file then renamed). To restore: stop the"
        " service, copy the backup over storage.path (and delete the -wal and -shm files beside"
        " it), start the service. A PostgreSQL store is backed up with pg_dump instead",
    )
    p.add_argument("dest", help="the file to write, or a folder to write it in")
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    p.add_argument("--config", help=config_help)
    p = command(
        "init",
        cmd_init,
        "ask the set-up questions (Sipuni account, integrations and their keys) and write"
        " the config file; prints the URL to paste into Sipuni",
    )
    p.add_argument("--config", help="file to write (default: $CONNECTOR_CONFIG, ./connector.toml)")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    p = command("plugins", cmd_plugins, "list installed plugins, their hooks and settings")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    command("schema", cmd_schema, "print the JSON schema of the config, plugin settings included")
    p = command(
        "replay",
        cmd_replay,
        "feed recorded Sipuni events through the pipeline: from a file, or the"
        " service's own stored events with --since",
    )
    p.add_argument(
        "file", nargs="?", help="JSON lines {account, params} or one query string per line"
    )
    p.add_argument(
        "--since", help="re-feed stored events received since: 2h, 30m, 3d, or an ISO date/time"
    )
    p.add_argument("--account", help="account number for lines that do not name one")
    p.add_argument("--config", help=config_help)
    p = command("simulate", cmd_simulate, "send simulated Sipuni calls to a running service")
    p.add_argument(
        "--url", help="the service's address (default: where the config says it listens)"
    )
    p.add_argument(
        "--token", help="the account's webhook token (default: the config account's token)"
    )
    p.add_argument("--account", help="the config's account to send as (default: its first)")
    p.add_argument("--config", help=config_help)
    p.add_argument("--kinds", default="all", help=f"comma-separated: {', '.join(KINDS)}")
    p.add_argument("--count", type=int, default=7, help="how many calls")
    p.add_argument("--speed", type=float, default=10.0, help="times faster than real time")
    p.add_argument("--stagger", type=float, default=0.2, help="seconds between call starts")
    p.add_argument("--method", choices=["GET", "POST", "JSON", "mixed"], default="GET")
    p.add_argument("--seed", type=int, default=1, help="random seed for numbers and ids")
    p = command(
        "demo",
        cmd_demo,
        "the service on its embedded defaults with a Usedesk sandbox and simulated calls",
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--sandbox-port", type=int, default=8091)
    p.add_argument("--speed", type=float, default=20.0, help="times faster than real time")
    p.add_argument("--once", action="store_true", help="exit after showing the result")
    p = command(
        "forget",
        cmd_forget,
        "drop what the plugins remember about a phone number or a call (a stale CRM link)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--phone", help="the caller's number, any spelling")
    which.add_argument("--call", help="a call id (as `connector dlq show` prints it)")
    p.add_argument("--integration", help="only this integration: <account>/<name>, or <name>")
    p.add_argument("--config", help=config_help)
    p = command("dlq", cmd_dlq, "the dead-letter queue: list, show, retry or drop")
    p.add_argument("action", choices=["list", "show", "retry", "drop"])
    p.add_argument("ids", nargs="*", type=int, help="dead-letter ids (from `connector dlq list`)")
    p.add_argument("--all", action="store_true", help="with retry: every dead letter")
    p.add_argument("--limit", type=int, default=100, help="with list: how many")
    p.add_argument("--config", help=config_help)
    p = command(
        "quarantine",
        cmd_quarantine,
        "stored webhooks whose processing kept failing: list, show, retry or drop",
    )
    p.add_argument("action", choices=["list", "show", "retry", "drop"])
    p.add_argument("ids", nargs="*", type=int, help="inbox ids (from `connector quarantine list`)")
    p.add_argument("--all", action="store_true", help="with retry: every quarantined webhook")
    p.add_argument("--limit", type=int, default=100, help="with list: how many")
    p.add_argument("--config", help=config_help)
    p = command("calls", cmd_calls, "recent calls and where each integration stands with them")
    calls_cli.add_calls_arguments(p)
    p.add_argument("--config", help=config_help)
    p = command(
        "trace",
        cmd_trace,
        "one call: Sipuni's webhooks, the routing, each hook call, CRM request and decision",
    )
    calls_cli.add_trace_arguments(p)
    p.add_argument("--config", help=config_help)
    p = command(
        "prune",
        cmd_prune,
        "delete now what has outlived [retention] (finished calls, processed webhooks…),"
        " in small batches while the service runs; prints the rows deleted per table",
    )
    prune_cli.add_arguments(p)
    p.add_argument("--config", help=config_help)
    p = command(
        "reconcile",
        cmd_reconcile,
        "compare Sipuni's call history with the calls received and record the calls whose"
        " webhooks never arrived (or arrived without their end); prints what it found per call",
    )
    reconcile_cli.add_arguments(p)
    p.add_argument("--config", help=config_help)
    p = command(
        "console-password",
        console_password.run,
        "print the [console] password_hash line for a password (or --generate a token)",
    )
    console_password.add_arguments(p)
    p = command("journal", cmd_journal, "show what a journaling plugin (amocrm_stub) recorded")
    p.add_argument("integration", help="integration name, or <account>/<name>")
    p.add_argument("--config", help=config_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        _print_config_errors(exc)
        return EXIT_BAD_CONFIG
    except (StoreUnavailable, SchemaError) as exc:  # a store unreachable or too new: no traceback
        print(f"the store cannot be used: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except BrokenPipeError:
        # `connector calls | head`: the reader has what it wanted. Python would complain
        # again when it flushes stdout at exit, so point stdout at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
