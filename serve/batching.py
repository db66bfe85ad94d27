"""Batching that never waits: the first call runs at once, and calls arriving while a batch runs
form the next one.

`@serve.batch` waits `batch_wait_timeout_s` after the first request for more to arrive (a query
on an idle service pays the whole wait), or, with no wait, forms batches of one that then queue
behind each other. Here a batch is whatever is queued when the previous batch finishes: one
request alone runs immediately, and under load batches fill up by themselves while the model
is busy, up to `max_batch_size`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await batcher(item)` -> `fn([... item ...])`'s result for it; one batch runs at a time."""

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]], max_batch_size: int):
        self.fn = fn
        self.max_batch_size = max_batch_size
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task | None = None

    def set_max_batch_size(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {size}")
        self.max_batch_size = size

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch_size], self._queue[self.max_batch_size :]
            batch = [(item, f) for item, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                results = await self.fn([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            except Exception as e:  # every caller of the batch gets the error
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), result in zip(batch, results, strict=True):
                if not f.done():
                    f.set_result(result)
