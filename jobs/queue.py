"""The procrastinate app: the job queues that drive the payout pipeline.

It is created without a database; the API and the worker open it on their own connection pool
(`app.open_async(pool)`), so that a job can be deferred inside the caller's transaction.
"""

from __future__ import annotations

import procrastinate

queue = procrastinate.App(
    connector=procrastinate.PsycopgConnector(),
    import_paths=["jobs.validate"],
)
