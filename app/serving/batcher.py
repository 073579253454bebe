"""Dynamic micro-batching: concurrent callers' items run through one blocking call together. An
item that finds no batch running starts one at once; items that arrive meanwhile go together, up
to `max_batch`, into the next. Batches run one at a time on a thread of their own, so the event
loop keeps reading requests and a batch costs one thread hop. At most `max_pending` items wait;
past that `submit` raises `QueueFullError` at once. Knows nothing about the items.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")

Result = TypeVar("Result")


class QueueFullError(RuntimeError):
    """`max_pending` items already wait for a batch."""


class MicroBatcher(Generic[Item, Result]):
    """Runs `run(items) -> results` (same length, same order) on batches of submitted items."""

    def __init__(
        self,
        run: Callable[[Sequence[Item]], list[Result]],
        *,
        max_batch: int,
        name: str,
        max_pending: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self.max_pending = max_pending  # None: unbounded
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running = False
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        """`run([..., item, ...])`'s result for `item`; an exception `run` raises reaches every
        caller of that batch; QueueFullError when `max_pending` items already wait."""
        if self.max_pending is not None and len(self._pending) >= self.max_pending:
            raise QueueFullError(f"{len(self._pending)} calls already wait for a batch")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(self._executor, self._run, items)
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self.batches += 1
                self.items += len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # a caller that went away cancelled its future
                        future.set_result(result)
        finally:
            self._running = False

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
