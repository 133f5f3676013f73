"""What every bench script shares: the machine, the service as a process, reports, statistics.

The service always runs as a real process (``python -m connector_core serve --config …``),
started here with a config written into a fresh temporary folder. Load generators run in
other processes (``bench.loadgen`` or ``wrk``); the Usedesk sandbox, when a bench needs one,
runs inside the bench's own process so its request log can be read directly.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "012345"
TOKEN = "bench-token-0123456789abcdef"


# --- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, Python and library versions, and the disk's fsync time."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import aiohttp

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "fsync_ms": fsync_ms(),
    }


def fsync_ms(rounds: int = 30) -> float:
    """Median time of one small write + fsync in the temporary folder the benches use."""
    with tempfile.NamedTemporaryFile(prefix="bench-fsync-") as f:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            f.write(b"x" * 512)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - started)
    return round(percentile(times, 50) * 1000, 3)


# --- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank on the sorted values); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p90_ms": ms(percentile(seconds, 90)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds)) if seconds else 0.0,
    }


# --- reports -----------------------------------------------------------------------------------


def report(name: str, args: Any, result: dict[str, Any], lines: Iterable[str]) -> None:
    """Print the readable report, then one JSON line (``{"bench": name, …}``) as the last line."""
    print(f"== bench.{name} ==")
    for line in lines:
        print(line)
    record = {"bench": name, "quick": bool(getattr(args, "quick", False)), **result}
    print(json.dumps(record, ensure_ascii=False), flush=True)


def table(rows: list[list[Any]], header: list[str]) -> list[str]:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def usedesk_integration(
    base_url: str,
    api_token: str,
    *,
    per_minute: int = 100,
    burst: int = 5,
    notifications: bool = False,
) -> str:
    return f"""
[accounts.{ACCOUNT}.integrations.usedesk]
plugin = "usedesk"
api_token = "{api_token}"
base_url = "{base_url}"
rate_limit_per_minute = {per_minute}
burst_per_second = {burst}
notifications = {str(notifications).lower()}
users = [{{ extension = "101", agent = 2 }}, {{ extension = "102", agent = 3 }},
         {{ extension = "103", agent = 1 }}]
on_duty_user = 4
"""


STUB_INTEGRATION = f"""
[accounts.{ACCOUNT}.integrations.amocrm_stub]
plugin = "amocrm_stub"
"""


class Service:
    """``python -m connector_core serve`` on a loopback port, in a temporary folder of its own.

    Logging is at WARNING: at that level the access log writes nothing (the service has no
    switch to turn the access logger off entirely).
    """

    def __init__(
        self,
        integrations: str = STUB_INTEGRATION,
        *,
        extra: str = "",
        account_extra: str = "",
        finish_settle: float = 0,
        level: str = "WARNING",
        role: str = "all",
        python_args: Sequence[str] = (),
        worker_nice: int | None = None,
        worker_idle: bool = False,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="connector-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook = f"{self.url}/sipuni/{TOKEN}"
        self.role = role
        # Before ``-m connector_core``: e.g. ``-m cProfile -o FILE`` to profile the service.
        self.python_args = list(python_args)
        # role "ingest": a ``--role worker`` process on the same SQLite file drains the inbox,
        # at this niceness (None: the same priority as the ingest process).
        self.worker_nice = worker_nice
        # role "ingest": the worker under SCHED_IDLE (Linux), as `CPUSchedulingPolicy=idle` in
        # its systemd unit: it runs only on a core nothing else wants (docs/deployment.md).
        self.worker_idle = worker_idle
        self.worker_port = free_port()
        self.worker_proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "connector.toml"
        self.config.write_text(
            self._config_text(self.port, integrations, extra, account_extra, finish_settle, level),
            encoding="utf-8",
        )
        self.worker_config = self.dir / "worker.toml"
        self.worker_config.write_text(
            self._config_text(
                self.worker_port, integrations, extra, account_extra, finish_settle, level
            ),
            encoding="utf-8",
        )
        self.log_path = self.dir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _config_text(
        port: int,
        integrations: str,
        extra: str,
        account_extra: str,
        finish_settle: float,
        level: str,
    ) -> str:
        return f"""
[server]
host = "127.0.0.1"
port = {port}
[storage]
path = "connector.db"
[tracker]
finish_settle_seconds = {finish_settle}
[logging]
level = "{level}"
{extra}
[accounts.{ACCOUNT}]
token = "{TOKEN}"
{account_extra}
{integrations}
"""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """The service's processes: the server, and the worker beside an ingest process."""
        return [p.pid for p in (self.proc, self.worker_proc) if p is not None]

    def cpu_seconds(self) -> float:
        """CPU time used so far by all the service's processes (every thread of each)."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def start(self, timeout: float = 30.0) -> Service:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        serve = [sys.executable, *self.python_args, "-m", "connector_core", "serve"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*serve, "--config", str(self.config), "--role", self.role],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        wait_http(self.url + "/healthz", timeout, self.proc, self.log_path)
        if self.role == "ingest":
            nice, idle = self.worker_nice, self.worker_idle

            def lowered() -> None:  # in the worker's process, before it starts: all its threads
                if nice:
                    os.nice(nice)
                if idle:
                    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

            with (self.dir / "worker.log").open("ab") as log:
                self.worker_proc = subprocess.Popen(
                    [*serve, "--config", str(self.worker_config), "--role", "worker"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.dir,
                    preexec_fn=lowered if nice or idle else None,
                )
            wait_http(
                f"http://127.0.0.1:{self.worker_port}/healthz",
                timeout,
                self.worker_proc,
                self.dir / "worker.log",
            )
        return self

    def stats(self) -> dict[str, int]:
        return get_json(self.url + "/readyz", timeout=30)[1].get("stats", {})

    def wait_idle(self, timeout: float = 120.0, poll: float = 0.2) -> dict[str, int]:
        """Until the inbox and the dispatch outbox are empty; returns the last stats."""
        return self.wait_until(
            lambda s: s.get("inbox_pending") == 0 and s.get("dispatches_pending") == 0,
            timeout,
            poll,
        )

    def wait_until(
        self, predicate: Callable[[dict[str, int]], bool], timeout: float, poll: float = 0.2
    ) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        stats: dict[str, int] = {}
        while time.monotonic() < deadline:
            stats = self.stats()
            if predicate(stats):
                return stats
            time.sleep(poll)
        raise TimeoutError(f"the service did not get there in {timeout} s: {stats}")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        stop_process(self.worker_proc)
        stop_process(self.proc)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (the service then finishes what it is doing), SIGKILL after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes], log_path: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"the process exited with {proc.returncode}: {tail}")
        try:
            if get_json(url, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def webhook_query(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)
