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


# Jobs with a higher priority are fetched first. Later steps go first, so that work on its way
# drains before new work is taken in, and the tick (which wakes the watcher) never waits behind a
# backlog of intake.
PRIORITY = {"tick": 30, "watch": 20, "broadcast": 15, "sign": 10, "accounts": 5, "validate": 0}


async def enqueue(conn: Any, task: str, **kwargs: Any) -> None:
    """Defer a job by task name inside the caller's transaction (the outbox)."""
    await queue.configure_task(task, connection=conn, priority=PRIORITY[task]).defer_async(**kwargs)
