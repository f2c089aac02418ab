"""Open-loop load generator: POST /v1/withdrawals at a fixed rate, from a process of its own.

    python -m bench.load --url URL --key KEY --plan PLAN.json --rate R --run RUN --out RESULT.json

Request i is due at start + i / R and is sent then, whatever happened to earlier requests (no
coordinated omission: a slow server does not slow the offered rate down). Latency is measured
from the due time, so time spent waiting for a free connection counts. The client is aiohttp on
uvloop (asyncio, about a third of httpx's CPU per request, which matters on 2 cores); at most
`--connections` requests are open at once.

PLAN.json is a list of {"asset", "to", "amount"}; the idempotency key of request i is RUN-i.
RESULT.json gets the counts, the achieved send rate and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path

import aiohttp
import uvloop


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), math.ceil(p / 100 * len(ordered)))) - 1]


async def drive(url: str, key: str, plan: list[dict[str, str]], rate: float, run: str, connections: int) -> dict:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)

    async with aiohttp.ClientSession(url, headers=headers, connector=connector, timeout=timeout) as session:

        async def post(i: int, due: float) -> None:
            body = {"chain": "localhost", **plan[i]}
            try:
                async with session.post(
                    "/v1/withdrawals", json=body, headers={"Idempotency-Key": f"{run}-{i}"}
                ) as reply:
                    await reply.read()
                    status = str(reply.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((loop.time() - due) * 1000)

        tasks = set()
        start = loop.time() + 0.05
        wall_start = time.time() + 0.05
        for i in range(len(plan)):
            due = start + i / rate
            wait = due - loop.time()
            if wait > 0.0005:
                await asyncio.sleep(wait)
            lags.append((loop.time() - due) * 1000)
            task = asyncio.create_task(post(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = loop.time()
        while tasks:
            await asyncio.gather(*list(tasks))
        done = loop.time()
    count = len(plan)
    return {
        "requests": count,
        "statuses": statuses,
        "ok": statuses.get("201", 0),
        "offered_rate": rate,
        "send_rate": count / max(sent - start, 1e-9),
        "completion_rate": count / max(done - start, 1e-9),
        "wall_start": wall_start,
        "seconds": done - start,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_send_lag_ms": max(lags) if lags else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--run", required=True, help="idempotency key prefix")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    result = uvloop.run(drive(args.url, args.key, plan, args.rate, args.run, args.connections))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
