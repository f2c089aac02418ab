"""The API plus bare endpoints, served by one process, for the ingest benchmark.

`POST /bare` does only what any ingest must: parse a small JSON body, one INSERT, one job defer
(procrastinate's `defer_async`), in one transaction: the yardstick `POST /v1/withdrawals` is
measured against. `POST /bare-one` does the same in a single statement (the INSERT and the job
row in one CTE, as the API's create does), so the API's own overhead (auth, validation, the
trigger-checked withdrawals table, the answer) can be read from it as well. `POST /noop` parses
the body and answers without touching the database: the most any endpoint of this server can do
on this machine, the floor under every latency figure.
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


BARE_ONE = """
WITH created AS (INSERT INTO bench_bare (body) VALUES (%s) RETURNING id), job AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, args)
    SELECT 'validate', 'validate', jsonb_build_object('chain', %s::text) FROM created
)
SELECT id FROM created
"""


async def bare_one(request: Request) -> Response:
    body = json.loads(await request.body())
    async with request.app.state.pool.connection() as conn:
        cur = await conn.execute(BARE_ONE, (json.dumps(body), body["chain"]))
        row = await cur.fetchone()
    return JSONResponse({"id": row["id"]}, status_code=201)  # type: ignore[index]


async def noop(request: Request) -> Response:
    body = json.loads(await request.body())
    return JSONResponse({"chain": body["chain"]}, status_code=201)


app = create_app()
app.router.routes += [
    Route("/bare", bare, methods=["POST"]),
    Route("/bare-one", bare_one, methods=["POST"]),
    Route("/noop", noop, methods=["POST"]),
]
