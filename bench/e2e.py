"""End-to-end benchmark: withdrawals from the HTTP request to CONFIRMED on a local anvil chain.

    .venv/bin/python -m bench.e2e [--count 10000] [--rates 100,1500] [--backlog 20000]
                                  [--chains 2s-30M,1s-300M] [--quick] [--out FILE]

For each chain setting (2 s blocks with a 30M gas limit, where the chain is the limit, and 1 s
blocks with 300M, where it is not) a scratch database (`payouts_bench_e2e`) and an anvil are
made, with a history of SEED withdrawals (bench/history.py); the API runs as one uvicorn process
and two job workers (`python -m jobs.worker`) run next to it. For each offered rate a load
process (bench/load.py, open loop) submits `--count` withdrawals through POST /v1/withdrawals:
half USDT, half ETH, half to fresh addresses and half to addresses that already hold ETH and
USDT. The run ends when every withdrawal is terminal. Then a
backlog run: `--backlog` withdrawals submitted with the workers stopped (SIGSTOP), drained once
they resume (SIGCONT), the case where the pipeline, not the request rate, sets the pace.

Measured per run: confirmed withdrawals per second (overall, and the steady rate between the 10th
and the 90th percentile of the confirmations), request-to-inclusion and request-to-CONFIRMED
percentiles (request = the withdrawal's created_at; inclusion = when the block holding its
payout appeared; CONFIRMED = its withdrawal_events row), CPU seconds per withdrawal of each
process kind (/proc/<pid>/stat), and the share of the chain's gas capacity used between the
first and the last block that paid one of the run's withdrawals (for a backlog, also over the
blocks built while at least a tenth of it still waited: the target's "large backlog").
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from bench.history import SEED, fill
from bench.stack import (
    BenchChain,
    BlockMeter,
    CpuMeter,
    Processes,
    chains_toml,
    connect,
    drop_database,
    machine,
    new_client,
    percentile,
    register_wallets,
    scratch_database,
    service_env,
    start_api,
    start_chain,
    start_workers,
    terminate_on_sigterm,
)
from jobs.batchcontract import batch_contract_address
from tests.conftest import REPO_ROOT

CHAINS = {"2s-30M": (2.0, 30_000_000), "1s-300M": (1.0, 300_000_000)}
KINDS = ("api", "worker", "anvil", "postgres", "load")
TERMINAL = ("CONFIRMED", "FAILED", "CANCELED")
DATABASE = "payouts_bench_e2e"
# Submission rate of a backlog run: above what the API answers here, so it goes in as fast as it can.
BACKLOG_RATE = 3_000.0
# Seconds between progress lines.
PRINT_EVERY = 10.0


@dataclass
class Settings:
    wallets: int = 16
    existing: int = 500
    workers: int = 2
    concurrency: int = 8
    max_in_flight: int = 128
    confirmations: int = 2
    timeout: float = 900.0


@dataclass
class Stack:
    procs: Processes
    url: str
    database: str
    chain: BenchChain
    api_url: str
    blocks: BlockMeter
    log_dir: Path


@contextmanager
def running_stack(
    procs: Processes, url: str, database: str, block_time: float, gas_limit: int, settings: Settings, log_dir: Path
) -> Iterator[Stack]:
    """anvil, the API and the workers on database `url`; all of them stopped on the way out."""
    blocks: BlockMeter | None = None
    try:
        chain = start_chain(
            procs,
            block_time=block_time,
            gas_limit=gas_limit,
            wallet_count=settings.wallets,
            existing_count=settings.existing,
        )
        register_wallets(url, chain)
        chains_file = log_dir / "chains.toml"
        chains_file.write_text(
            chains_toml(chain, confirmations=settings.confirmations, max_in_flight=settings.max_in_flight)
        )
        env = service_env(url, chain, chains_file)
        api_url = start_api(procs, env)
        start_workers(procs, env, settings.workers, settings.concurrency)
        blocks = BlockMeter(chain.rpc_url)
        blocks.start()
        yield Stack(procs, url, database, chain, api_url, blocks, log_dir)
    finally:
        if blocks is not None:
            blocks.stop()
        procs.stop_all()


def make_plan(count: int, existing: list[str], seed: int) -> list[dict[str, str]]:
    """Alternating USDT / ETH; within each, alternating fresh / existing recipients."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test addresses, not secrets
    plan = []
    for i in range(count):
        fresh = (i // 2) % 2 == 0
        to = to_checksum_address(rng.randbytes(20)) if fresh else rng.choice(existing)
        plan.append(
            {"asset": "USDT", "to": to, "amount": "1.5"}
            if i % 2 == 0
            else {"asset": "ETH", "to": to, "amount": "0.001"}
        )
    return plan


def pause_workers(stack: Stack, paused: bool) -> None:
    """SIGSTOP / SIGCONT the job workers: a backlog builds up while they are stopped, and they
    resume warm (a restarted worker would pay its imports during the measurement)."""
    for proc in stack.procs.of_kind("worker"):
        proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)


# Each run's recipients come from a seed of its own: a "fresh" address of one run must not be one
# an earlier run already paid (it would no longer be fresh, and batch like an existing one).
_seeds = itertools.count(1)


def run_phase(
    stack: Stack,
    settings: Settings,
    count: int,
    rate: float,
    label: str,
    seed: int | None = None,
    backlog: bool = False,
) -> dict[str, Any]:
    """Submit `count` withdrawals at `rate` per second and wait until all are terminal.

    With `backlog`, the workers are stopped while the withdrawals are submitted and resumed once
    all are in: the run then measures how fast the pipeline drains a large backlog (CPU and the
    times count from the resume)."""
    client_id, key = new_client(stack.url, f"bench-{label}")
    plan_file = stack.log_dir / f"plan-{label}.json"
    plan_file.write_text(json.dumps(make_plan(count, stack.chain.existing, next(_seeds) if seed is None else seed)))
    load_out = stack.log_dir / f"load-{label}.json"
    monitor = connect(stack.url)
    cpu = CpuMeter(stack.procs, stack.database, stack.url, KINDS)
    cpu.exclude_backend(monitor.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])  # type: ignore[index]
    offsets = log_offsets(stack.log_dir)
    argv = [sys.executable, "-m", "bench.load", "--url", stack.api_url, "--key", key, "--plan", str(plan_file)]
    argv += ["--rate", str(rate), "--run", label, "--out", str(load_out)]
    resumed: float | None = None
    if backlog:
        pause_workers(stack, True)
        try:
            load = stack.procs.start("load", argv)
            if load.wait(timeout=settings.timeout) != 0:
                raise RuntimeError(f"the load process failed ({load.returncode}); see {stack.log_dir}")
        finally:
            cpu.start()
            resumed = time.time()
            pause_workers(stack, False)
    else:
        cpu.start()
        load = stack.procs.start("load", argv)
    started = resumed or time.time()
    counts: dict[str, int] = {}
    timed_out = False
    next_print = PRINT_EVERY
    oldest: Any = "-infinity"  # created_at of the oldest withdrawal of the run still open

    def progress() -> None:
        nonlocal counts, next_print
        counts = status_counts(monitor, client_id)
        elapsed = time.time() - started
        print(f"  {label}: {elapsed:.0f}s {dict(sorted(counts.items()))}", flush=True)
        next_print = elapsed + PRINT_EVERY

    # The monitor's reads run on the same 2 cores as the system it measures, so they are kept
    # small: while requests go in, the status counts (a read of every withdrawal of the run) only
    # every PRINT_EVERY seconds. Once the load is done, every 0.5 s it reads only the withdrawals
    # from the oldest one still open (a terminal status is final); when none is open, all of them
    # once more, for a create that the load gave up waiting for and that committed since (its
    # created_at, its transaction's start, may be older than the oldest open one).
    try:
        while True:
            elapsed = time.time() - started
            if elapsed > settings.timeout:
                timed_out = True
                break
            if elapsed >= next_print:
                progress()
            if load.poll() is None:
                time.sleep(0.1)
                continue
            if load.returncode != 0:
                raise RuntimeError(f"the load process failed ({load.returncode}); see {stack.log_dir}")
            row = monitor.execute(
                "SELECT count(*) AS open, min(created_at) AS oldest FROM withdrawals"
                " WHERE client_id = %s AND created_at >= %s::timestamptz AND status::text <> ALL(%s)",
                (client_id, oldest, list(TERMINAL)),
            ).fetchone()
            assert row is not None
            if not row["open"]:
                if oldest == "-infinity":
                    break
                oldest = "-infinity"
                continue
            oldest = row["oldest"]
            time.sleep(0.5)
    finally:
        cpu_seconds = cpu.stop()
        if load.poll() is None:
            stack.procs.stop(load)
    finished = time.time()
    counts = status_counts(monitor, client_id)
    time.sleep(max(0.5, 3 * stack.chain.block_time))  # the block meter catches up with the last blocks
    load_result = json.loads(load_out.read_text()) if load_out.exists() else {}
    result = measure(monitor, client_id, stack.blocks, since=resumed)
    monitor.close()
    result |= {
        "label": label,
        "backlog": backlog,
        "count": count,
        "offered_rate": rate,
        "load": load_result,
        "cpu": cpu_seconds,
        "window_seconds": finished - started,
        "timed_out": timed_out,
        "statuses": counts,
        "jobs": job_stats(stack.log_dir, offsets),
    }
    return result


def status_counts(conn: Any, client_id: str) -> dict[str, int]:
    """How many of a client's withdrawals are in each status."""
    rows = conn.execute(
        "SELECT status::text AS status, count(*) AS n FROM withdrawals WHERE client_id = %s GROUP BY status",
        (client_id,),
    ).fetchall()
    return {r["status"]: r["n"] for r in rows}


JOB_LINE = re.compile(r"Job (\w+)\[\d+\].* ended with status: (\w+), lasted ([\d.]+) s")


def log_offsets(log_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in log_dir.glob("worker-*.log")}


def job_stats(log_dir: Path, offsets: dict[Path, int]) -> dict[str, list[float]]:
    """Per task: [jobs run, seconds they lasted in all, jobs that failed], from the workers' logs
    since `offsets` (procrastinate deletes successful jobs, so its tables cannot tell)."""
    stats: dict[str, list[float]] = {}
    for path in log_dir.glob("worker-*.log"):
        with path.open("rb") as log:
            log.seek(offsets.get(path, 0))
            for line in log.read().decode(errors="replace").splitlines():
                match = JOB_LINE.search(line)
                if match:
                    task, status, seconds = match.groups()
                    entry = stats.setdefault(task, [0, 0.0, 0])
                    entry[0] += 1
                    entry[1] += float(seconds)
                    entry[2] += status != "Success"
    return stats


def warm_up(stack: Stack, settings: Settings) -> None:
    """A few withdrawals through the whole pipeline first, so that no run pays for the workers'
    first jobs (imports, key derivation, the batch contract check)."""
    run_phase(stack, settings, 20 * settings.wallets, 100, f"warm-up-{int(time.time())}", seed=0)


def measure(conn: Any, client_id: str, blocks: BlockMeter, since: float | None = None) -> dict[str, Any]:
    """The run's figures from the database and the block meter; with `since` (a backlog run),
    confirmed/s and the inclusion and CONFIRMED latencies count from then rather than from the
    requests."""
    rows = conn.execute(
        """
        SELECT extract(epoch FROM w.created_at)::float8 AS created, w.status::text AS status,
               p.id AS payout, p.block_number,
               (SELECT extract(epoch FROM e.created_at)::float8 FROM withdrawal_events e
                WHERE e.withdrawal_id = w.id AND e.to_status = 'CONFIRMED') AS confirmed
        FROM withdrawals w
        LEFT JOIN payout_items i ON i.withdrawal_id = w.id AND i.live
        LEFT JOIN payouts p ON p.id = i.payout_id
        WHERE w.client_id = %s
        """,
        (client_id,),
    ).fetchall()
    seen = dict(blocks.blocks)
    # A backlog run's latencies count from the workers' resume, not from the requests it held.
    start = {id(r): max(r["created"], since or 0.0) for r in rows}
    inclusion = [seen[r["block_number"]].seen - start[id(r)] for r in rows if r["block_number"] in seen]
    confirmed_rows = [r for r in rows if r["confirmed"] is not None]
    to_confirmed = [r["confirmed"] - start[id(r)] for r in confirmed_rows]
    first_request = min((r["created"] for r in rows), default=0.0)
    confirmed_times = sorted(r["confirmed"] for r in confirmed_rows)
    out: dict[str, Any] = {
        "withdrawals": len(rows),
        "confirmed": len(confirmed_rows),
        "unseen_blocks": sum(1 for r in rows if r["block_number"] is not None and r["block_number"] not in seen),
    }
    if confirmed_times:
        begin = first_request if since is None else since
        out["confirmed_per_s"] = len(confirmed_times) / max(confirmed_times[-1] - begin, 1e-9)
        # The steady rate, without the pipeline's fill and drain: confirmations between the 10th
        # and the 90th percentile of their times, over the time between them (not told when that
        # is under 3 s: confirmations come a block at a time, too few blocks say nothing steady).
        lo, hi = len(confirmed_times) // 10, (len(confirmed_times) * 9) // 10
        if confirmed_times[hi] - confirmed_times[lo] >= 3.0:
            out["sustained_per_s"] = (hi - lo) / (confirmed_times[hi] - confirmed_times[lo])
        out["submit_seconds"] = max(r["created"] for r in rows) - first_request
        out["drain_seconds"] = confirmed_times[-1] - max(r["created"] for r in rows)
    for name, values in (("inclusion", inclusion), ("confirmation", to_confirmed)):
        if values:
            out[name] = {p: percentile(values, p) for p in (50, 95, 99)}
    numbers = sorted({r["block_number"] for r in rows if r["block_number"] is not None})
    if numbers:
        window = [b for n, b in sorted(seen.items()) if numbers[0] <= n <= numbers[-1]]
        if window:
            out["blocks"] = len(window)
            out["gas_share"] = sum(b.gas_used for b in window) / sum(b.gas_limit for b in window)
            out["block_gas_limit"] = window[0].gas_limit
            out["block_gas"] = [b.gas_used / b.gas_limit for b in window]
            # Without the first and the last block, which the run only partly fills by nature
            # (its first transactions and its last ones).
            middle = window[1:-1]
            if middle:
                out["gas_share_middle"] = sum(b.gas_used for b in middle) / sum(b.gas_limit for b in middle)
            # While the backlog is large: from the first block that paid the run to the block that
            # was built while at least a tenth of the run still waited (the drain's last blocks
            # carry what is left, less than a full block, by nature).
            per_block = Counter(r["block_number"] for r in rows if r["block_number"] is not None)
            included, last_large = 0, numbers[0]
            for n in numbers:
                if included >= 0.9 * len(rows):
                    break
                last_large = n
                included += per_block[n]
            large = [b for b in window if b.number <= last_large]
            if large:
                out["large_blocks"] = len(large)
                out["gas_share_large"] = sum(b.gas_used for b in large) / sum(b.gas_limit for b in large)
    stages = conn.execute(
        """
        SELECT e.to_status::text AS stage,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM e.created_at - w.created_at)) AS seconds
        FROM withdrawals w JOIN withdrawal_events e ON e.withdrawal_id = w.id
        WHERE w.client_id = %s AND e.from_status IS NOT NULL
        GROUP BY 1
        """,
        (client_id,),
    ).fetchall()
    out["stages"] = {r["stage"]: r["seconds"] for r in stages}
    payouts = {r["payout"] for r in rows if r["payout"] is not None}
    out["transactions"] = len(payouts)
    if payouts:
        attempts = conn.execute(
            "SELECT count(*) AS n FROM tx_attempts WHERE payout_id = ANY(%s::uuid[])", (list(payouts),)
        ).fetchone()["n"]
        out["attempts"] = attempts
    return out


# ------------------------------------------------------------------------------------------------
# Report


def fmt_p(values: dict[int, float] | None) -> str:
    if not values:
        return "-"
    return " / ".join(f"{values[p]:.1f}" for p in (50, 95, 99))


def middle_share(r: dict[str, Any]) -> str:
    parts = []
    if "gas_share_middle" in r:
        parts.append(f"{r['gas_share_middle']:.0%} without the first and last")
    if r.get("backlog") and "gas_share_large" in r:
        parts.append(f"{r['gas_share_large']:.0%} of the {r['large_blocks']} built while ≥ 10% of it waited")
    return f" ({'; '.join(parts)})" if parts else ""


def sustained(r: dict[str, Any]) -> str:
    return f"{r['sustained_per_s']:,.0f}" if "sustained_per_s" in r else "-"


def offered(r: dict[str, Any]) -> str:
    return "backlog" if r.get("backlog") else f"{r['offered_rate']:,.0f}"


def results_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| chain | offered/s | answered/s | withdrawals | confirmed | confirmed/s | sustained/s "
        "| request→inclusion p50 / p95 / p99 s | request→CONFIRMED p50 / p95 / p99 s | API p95 ms "
        "| gas used of capacity | transactions (withdrawals each) | fee bumps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        load = r.get("load", {})
        tx = r.get("transactions", 0)
        bumps = r.get("attempts", tx) - tx
        lines.append(
            f"| {r['chain']} | {offered(r)} | {load.get('completion_rate', 0):,.0f} | {r['count']:,} "
            f"| {r['confirmed']:,}{' (timed out)' if r['timed_out'] else ''} "
            f"| {r.get('confirmed_per_s', 0):,.0f} | {sustained(r)} "
            f"| {fmt_p(r.get('inclusion'))} | {fmt_p(r.get('confirmation'))} | {load.get('p95_ms', 0):,.0f} "
            f"| {r.get('gas_share', 0):.0%} of {r.get('blocks', 0)} blocks{middle_share(r)} "
            f"| {tx:,} ({r['withdrawals'] / tx if tx else 0:.1f}) | {bumps:,} |"
        )
    return lines


def cpu_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| chain | offered/s | " + " | ".join(f"{k} ms" for k in KINDS) + " | total ms | total CPU s / wall s |",
        "|---|---|" + "---|" * (len(KINDS) + 2),
    ]
    for r in results:
        per = {k: r["cpu"].get(k, 0.0) * 1000 / max(r["count"], 1) for k in KINDS}
        total = sum(r["cpu"].values())
        lines.append(
            f"| {r['chain']} | {offered(r)} | "
            + " | ".join(f"{per[k]:.2f}" for k in KINDS)
            + f" | {sum(per.values()):.2f} | {total / max(r['window_seconds'], 1e-9):.2f} |"
        )
    return lines


STAGES = ("VALIDATING", "SIGNING", "SIGNED", "BROADCASTING", "BROADCASTED", "CONFIRMING", "CONFIRMED")


def stage_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| chain | offered/s | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for r in results:
        cells = []
        for stage in STAGES:
            seconds = r.get("stages", {}).get(stage)
            cells.append(f"{seconds[0]:.1f} / {seconds[1]:.1f}" if seconds else "-")
        lines.append(f"| {r['chain']} | {offered(r)} | " + " | ".join(cells) + " |")
    return lines


JOB_TASKS = ("validate", "sign", "broadcast", "watch", "tick")


def jobs_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| chain | offered/s | " + " | ".join(f"{t} jobs (s in all)" for t in JOB_TASKS) + " | failed |",
        "|---|---|" + "---|" * (len(JOB_TASKS) + 1),
    ]
    for r in results:
        jobs = r.get("jobs", {})
        cells = [f"{jobs[t][0]:,} ({jobs[t][1]:,.0f})" if t in jobs else "0" for t in JOB_TASKS]
        failed = sum(v[2] for v in jobs.values())
        lines.append(f"| {r['chain']} | {offered(r)} | " + " | ".join(cells) + f" | {failed} |")
    return lines


def targets(results: list[dict[str, Any]]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    lines = []
    fast = [r for r in results if r["chain"] == "1s-300M" and not r.get("backlog")]
    if fast:
        best = max(r.get("sustained_per_s", 0) for r in fast)
        lines.append(
            f"- 1 s blocks / 300M gas, ≥ 1,000 confirmed/s sustained (requests through the API, the steady "
            f"rate): {best:,.0f}/s, {verdict(best >= 1000)}"
        )
    for r in results:
        if r.get("backlog"):
            lines.append(
                f"- {r['chain']} backlog of {r['count']:,} (no requests meanwhile): drained at "
                f"{r.get('confirmed_per_s', 0):,.0f} confirmed/s from the workers' resume to the last CONFIRMED"
            )
    slow = [r for r in results if r["chain"] == "2s-30M"]
    if slow:
        top = next((r for r in slow if r.get("backlog")), None) or max(slow, key=lambda r: r["offered_rate"])
        if top.get("backlog") and "gas_share_large" in top:
            share, which = top["gas_share_large"], "the blocks built while at least a tenth of it still waited"
        else:
            share = top.get("gas_share_middle", top.get("gas_share", 0))
            which = "the blocks between the first and the last that paid it"
        lines.append(
            f"- 2 s blocks / 30M gas, ≥ 90% of gas capacity used with a large backlog "
            f"({offered(top)}, {which}): {share:.0%} "
            f"(per block, to the last that paid it: {', '.join(f'{g:.0%}' for g in top.get('block_gas', []))}), "
            f"{verdict(share >= 0.9)}"
        )
    for r in results:
        if r["offered_rate"] == 100 and not r.get("backlog") and r.get("inclusion"):
            bound = CHAINS[r["chain"]][0] + 1
            p95 = r["inclusion"][95]
            lines.append(
                f"- {r['chain']} at 100/s, p95 request→inclusion ≤ {bound:g} s: {p95:.1f} s, {verdict(p95 <= bound)}"
            )
    return lines


def report(results: list[dict[str, Any]], settings: Settings, note: str) -> str:
    lines = [
        f"End-to-end, {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{note}.",
        f"One uvicorn API process, {settings.workers} workers (`--concurrency {settings.concurrency}`), "
        f"{settings.wallets} hot wallets (max_in_flight_per_wallet {settings.max_in_flight}), "
        f"confirmations {settings.confirmations}; load: bench/load.py (its own asyncio HTTP client, open loop). "
        "Half USDT, half ETH; half to fresh addresses, half to addresses that hold both.",
        "offered/s: the load process's schedule; answered/s: requests / seconds until the last answer; "
        "confirmed/s: withdrawals CONFIRMED / seconds from the first request to the last CONFIRMED; "
        "sustained/s: the steady rate, confirmations between the 10th and the 90th percentile of their times "
        "over the seconds between them; backlog: all withdrawals submitted with the workers stopped, "
        "then drained (confirmed/s, latencies and CPU count from the workers' resume); "
        "inclusion: when the block holding the payout appeared (polled every 50 ms); "
        "gas used: sum of gasUsed / sum of gasLimit over the blocks from the first to the last that paid one "
        "of the run's withdrawals (for a backlog, also over the blocks built while at least a tenth of it "
        "still waited to be included).",
        "",
        *results_table(results),
        "",
        "CPU per withdrawal (ms of user+system time per process kind; postgres = backends of the bench database):",
        "",
        *cpu_table(results),
        "",
        "Seconds from the request to each status (p50 / p95, from withdrawal_events):",
        "",
        *stage_table(results),
        "",
        "Jobs the workers ran during each run, and the seconds they lasted in all (from the worker logs):",
        "",
        *jobs_table(results),
        "",
        "Targets (reported, not asserted):",
        "",
        *targets(results),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.e2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="withdrawals per run (default 10,000)")
    parser.add_argument("--rates", default="100,1500", help="offered rates per second, comma-separated")
    parser.add_argument("--chains", default=",".join(CHAINS), help=f"chain settings among {', '.join(CHAINS)}")
    parser.add_argument(
        "--backlog",
        type=int,
        default=20_000,
        help="withdrawals submitted with the workers stopped, then drained, per chain (default 20,000; 0: none)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 withdrawals per run")
    parser.add_argument("--wallets", type=int, default=Settings.wallets, help="hot wallets (default 16)")
    parser.add_argument("--concurrency", type=int, default=Settings.concurrency, help="jobs per worker (default 8)")
    parser.add_argument("--max-in-flight", type=int, default=Settings.max_in_flight)
    parser.add_argument("--timeout", type=float, default=Settings.timeout, help="seconds per run before giving up")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database for inspection")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.count = 1_000
        args.backlog = min(args.backlog, 1_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        wallets=args.wallets, concurrency=args.concurrency, max_in_flight=args.max_in_flight, timeout=args.timeout
    )
    rates = [float(r) for r in args.rates.split(",")]
    log_root = (REPO_ROOT / "bench/results/logs/e2e").resolve()
    results: list[dict[str, Any]] = []
    with terminate_on_sigterm():
        try:
            for name in args.chains.split(","):
                block_time, gas_limit = CHAINS[name]
                log_dir = log_root / name
                log_dir.mkdir(parents=True, exist_ok=True)
                for old in log_dir.iterdir():
                    old.unlink()
                procs = Processes(log_dir)
                url = scratch_database(DATABASE)
                # Tables of a running system, not a new database's first minute (bench/history.py).
                fill(url, new_client(url, "history")[0], 0, SEED, batch_contract_address())
                print(f"{name}: {block_time:g} s blocks, gas limit {gas_limit:,}", flush=True)
                with running_stack(procs, url, DATABASE, block_time, gas_limit, settings, log_dir) as stack:
                    warm_up(stack, settings)
                    for rate in rates:
                        label = f"{name}-{rate:g}-{int(time.time())}"
                        result = run_phase(stack, settings, args.count, rate, label) | {"chain": name}
                        results.append(result)
                        print("\n".join(results_table([result])[2:]), flush=True)
                    if args.backlog:
                        label = f"{name}-backlog-{int(time.time())}"
                        result = run_phase(stack, settings, args.backlog, BACKLOG_RATE, label, backlog=True) | {
                            "chain": name
                        }
                        results.append(result)
                        print("\n".join(results_table([result])[2:]), flush=True)
        finally:
            if not args.keep_db:
                drop_database(DATABASE)
    note = " (quick run)" if args.quick else ""
    text = report(results, settings, note)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
