"""The service as a real process: ``python -m connector_core serve`` on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


class ServiceProcess:
    """Start, SIGKILL and restart the service; its output goes to ``log_path``."""

    def __init__(
        self, config: Path, *, pythonpath: list[Path] = (), port: int, args: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.port = port
        self.args = args  # more `serve` arguments: --role worker
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = config.with_suffix(".log")
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(p) for p in pythonpath] + [str(ROOT)]),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "connector_core", "serve"),
                *("--config", str(self.config), *self.args),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.config.parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log_path.read_text()[-3000:]}")
            try:
                if get_json(self.url + "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the service did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, as a process manager would; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def wait_until(self, predicate, timeout: float = 30.0) -> dict:  # type: ignore[no-untyped-def]
        """Poll /readyz until ``predicate(stats)`` holds; returns the stats."""
        deadline = time.monotonic() + timeout
        stats: dict = {}
        while time.monotonic() < deadline:
            status, body = get_json(self.url + "/readyz")
            stats = body.get("stats", {})
            if status == 200 and predicate(stats):
                return stats
            time.sleep(0.1)
        raise AssertionError(
            f"timed out; last stats {stats}; log: {self.log_path.read_text()[-3000:]}"
        )
