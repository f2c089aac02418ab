"""The API application: `uvicorn app.main:app` (settings from the environment)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from app import health, heap, metrics, openapi, withdrawals
from app.errors import ApiError, handle_api_error, handle_http_exception, handle_unexpected
from app.intake import Intake
from app.registry import Registry, load_registry
from app.settings import Settings, SettingsError
from db.engine import open_pool
from jobs.queue import queue

log = logging.getLogger("payouts.api")


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            # Production refuses an unsafe key-custody configuration here (app/settings.py).
            app.state.settings = settings or Settings.from_env()
        except SettingsError as exc:
            log.error("API: %s", exc)
            raise
        app.state.registry = registry or load_registry()
        heap.settle()
        pool = await open_pool(app.state.settings.database_url.reveal(), max_size=app.state.settings.db_pool_size)
        app.state.pool = pool
        app.state.intake = Intake(pool)
        try:
            async with queue.open_async(pool):
                yield
                await app.state.intake.close()
        finally:
            await pool.close()

    return Starlette(
        routes=[*withdrawals.routes, *health.routes, *metrics.routes, *openapi.routes()],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )


app = create_app()
