"""Which HTTP sessions and asyncio tasks a plugin opened, and whether it left them behind.

``ResourceWatch`` records every ``aiohttp.ClientSession`` created while it is active and
every asyncio task created from the plugin's own code (a frame of one of its files on the
stack), each with the place that created it, so a leak is reported where it was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import aiohttp

_SKIP = (
    str(Path(aiohttp.__file__).parent),
    str(Path(asyncio.__file__).parent),
    str(Path(contextlib.__file__)),
    str(Path(__file__).parent),
)


def plugin_paths(module: ModuleType) -> list[str]:
    """The files a plugin's code lives in: its package's folder, or its single module file."""
    file = getattr(module, "__file__", None)
    if not file:
        return []
    path = Path(file).resolve()
    return [str(path.parent if path.name == "__init__.py" else path)]


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class ResourceWatch:
    """Use as ``with ResourceWatch(paths):`` inside a running event loop."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [str(p) for p in paths]
        self.sessions: list[tuple[aiohttp.ClientSession, str]] = []
        self.tasks: list[tuple[asyncio.Task[Any], str]] = []
        self._restore: list[Any] = []

    def _plugin_frame(self, frame: FrameType | None) -> FrameType | None:
        while frame is not None:
            name = frame.f_code.co_filename
            if any(name.startswith(p) for p in self.paths):
                return frame
            frame = frame.f_back
        return None

    def _caller(self, frame: FrameType | None) -> FrameType | None:
        """The nearest frame outside aiohttp, asyncio and this kit."""
        while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
            frame = frame.f_back
        return frame

    def __enter__(self) -> ResourceWatch:
        original_init = aiohttp.ClientSession.__init__
        watch = self

        def init(session: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
            original_init(session, *args, **kwargs)
            frame = sys._getframe(1)
            site = watch._plugin_frame(frame) or watch._caller(frame)
            watch.sessions.append((session, _where(site)))

        setattr(aiohttp.ClientSession, "__init__", init)  # noqa: B010 (mypy forbids the assignment)
        self._restore.append(lambda: setattr(aiohttp.ClientSession, "__init__", original_init))

        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            if previous is not None:
                task = previous(loop, coro, **kwargs)
            else:
                task = asyncio.Task(coro, loop=loop, **kwargs)
            site = watch._plugin_frame(sys._getframe(1))
            # A custom factory may return any future; only tasks have a name and a coroutine.
            if site is not None and isinstance(task, asyncio.Task):
                watch.tasks.append((task, _where(site)))
            return task

        loop.set_task_factory(factory)
        self._restore.append(lambda: loop.set_task_factory(previous))
        return self

    def __exit__(self, *exc: object) -> None:
        while self._restore:
            self._restore.pop()()

    def unclosed_sessions(self, exclude: Sequence[object] = ()) -> list[str]:
        return [site for s, site in self.sessions if not s.closed and s not in exclude]

    def pending_tasks(self) -> list[str]:
        return [
            f"{task.get_name()} ({getattr(task.get_coro(), '__qualname__', task.get_coro())}),"
            f" created at {site}"
            for task, site in self.tasks
            if not task.done()
        ]

    async def release(self) -> None:
        """Close what was left open and cancel what was left running (after the verdict)."""
        for session, _ in self.sessions:
            if not session.closed:
                with contextlib.suppress(Exception):
                    await session.close()
        leftovers = [t for t, _ in self.tasks if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
