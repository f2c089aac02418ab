"""`payouts jobs`: dead letters listed and re-queued, run as the operator runs it (a subprocess).

A failed job is made the way a worker makes one: deferred through the app, fetched (todo -> doing)
and finished as failed through procrastinate's own JobManager, which writes the 'failed' event.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC
from typing import Any

import procrastinate
import psycopg
from procrastinate.jobs import Status

from db.engine import open_pool
from jobs.queue import queue
from jobs.validate import validate
from tests.conftest import REPO_ROOT

Conn = psycopg.Connection[dict[str, Any]]  # the `db` fixture's rows are dicts


def payouts(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def defer_jobs(database_url: str, *, fail: int, wait: int = 0, queueing_lock: str | None = None) -> list[int]:
    """Defer `fail` validate jobs and fail them as a worker would, then defer `wait` more that stay
    todo; returns the failed ids, then the waiting ones."""

    async def run() -> list[int]:
        pool = await open_pool(database_url, max_size=2)
        # A fresh connector per call: procrastinate keeps an outside pool after closing the app,
        # so the app cannot be opened again on a new pool (each test has its own event loop).
        try:
            with queue.replace_connector(procrastinate.PsycopgConnector()) as app:
                async with app.open_async(pool):
                    return await fail_and_wait(app)
        finally:
            await pool.close()

    async def fail_and_wait(app: procrastinate.App) -> list[int]:
        task = validate.configure(queueing_lock=queueing_lock) if queueing_lock else validate
        failed = [await task.defer_async(chain="localhost") for _ in range(fail)]
        manager = app.job_manager
        worker_id = await manager.register_worker()
        try:
            for job_id in failed:
                job = await manager.fetch_job(queues=["validate"], worker_id=worker_id)
                assert job is not None and job.id == job_id
                await manager.finish_job(job, Status.FAILED, delete_job=False)
        finally:
            await manager.unregister_worker(worker_id)
        waiting = [await task.defer_async(chain="localhost") for _ in range(wait)]
        return failed + waiting

    return asyncio.run(run())


def job_status(db: Conn, job_id: int) -> str:
    row = db.execute("SELECT status::text AS status FROM procrastinate_jobs WHERE id = %s", [job_id]).fetchone()
    assert row is not None
    return row["status"]


def test_failed_lists_dead_letters_with_args_attempts_and_time(db: Conn, database_url: str) -> None:
    assert payouts(database_url, "jobs", "failed").stderr.strip() == "no failed jobs"
    failed, waiting = defer_jobs(database_url, fail=1, wait=1)

    result = payouts(database_url, "jobs", "failed")

    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["id", "queue", "task", "attempts", "failed", "at", "(UTC)", "args"]
    assert len(lines) == 1  # the waiting job is not a dead letter
    job_id, queue_name, task, attempts, failed_at, args = lines[0].split(maxsplit=5)
    assert (int(job_id), queue_name, task, attempts) == (failed, "validate", "validate", "1")
    event = db.execute("SELECT at FROM procrastinate_events WHERE job_id = %s AND type = 'failed'", [failed]).fetchone()
    assert event is not None
    assert failed_at == event["at"].astimezone(UTC).isoformat(timespec="seconds")
    assert json.loads(args) == {"chain": "localhost"}
    assert "does not store" in result.stderr
    assert str(waiting) not in [line.split()[0] for line in lines]


def test_failed_limit_keeps_the_newest(db: Conn, database_url: str) -> None:
    first, second = defer_jobs(database_url, fail=2)

    result = payouts(database_url, "jobs", "failed", "--limit", "1")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]
    assert [int(line.split()[0]) for line in lines] == [second]
    assert payouts(database_url, "jobs", "failed", "--limit", "0").returncode == 2  # argparse


def test_retry_queues_a_failed_job_again(db: Conn, database_url: str) -> None:
    (job_id,) = defer_jobs(database_url, fail=1)

    result = payouts(database_url, "jobs", "retry", str(job_id))

    assert result.returncode == 0, result.stderr
    assert f"job {job_id} (validate) queued again" in result.stdout
    assert job_status(db, job_id) == "todo"
    events = db.execute(
        "SELECT type::text AS type FROM procrastinate_events WHERE job_id = %s ORDER BY id",
        [job_id],
    ).fetchall()
    types = [e["type"] for e in events]
    assert types[:3] == ["deferred", "started", "failed"] and "retried" in types[3:]
    listed = payouts(database_url, "jobs", "failed")
    assert listed.stdout == "" and listed.stderr.strip() == "no failed jobs"


def test_retry_refuses_a_job_that_is_not_failed(db: Conn, database_url: str) -> None:
    (waiting,) = defer_jobs(database_url, fail=0, wait=1)

    result = payouts(database_url, "jobs", "retry", str(waiting))

    assert result.returncode == 2
    assert f"job {waiting} (validate) is todo, not failed" in result.stderr
    assert job_status(db, waiting) == "todo"


def test_retry_refuses_a_job_that_does_not_exist(db: Conn, database_url: str) -> None:
    result = payouts(database_url, "jobs", "retry", "999999")

    assert result.returncode == 2
    assert "no job with id 999999" in result.stderr


def test_retry_refuses_when_the_same_work_is_already_queued(db: Conn, database_url: str) -> None:
    failed, waiting = defer_jobs(database_url, fail=1, wait=1, queueing_lock="validate:localhost")

    result = payouts(database_url, "jobs", "retry", str(failed))

    assert result.returncode == 2
    expected = f"job {waiting} with the same queueing lock 'validate:localhost' is already waiting"
    assert expected in result.stderr
    assert job_status(db, failed) == "failed"


def test_stats_counts_jobs_per_queue_and_status(db: Conn, database_url: str) -> None:
    defer_jobs(database_url, fail=2, wait=1)

    result = payouts(database_url, "jobs", "stats")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    columns = header.split()
    assert columns == ["queue", "todo", "doing", "failed", "succeeded", "cancelled", "aborted", "stalled"]
    by_queue = {row.split()[0]: dict(zip(columns[1:], map(int, row.split()[1:]), strict=True)) for row in rows}
    assert by_queue == {
        "validate": {"todo": 1, "doing": 0, "failed": 2, "succeeded": 0, "cancelled": 0, "aborted": 0, "stalled": 0},
    }
