"""The procrastinate app: the job queues that drive the payout pipeline.

It is created without a database; the API and the worker open it on their own connection pool
(`app.open_async(pool)`), so that a job can be deferred inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any

import procrastinate

queue = procrastinate.App(
    connector=procrastinate.PsycopgConnector(),
    import_paths=["jobs.validate", "jobs.sign", "jobs.broadcast", "jobs.confirm", "jobs.tick", "jobs.accounts"],
)


async def enqueue(conn: Any, task: str, **kwargs: Any) -> None:
    """Defer a job by task name inside the caller's transaction (the outbox)."""
    await queue.configure_task(task, connection=conn).defer_async(**kwargs)
