"""jobs.rpc.concurrently: results in order; on a failure, the others are cancelled and the error
comes out as it was raised."""

from __future__ import annotations

import asyncio

import pytest

from jobs.rpc import RpcError, concurrently


def test_results_come_in_the_order_of_the_calls() -> None:
    async def after(seconds: float, value: str) -> str:
        await asyncio.sleep(seconds)
        return value

    assert asyncio.run(concurrently(after(0.03, "a"), after(0.0, "b"), after(0.01, "c"))) == ["a", "b", "c"]


def test_a_failure_cancels_the_others_and_is_raised_as_it_came() -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        finished.append("slow")
        return "slow"

    async def failing() -> str:
        await asyncio.sleep(0.01)
        raise RpcError("node down")

    async def run() -> None:
        with pytest.raises(RpcError, match="node down"):
            await concurrently(slow(), failing())
        await asyncio.sleep(0)
        assert cancelled == ["slow"] and finished == []
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(run())
