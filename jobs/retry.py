"""Retry policy of the pipeline's jobs: exponential backoff with a ceiling, then a dead letter.

A transient failure (an RPC outage, a lost database connection) is retried after 2, 4, 8, 16
then 30 s, and so on up to the task's last try; after that the job stays `failed` in
procrastinate_jobs (a dead letter, listed and re-queued by `payouts jobs`). The per-second tick
re-queues stale work as well, so no withdrawal waits on a dead letter.
"""

from __future__ import annotations

import attr
from procrastinate import RetryStrategy
from procrastinate.jobs import Job
from procrastinate.retry import RetryDecision

MAX_WAIT_SECONDS = 30


@attr.dataclass(kw_only=True)
class Backoff(RetryStrategy):
    max_wait: int = MAX_WAIT_SECONDS

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        decision = super().get_retry_decision(exception=exception, job=job)
        if decision is None:
            return None
        return RetryDecision(retry_in={"seconds": min(self.exponential_wait ** (job.attempts + 1), self.max_wait)})


def backoff(max_attempts: int) -> Backoff:
    return Backoff(max_attempts=max_attempts, exponential_wait=2)
