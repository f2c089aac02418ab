"""The API settles Python's cycle collector once it has started (app/heap.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from app import heap
from app.main import create_app
from app.registry import load_registry
from app.settings import Settings


@pytest.fixture
def fresh_heap() -> Iterator[None]:
    """The collector as a new process has it, and as this test process had it afterwards."""
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    heap._settled = False
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        heap._settled = False


@pytest.mark.usefixtures("fresh_heap")
def test_the_api_settles_the_heap_when_it_starts(database_url: str) -> None:
    app = create_app(Settings.from_env({"DATABASE_URL": database_url}), load_registry())
    assert gc.get_freeze_count() == 0

    async def start_and_look() -> tuple[tuple[int, ...], int]:
        async with app.router.lifespan_context(app):  # what uvicorn runs before serving
            return gc.get_threshold(), gc.get_freeze_count()

    thresholds, frozen = asyncio.run(start_and_look())
    assert thresholds == heap.THRESHOLDS
    # Start-up's objects (modules, classes, the pool) are out of the collector's sight.
    assert frozen > 10_000


@pytest.mark.usefixtures("fresh_heap")
def test_settling_twice_freezes_only_once() -> None:
    heap.settle()
    frozen = gc.get_freeze_count()
    kept: list[list[int]] = [[] for _ in range(1_000)]  # new objects, made after start-up
    heap.settle()
    assert gc.get_freeze_count() == frozen
    assert gc.get_threshold() == heap.THRESHOLDS
    del kept
