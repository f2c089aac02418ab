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


# Jobs with a higher priority are fetched first (procrastinate never ages a waiting job). The tick
# goes first, so that it is never stuck behind a backlog; then signing and broadcasting, which
# only drain work that planning made (so they cannot starve the rest); the steps that come back
# by themselves (watch every second per chain, intake, account checks) share one priority and
# take turns in queue order.
PRIORITY = {"tick": 30, "broadcast": 20, "sign": 15, "watch": 10, "validate": 10, "accounts": 10}


async def enqueue(conn: Any, task: str, **kwargs: Any) -> None:
    """Defer a job by task name inside the caller's transaction (the outbox)."""
    await queue.configure_task(task, connection=conn, priority=PRIORITY[task]).defer_async(**kwargs)
