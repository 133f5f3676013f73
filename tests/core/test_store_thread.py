"""The SQLite store's thread: calls run in order on one thread, results come back to the loop."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from connector_core.store.thread import StoreThread, ThreadClosed


async def test_calls_run_one_at_a_time_in_order_on_the_thread() -> None:
    thread = StoreThread("t")
    ran: list[tuple[int, str]] = []

    def job(n: int) -> int:
        ran.append((n, threading.current_thread().name))
        return n * 10

    try:
        results = await asyncio.gather(*(thread.call(functools.partial(job, n)) for n in range(50)))
    finally:
        thread.shutdown()
    assert results == [n * 10 for n in range(50)]
    assert ran == [(n, "t") for n in range(50)]


async def test_an_exception_goes_to_its_caller_and_the_thread_goes_on() -> None:
    thread = StoreThread("t")

    def broken() -> None:
        raise ValueError("disk full")

    try:
        with pytest.raises(ValueError, match="disk full"):
            await thread.call(broken)
        assert await thread.call(lambda: "still here") == "still here"
    finally:
        thread.shutdown()


async def test_a_caller_that_went_away_does_not_stop_the_call_or_the_next() -> None:
    thread = StoreThread("t")
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow() -> None:
        started.set()
        release.wait(5)
        done.append("slow")

    try:
        first = thread.call(slow)
        await asyncio.to_thread(started.wait, 5)
        first.cancel()
        release.set()
        assert await thread.call(lambda: "next") == "next"
        assert done == ["slow"]  # it ran all the same
    finally:
        thread.shutdown()


async def test_after_shutdown_no_call_is_taken() -> None:
    thread = StoreThread("t")
    pending = thread.call(lambda: "handed over before")
    thread.shutdown()  # runs what was handed over first
    assert await pending == "handed over before"
    with pytest.raises(ThreadClosed, match="shut down"):
        thread.call(lambda: None)


async def test_results_done_while_the_loop_is_busy_come_back_in_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    wake_ups = 0
    real = loop.call_soon_threadsafe

    def counted(*args: object, **kwargs: object) -> asyncio.Handle:
        nonlocal wake_ups
        wake_ups += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    thread = StoreThread("t")
    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    try:
        release = threading.Event()
        calls = [thread.call(functools.partial(release.wait, 5))]
        calls += [thread.call(functools.partial(int, n)) for n in range(20)]
        release.set()
        thread.call(lambda: None)  # the last one queued
        while thread._jobs.qsize():  # the loop busy meanwhile: nothing handed back yet
            threading.Event().wait(0.001)
        results = await asyncio.gather(*calls)
    finally:
        del loop.call_soon_threadsafe
        thread.shutdown()
    assert results == [True, *range(20)]
    assert wake_ups < 5  # one, unless the loop ran between two of them


async def test_a_failing_result_callback_does_not_keep_the_others_from_their_callers() -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    thread = StoreThread("t")
    release = threading.Event()
    got: list[int] = []

    def broken(result: object, error: BaseException | None) -> None:
        raise TypeError("a caller's bug")

    try:
        first = thread.call(functools.partial(release.wait, 5))
        thread.submit(lambda: None, broken)  # done in the same wake-up as the ones around it
        rest = [thread.call(functools.partial(int, n)) for n in range(3)]
        release.set()
        got = await asyncio.gather(*rest)
        assert await first is True
    finally:
        loop.set_exception_handler(None)
        thread.shutdown()
    assert got == [0, 1, 2]
    assert reported == ["a store result could not be handed over"]


async def test_a_store_thread_serves_one_event_loop() -> None:
    thread = StoreThread("t")
    try:
        assert await thread.call(lambda: 1) == 1

        async def elsewhere() -> None:
            thread.call(lambda: 2)

        with pytest.raises(RuntimeError, match="the event loop the store was opened on"):
            await asyncio.to_thread(asyncio.run, elsewhere())
    finally:
        thread.shutdown()
