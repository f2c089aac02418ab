"""The API plus a bare endpoint, served by one process, for the ingest benchmark.

`POST /bare` does only what any ingest must: parse a small JSON body, one INSERT, one job defer,
in one transaction. It is the yardstick `POST /v1/withdrawals` is measured against.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.main import create_app
from jobs.queue import queue

BARE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_bare (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


async def bare(request: Request) -> Response:
    body = json.loads(await request.body())
    async with request.app.state.pool.connection() as conn, conn.transaction():
        cur = await conn.execute("INSERT INTO bench_bare (body) VALUES (%s) RETURNING id", (json.dumps(body),))
        row = await cur.fetchone()
        await queue.configure_task("validate", connection=conn).defer_async(chain=body["chain"])
    return JSONResponse({"id": row["id"]}, status_code=201)  # type: ignore[index]


app = create_app()
app.router.routes.append(Route("/bare", bare, methods=["POST"]))
