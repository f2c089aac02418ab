"""Instructions per create: what the API process executes for one `POST /v1/withdrawals`, counted
by valgrind's callgrind.

    .venv/bin/python -m bench.instructions [--creates 640] [--out FILE]

Requests per second and latency move with the machine (a VM's neighbours, its CPU's clock): two
runs of `bench.ingest` an hour apart can differ by more than a change to the hot path does. An
instruction count does not: the same code, inputs and environment give the same count within a
fraction of a percent, whatever else the machine is doing. So a change to the API's hot path is
judged here first (before and after, on one machine), then in requests per second.

What runs: bench.ingest's scratch database (`payouts_bench_ingest`, with the history of
bench/history.py), and under `valgrind --tool=callgrind` a Python process that serves the API
in process (the ASGI app called directly, uvloop, no HTTP server, no socket) and sends it
creates in waves of BATCH concurrent requests, as a loaded server receives them, so the intake
writes them in batches.
Counting is switched on (callgrind_control) after WARM waves and off after the measured ones;
every create must be answered 201 and be in the database. Counted: the API process's Python
and C code (validation, auth, the intake, psycopg, the answer), not Postgres's (another process)
and not an HTTP server's parsing and writing (uvicorn's share; bench.ingest's no-op endpoint
shows what it costs).
Needs valgrind (Debian package `valgrind`); takes about 20 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ingest import DATABASE, RECIPIENT, created_count, seeded_database
from bench.stack import drop_database
from tests.conftest import REPO_ROOT

BATCH = 64
WARM = 3
# The file's "summary:" line stays 0 when counting starts switched off; "totals:" holds the count.
TOTAL = re.compile(r"^totals: (\d+)", re.MULTILINE)


async def _create(app: Any, key: bytes, idempotency_key: bytes, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/withdrawals",
        "raw_path": b"/v1/withdrawals",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", b"Bearer " + key),
            (b"idempotency-key", idempotency_key),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _callgrind_instrumentation(state: str) -> None:
    """Switch counting on or off in this process. callgrind acts on the command at this process's
    next basic block, so the process keeps running Python (not blocked in a wait) until it has."""
    control = subprocess.Popen(["callgrind_control", "--instr=" + state, str(os.getpid())], stdout=subprocess.DEVNULL)
    while control.poll() is None:
        sum(range(100))
    if control.returncode != 0:
        raise SystemExit(f"callgrind_control --instr={state} failed ({control.returncode})")


async def _serve_and_send(creates: int) -> None:
    from app.main import create_app

    app = create_app()
    key = os.environ["BENCH_KEY"].encode()
    body = json.dumps({"chain": "localhost", "asset": "USDT", "to": RECIPIENT, "amount": "1.5"}).encode()
    run = str(time.time_ns()).encode()
    waves = -(-creates // BATCH)
    async with app.router.lifespan_context(app):
        for wave in range(WARM + waves):
            if wave == WARM:
                _callgrind_instrumentation("on")
            keys = [run + b"-%d-%d" % (wave, n) for n in range(BATCH)]
            statuses = await asyncio.gather(*(_create(app, key, k, body) for k in keys))
            if any(s != 201 for s in statuses):
                raise SystemExit(f"wave {wave}: answers {sorted(set(statuses))}, every create must be 201")
        _callgrind_instrumentation("off")


def child(creates: int) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_and_send(creates))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", type=int, default=640, help=f"creates counted, in waves of {BATCH} (default 640)")
    parser.add_argument("--out", type=Path, help="also write the result to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.creates < 1:
        parser.error("--creates must be at least 1")
    if args.child:
        child(args.creates)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")

    creates = -(-args.creates // BATCH) * BATCH
    url, bench_client, key = seeded_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            started = time.monotonic()
            counted = subprocess.run(
                [
                    "valgrind",
                    "--quiet",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    "-m",
                    "bench.instructions",
                    "--child",
                    "--creates",
                    str(creates),
                ],
                cwd=REPO_ROOT,
                # One hash seed, so that two runs of one commit execute the same code paths.
                env=os.environ | {"DATABASE_URL": url, "BENCH_KEY": key, "PYTHONHASHSEED": "0"},
                stderr=subprocess.PIPE,
                text=True,
            )
            if counted.returncode != 0:
                raise SystemExit(f"the counted process failed ({counted.returncode}):\n{counted.stderr[-2000:]}")
            seconds = time.monotonic() - started
            match = TOTAL.search(out.read_text(errors="replace"))
            if match is None:
                raise SystemExit(f"no instruction total in {out}")
            total = int(match.group(1))
        stored = created_count(url, bench_client)
        expected = (WARM * BATCH) + creates
        if stored != expected:
            raise SystemExit(f"{stored} withdrawals in the database, {expected} were created")
    finally:
        drop_database(DATABASE)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    text = (
        f"Instructions per create (API process, callgrind): {total / creates:,.0f}\n"
        f"{creates} creates counted in waves of {BATCH} after {WARM} warm-up waves; {total:,} instructions; "
        f"commit {commit.stdout.strip() or '?'}; {seconds:.0f} s under valgrind\n"
    )
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
