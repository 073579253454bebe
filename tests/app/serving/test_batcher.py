"""`MicroBatcher`: concurrent submissions share a batch, order and errors kept."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from app.serving.batcher import MicroBatcher, QueueFullError


def test_calls_that_arrive_while_a_batch_runs_share_the_next_one() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        if len(seen) == 1:
            release.wait(5)  # hold the first batch until the others queued
        return [item * 10 for item in items]

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=3, name="test")
        try:
            first = asyncio.ensure_future(batcher.submit(0))
            await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 6)]
            await asyncio.sleep(0.05)
            release.set()
            return await asyncio.gather(first, *rest)
        finally:
            batcher.close()

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    assert seen == [[0], [1, 2, 3], [4, 5]]


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs() -> None:
    def run(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("unlucky")
        return list(items)

    async def main() -> tuple[list[int | BaseException], int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8, name="test")
        try:
            outcomes = await asyncio.gather(
                batcher.submit(13), batcher.submit(2), return_exceptions=True
            )
            return outcomes, await batcher.submit(7)
        finally:
            batcher.close()

    outcomes, after = asyncio.run(main())
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert after == 7


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(list, max_batch=0, name="test")


def test_past_max_pending_a_submission_is_refused_at_once() -> None:
    """Issue 21 item 7: the queue of calls waiting for a batch was unbounded."""
    started, release = threading.Event(), threading.Event()

    def run(items: Sequence[int]) -> list[int]:
        started.set()
        release.wait(5)
        return list(items)

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8, name="test", max_pending=2)
        try:
            first = asyncio.ensure_future(batcher.submit(0))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            waiting = [asyncio.ensure_future(batcher.submit(item)) for item in (1, 2)]
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError):
                await batcher.submit(3)
            release.set()
            return await asyncio.gather(first, *waiting)
        finally:
            release.set()
            batcher.close()

    assert asyncio.run(main()) == [0, 1, 2]
