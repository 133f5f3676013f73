"""The SQLite store's one thread: runs the store's calls in order, hands each result to the loop.

A ``ThreadPoolExecutor`` of one worker did the same, but each call paid for its locks, its
semaphore, a ``concurrent.futures.Future`` and a second future chained to it on the loop: a
few percent of all the CPU an event costs, with several store calls per event.

Results go back in one wake-up of the loop for all those done since the last one: each
wake-up is a write to the loop's self-pipe and a read from it, and under load several calls
finish while the loop is busy with something else.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

# What runs on the loop once a call is done: (result, None), or (None, the exception).
Then = Callable[[Any, BaseException | None], None]
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, Then]


class ThreadClosed(RuntimeError):
    """The thread was shut down: no call runs any more."""


class StoreThread:
    """A thread of its own that runs each call handed to it, one at a time, in order, for one
    event loop (the first that hands it a call: a store is opened and used on one loop)."""

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Results not yet handed to the loop, and whether a wake-up for them is on its way.
        self._done: deque[tuple[Then, Any, BaseException | None]] = deque()
        self._waking = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], then: Then) -> None:
        """Run ``fn`` on the thread, then ``then(result, error)`` on the running loop."""
        if self._closed:
            raise ThreadClosed("the store's thread is shut down")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("a store's thread serves the event loop the store was opened on")
        self._jobs.put((fn, loop, then))

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the thread; its result (or exception) on a future of the running loop.

        A future cancelled meanwhile is left alone: the call has run all the same.
        """
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.submit(fn, functools.partial(_settle, done))
        return done

    def shutdown(self) -> None:
        """Run the calls already handed over, then stop the thread and wait for it."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, loop, then = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the caller, whatever it is
                result, error = None, exc
            # Appended before the flag is read, and the loop clears the flag before it takes
            # what is there: either this wake-up or the one on its way hands this result over.
            self._done.append((then, result, error))
            if not self._waking:
                self._waking = True
                try:
                    loop.call_soon_threadsafe(self._deliver, loop)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    self._done.clear()
                    self._waking = False

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: hand over every result done so far, each alone (one caller's failing
        callback does not keep the others' results from them)."""
        self._waking = False
        while self._done:
            then, result, error = self._done.popleft()
            try:
                then(result, error)
            except BaseException as exc:  # as asyncio reports a failing callback of its own
                loop.call_exception_handler(
                    {"message": "a store result could not be handed over", "exception": exc}
                )


def _settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
