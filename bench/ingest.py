"""Ingest benchmark: POST /v1/withdrawals against bare INSERT + defer endpoints and a no-op one.

    .venv/bin/python -m bench.ingest [--duration 10] [--out FILE]

Creates a scratch database (`payouts_bench_ingest`, on TEST_DATABASE_URL's server), serves the API and
the yardstick endpoints (bench/server.py) from one uvicorn process (uvloop, httptools, one
worker), and drives them with wrk (Debian package `wrk`, a separate process; 2 threads) at 10,
100 and 1,000 connections, each taking all the server gives; then the API alone again at 100
connections resending the 100-connection run's requests (retries, answered as replays); then
paced (each client pauses between requests) to offer the bare INSERT+defer endpoint's
throughput and 50 and 75 % of the API's: latency at a given load.
The database first gets a history of SEED withdrawals (bench/history.py). No job worker runs, so
the measure is the API alone. All share the machine's 2 cores with wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from bench.history import SEED, fill
from bench.server import BARE_TABLE
from bench.stack import drop_database, scratch_database
from db import clients
from jobs import devchain
from tests.conftest import REPO_ROOT, free_port

CONNECTIONS = (10, 100, 1000)
PACED_CONNECTIONS = 100
RETRY_CONNECTIONS = 100
PACED_SHARES = (0.5, 0.75)
CALIBRATION_RUNS = 3
CALIBRATION_SECONDS = 3
CALIBRATION_TOLERANCE = 0.03
RECIPIENT = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"
HISTORY_PAYEE = "0x" + "00" * 19 + "01"  # the history payouts' `to`: no chain runs here
SCRIPT = REPO_ROOT / "bench" / "post.lua"
RESULT = re.compile(r"RESULT rps=([\d.]+) p50=([\d.]+) p95=([\d.]+) p99=([\d.]+) requests=(\d+) errors=(\d+)")


DATABASE = "payouts_bench_ingest"


def seeded_database() -> tuple[str, uuid.UUID, str]:
    """The scratch database with the benchmark history, and a client to send creates as: (URL,
    the client's id, its API key)."""
    url = scratch_database(DATABASE)
    with psycopg.connect(url, autocommit=True) as conn:
        bench_client = clients.create_client(conn, "bench")
        key = clients.create_key(conn, bench_client)
        history_client = clients.create_client(conn, "history")
    # Tables of a running system, not a new database's first minute (bench/history.py).
    fill(url, str(history_client), 0, SEED, HISTORY_PAYEE)
    return url, bench_client, key


def run_wrk(
    url: str, path: str, key: str, connections: int, seconds: int, run: str, think_ms: float | None = None
) -> dict[str, float]:
    """wrk's figures; with think_ms, each connection pauses that long on average before each
    request (bench/post.lua), so the load is what N clients offer rather than all the server takes."""
    env = os.environ | {"BENCH_PATH": path, "BENCH_KEY": key, "BENCH_TO": RECIPIENT, "BENCH_RUN": run}
    if think_ms is not None:
        env["BENCH_THINK_MS"] = f"{think_ms:.3f}"  # 0: no pause (post.lua)
    done = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(REPO_ROOT / "bench/post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 60,
    )
    match = RESULT.search(done.stdout)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    rps, p50, p95, p99, requests, errors = match.groups()
    return {
        "rps": float(rps),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "requests": int(requests),
        "errors": int(errors),
    }


def calibrate(base: str, key: str, offered: float, run: str) -> float:
    """The mean pause that makes PACED_CONNECTIONS clients send about `offered` requests/s.

    A client sends once per pause plus latency: N / (pause + latency) requests/s in all. Latency
    grows with the load, so short runs correct the pause for the latency they saw."""
    think = PACED_CONNECTIONS / offered * 1000
    for attempt in range(CALIBRATION_RUNS):
        got = run_wrk(base, "/v1/withdrawals", key, PACED_CONNECTIONS, CALIBRATION_SECONDS, f"{run}-{attempt}", think)
        if abs(got["rps"] / offered - 1) < CALIBRATION_TOLERANCE:
            break
        # pause + latency = N / achieved; keep the latency, aim the sum at N / offered.
        think = max(0.0, think + (PACED_CONNECTIONS / offered - PACED_CONNECTIONS / got["rps"]) * 1000)
    return think


def created_count(url: str, client_id: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM withdrawals WHERE client_id = %s", (client_id,)).fetchone()
    assert row is not None
    return int(row[0])


def paced_note(offered: float, think: float, got: dict[str, float]) -> str:
    """Say when a paced run is not the load it was meant to be."""
    if think == 0:
        return "no pause: as many as the server takes, short of the offered rate"
    short = 1 - got["rps"] / offered
    return f"{short:.0%} short of the offered rate" if short > CALIBRATION_TOLERANCE else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    url, bench_client, key = seeded_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BARE_TABLE)
    port = free_port()
    log = (REPO_ROOT / "bench/results").resolve()
    log.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=REPO_ROOT,
        env=os.environ | {"DATABASE_URL": url, "PAYOUTS_DB_POOL_SIZE": "20"},
        stdout=(log / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    rows = []
    paced: list[tuple[str, float, float, dict[str, float]]] = []
    try:
        devchain.wait_until_serving(f"http://127.0.0.1:{port}/healthz", server, 30)
        base = f"http://127.0.0.1:{port}"
        run = str(time.time_ns())
        for connections in CONNECTIONS:
            api = run_wrk(base, "/v1/withdrawals", key, connections, args.duration, f"{run}-{connections}")
            bare = run_wrk(base, "/bare", key, connections, args.duration, f"{run}-{connections}")
            one = run_wrk(base, "/bare-one", key, connections, args.duration, f"{run}-{connections}")
            floor = run_wrk(base, "/noop", key, connections, args.duration, f"{run}-{connections}")
            rows.append((connections, api, bare, one, floor))
            print(
                f"{connections} connections: api {api['rps']:.0f}/s p95 {api['p95']:.1f} ms, "
                f"bare {bare['rps']:.0f}/s p95 {bare['p95']:.1f} ms, "
                f"bare one-statement {one['rps']:.0f}/s p95 {one['p95']:.1f} ms, "
                f"no-op {floor['rps']:.0f}/s p95 {floor['p95']:.1f} ms",
                flush=True,
            )
        # Retries: the 100-connection run's requests again, same keys and bodies (wrk numbers
        # them alike), as clients resend after an outage: answered as replays, nothing written.
        # A request beyond the first run's count is a fresh create; the table says how many.
        written = created_count(url, bench_client)
        retry = run_wrk(base, "/v1/withdrawals", key, RETRY_CONNECTIONS, args.duration, f"{run}-{RETRY_CONNECTIONS}")
        retry["fresh"] = created_count(url, bench_client) - written
        print(
            f"retries, {RETRY_CONNECTIONS} connections: {retry['rps']:.0f}/s p95 {retry['p95']:.1f} ms, "
            f"{retry['fresh']} of {retry['requests']} fresh",
            flush=True,
        )
        # The same 100 clients, each pausing between requests: latency at a given load rather
        # than at saturation (where Little's law sets it: 100 / throughput).
        saturated = next(api for connections, api, *_ in rows if connections == PACED_CONNECTIONS)
        bare_rps = next(bare for connections, _, bare, *_ in rows if connections == PACED_CONNECTIONS)["rps"]
        targets = [("bare INSERT+defer's throughput", bare_rps)]
        targets += [(f"{share:.0%} of the API's", share * saturated["rps"]) for share in PACED_SHARES]
        for label, offered in targets:
            think = calibrate(base, key, offered, f"{run}-calibrate-{offered:.0f}")
            got = run_wrk(
                base, "/v1/withdrawals", key, PACED_CONNECTIONS, args.duration, f"{run}-paced-{offered:.0f}", think
            )
            paced.append((label, offered, think, got))
            print(f"paced, {label} ({offered:.0f}/s offered): {got['rps']:.0f}/s p95 {got['p95']:.1f} ms", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=20)
        drop_database(DATABASE)

    lines = [
        f"Ingest, {args.duration} s per cell, one uvicorn process (uvloop), wrk -t2 on the same 2-core machine.",
        "bare: INSERT + procrastinate defer in one transaction (4 round trips); bare one-statement: both in one",
        "CTE (1 round trip), as the API's create does for each batch of creates that arrive together "
        "(group commit). no-op: parses the body and answers, no database: the floor of this server and "
        "machine. Ratios are the API's throughput over each.",
        "",
        "| connections | POST /v1/withdrawals req/s | p50 / p95 / p99 ms "
        "| bare INSERT+defer req/s | p50 / p95 / p99 ms | ratio "
        "| bare one-statement req/s | p50 / p95 / p99 ms | ratio "
        "| no-op req/s | p50 / p95 / p99 ms | errors (api / bare / one / no-op) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for connections, api, bare, one, floor in rows:
        lines.append(
            f"| {connections} | {api['rps']:,.0f} | {api['p50']:.1f} / {api['p95']:.1f} / {api['p99']:.1f} "
            f"| {bare['rps']:,.0f} | {bare['p50']:.1f} / {bare['p95']:.1f} / {bare['p99']:.1f} "
            f"| {api['rps'] / bare['rps']:.0%} "
            f"| {one['rps']:,.0f} | {one['p50']:.1f} / {one['p95']:.1f} / {one['p99']:.1f} "
            f"| {api['rps'] / one['rps']:.0%} "
            f"| {floor['rps']:,.0f} | {floor['p50']:.1f} / {floor['p95']:.1f} / {floor['p99']:.1f} "
            f"| {api['errors']} / {bare['errors']} / {one['errors']} / {floor['errors']} |"
        )
    replays = retry["requests"] - retry["fresh"]
    lines += [
        "",
        f"Retries: {RETRY_CONNECTIONS} connections sending the {RETRY_CONNECTIONS}-connection run's requests again "
        "(same API key, Idempotency-Key and body, as clients resend after an outage): each is answered 200 "
        "with the withdrawal written the first time (a replay); requests past the first run's count are "
        "fresh creates (counted in the database).",
        "",
        "| connections | req/s | p50 / p95 / p99 ms | replays | fresh creates | errors |",
        "|---|---|---|---|---|---|",
        f"| {RETRY_CONNECTIONS} | {retry['rps']:,.0f} | {retry['p50']:.1f} / {retry['p95']:.1f} / {retry['p99']:.1f} "
        f"| {replays:,} | {retry['fresh']:,} | {retry['errors']} |",
    ]
    lines += [
        "",
        f"Paced: {PACED_CONNECTIONS} connections to POST /v1/withdrawals, each pausing before each request for a "
        "random time (exponential; mean = connections / offered rate), so the clients offer a rate instead "
        "of taking all the server gives. A client's pause starts when its answer arrives, so short runs "
        "first set the pause for the latency at that load (bench.ingest.calibrate); achieved is what the "
        "measured run got. Clients that wait for their answer send less when latency grows: near "
        "saturation, clients that send on their own schedule would see more latency than these.",
        "",
        "| offered | offered req/s | mean pause ms | achieved req/s | p50 / p95 / p99 ms | errors | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, offered, think, got in paced:
        lines.append(
            f"| {label} | {offered:,.0f} | {think:.1f} | {got['rps']:,.0f} "
            f"| {got['p50']:.1f} / {got['p95']:.1f} / {got['p99']:.1f} | {got['errors']} "
            f"| {paced_note(offered, think, got)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
