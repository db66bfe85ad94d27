"""The batcher that never waits (serve/batching.py): order of events, not timings."""

from __future__ import annotations

import asyncio

import pytest

from serve.batching import Batcher


def run(coro):
    return asyncio.run(coro)


def test_a_lone_call_runs_at_once_and_later_calls_form_the_next_batch():
    async def scenario() -> None:
        batches: list[list[int]] = []
        release = asyncio.Event()

        async def fn(items: list[int]) -> list[int]:
            batches.append(items)
            if len(batches) == 1:
                await release.wait()  # the first batch is busy while more calls arrive
            return [i * 10 for i in items]

        batcher = Batcher(fn, max_batch_size=3)
        first = asyncio.ensure_future(batcher(1))
        while not batches:  # the first call reached the model without waiting for company
            await asyncio.sleep(0)
        assert batches == [[1]]
        rest = [asyncio.ensure_future(batcher(i)) for i in range(2, 7)]
        await asyncio.sleep(0)
        assert batches == [[1]]  # one batch at a time
        release.set()
        assert await first == 10
        assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
        assert batches == [[1], [2, 3, 4], [5, 6]]  # filled while busy, capped at max_batch_size

    run(scenario())


def test_errors_reach_every_caller_of_the_batch_and_the_next_batch_runs():
    async def scenario() -> None:
        async def fn(items: list[int]) -> list[int]:
            if 0 in items:
                raise ValueError("bad item")
            return items

        batcher = Batcher(fn, max_batch_size=8)
        results = await asyncio.gather(batcher(0), batcher(1), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await batcher(2) == 2

    run(scenario())


def test_a_wrong_number_of_results_is_an_error_and_a_cancelled_call_is_skipped():
    async def scenario() -> None:
        seen: list[list[int]] = []
        release = asyncio.Event()

        async def fn(items: list[int]) -> list[int]:
            seen.append(items)
            if items == [0]:
                await release.wait()
            return items[:1]

        batcher = Batcher(fn, max_batch_size=8)
        with pytest.raises(RuntimeError, match="batch of 2 gave 1"):
            await asyncio.gather(batcher(1), batcher(2))
        busy = asyncio.ensure_future(batcher(0))
        await asyncio.sleep(0)
        cancelled = asyncio.ensure_future(batcher(3))
        await asyncio.sleep(0)  # queued behind the busy batch
        cancelled.cancel()
        last = asyncio.ensure_future(batcher(4))
        await asyncio.sleep(0)
        release.set()
        assert (await busy, await last) == (0, 4)
        assert seen[-1] == [4]  # the cancelled call never reached the model
        with pytest.raises(ValueError):
            batcher.set_max_batch_size(0)

    run(scenario())
