"""Run a job worker: `python -m jobs.worker` (DATABASE_URL from the environment).

Any number of workers may run, on any hosts: they coordinate only through Postgres.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop

from app import heap
from app.settings import Settings, SettingsError
from db.engine import open_pool
from jobs.context import close_rpc_clients
from jobs.keys import custody_check
from jobs.queue import queue

QUEUES = ["validate", "sign", "broadcast", "watch", "tick", "accounts"]


async def run(concurrency: int, queues: list[str]) -> None:
    settings = Settings.from_env()
    custody_check(settings)  # production: the master key must be there before any job runs
    queue.perform_import_paths()  # the steps' modules, so that start-up is done before settling the heap
    heap.settle()
    # Two connections per job: a step that runs alone holds its key's lock on one of them
    # (jobs/queue.py `alone`) and works on another; two more for procrastinate itself.
    pool = await open_pool(settings.database_url.reveal(), min_size=2, max_size=2 * concurrency + 2)
    try:
        async with queue.open_async(pool):
            await queue.run_worker_async(
                queues=queues,
                concurrency=concurrency,
                install_signal_handlers=True,
                # Finished jobs carry nothing the database does not already hold (events and
                # statuses live in our tables); failed ones stay as dead letters.
                delete_jobs="successful",
            )
    finally:
        try:
            await close_rpc_clients()
        finally:
            await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=4, help="jobs run at once (default 4)")
    parser.add_argument("--queue", action="append", dest="queues", help="queues to serve (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        # uvloop: a job's time is mostly round trips to Postgres and the node, and uvloop's event
        # loop costs less CPU per one than asyncio's own (as in the API, which uvicorn runs on it).
        uvloop.run(run(args.concurrency, args.queues or QUEUES))
    except SettingsError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
