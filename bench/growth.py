"""Growth benchmark: ingest, end-to-end and the hot queries' plans with a big history in the tables.

    .venv/bin/python -m bench.growth [--sizes 100000,1000000] [--count 2000] [--rates 100,1000]
                                     [--quick] [--out FILE]

One scratch database (`payouts_bench_growth`) and one anvil (1 s blocks, 300M gas: the chain is
not the limit) serve every size. For the empty database and then for each size, the history is
filled up to that many CONFIRMED withdrawals (SQL generate_series, bench/history.py), then:

- the hot queries of sql/queries.sql are run under EXPLAIN (ANALYZE, BUFFERS), with the values a
  running system would pass, once as a custom plan (literal values) and once as the generic plan
  a prepared statement switches to (psycopg prepares a query after 5 runs on a connection);
  scans of the big tables without an index are flagged; the status changes are planned with
  2,000 withdrawals put in flight after ANALYZE (rolled back), and flagged when they find their
  rows through the in-flight index instead of by id;
- ingest: wrk (100 connections, 10 s, bench/post.lua) against POST /v1/withdrawals with no
  worker running, as bench/ingest.py does; the withdrawals it made are then cancelled (they stay
  in the tables, a few thousand more rows);
- end-to-end: two workers start and bench/e2e.py's runs are made at each rate.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import e2e
from bench.history import BIG_TABLES, PER_PAYOUT, fill
from bench.ingest import run_wrk
from bench.stack import (
    BlockMeter,
    Processes,
    chains_toml,
    connect,
    drop_database,
    machine,
    new_client,
    register_wallets,
    scratch_database,
    service_env,
    start_api,
    start_chain,
    start_workers,
    terminate_on_sigterm,
)
from db import withdrawals as repo
from db.clients import hash_key
from db.queries import query
from tests.conftest import REPO_ROOT

DATABASE = "payouts_bench_growth"


def table_sizes(url: str) -> dict[str, tuple[int, int]]:
    """(rows, bytes with indexes and TOAST) per big table."""
    with connect(url) as conn:
        out = {}
        for table in BIG_TABLES:
            row = conn.execute(
                sql.SQL("SELECT count(*) AS n, pg_total_relation_size({t}) AS bytes FROM {i}").format(
                    t=sql.Literal(table), i=sql.Identifier(table)
                )
            ).fetchone()
            assert row is not None
            out[table] = (row["n"], row["bytes"])
        return out


# ------------------------------------------------------------------------------------------------
# Plans of the hot queries


# Withdrawals put in flight (inside the EXPLAIN's rolled-back transaction) before the status
# changes are planned: the statistics, taken after the fill, say no withdrawal is in flight, which
# is what a table of settled withdrawals says between two ANALYZEs. A plan that finds the rows to
# move through the in-flight statuses reads all of these to move 100.
IN_FLIGHT = 2_000
MOVED = 100

Setup = list[tuple[str, tuple[Any, ...]]]  # statements run before the EXPLAIN, in its transaction


def in_flight(client: str, sender: str, status: str, payout: uuid.UUID | None = None) -> tuple[list[uuid.UUID], Setup]:
    """IN_FLIGHT new withdrawals of `client` moved to `status` (legal steps from PENDING), and a
    payout of `sender` paying the first MOVED of them if `payout` is given."""
    ids = [uuid.uuid4() for _ in range(IN_FLIGHT)]
    setup: Setup = [
        (
            "INSERT INTO withdrawals (id, client_id, idempotency_key, request_hash, chain, asset, to_address, amount)"
            " SELECT i, %s, 'growth-in-flight-' || i::text, '\\x00', 'localhost', 'USDT', %s, 1000000"
            " FROM unnest(%s::uuid[]) i",
            (client, sender, ids),
        )
    ]
    path = {"PENDING": [], "SIGNING": ["VALIDATING", "SIGNING"]}[status]
    setup += [("UPDATE withdrawals SET status = %s WHERE id = ANY(%s)", (step, ids)) for step in path]
    if payout is not None:
        setup += [
            (
                "INSERT INTO payouts (id, chain, sender, kind, asset, to_address)"
                " VALUES (%s, 'localhost', %s, 'withdrawal', 'USDT', %s)",
                (payout, sender, sender),
            ),
            (
                "INSERT INTO payout_items (payout_id, withdrawal_id, amount) SELECT %s, unnest(%s::uuid[]), 1000000",
                (payout, ids[:MOVED]),
            ),
        ]
    return ids, setup


def hot_queries(
    conn: Any, size: int, history_client: str, history_key: str, sender: str
) -> list[tuple[str, str, dict] | tuple[str, str, dict, Setup]]:
    """(label, query name, parameters[, setup]) with the values a running system passes."""
    w = conn.execute(
        "SELECT id, idempotency_key, created_at FROM withdrawals WHERE client_id = %s ORDER BY created_at DESC "
        "OFFSET %s LIMIT 1",
        (history_client, min(1000, size // 2)),
    ).fetchone()
    some = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM withdrawals WHERE client_id = %s ORDER BY created_at DESC LIMIT 100", (history_client,)
        )
    ]
    payouts = [r["id"] for r in conn.execute("SELECT id FROM payouts ORDER BY created_at DESC LIMIT 20")]
    # A sign job passes every PLANNED payout of a wallet: up to 200 (jobs/sign.py), 100 members each.
    many = [r["id"] for r in conn.execute("SELECT id FROM payouts ORDER BY created_at DESC LIMIT 200")]
    chain = "localhost"
    pending, pending_setup = in_flight(history_client, sender, "PENDING")
    payout = uuid.uuid4()
    _, signing_setup = in_flight(history_client, sender, "SIGNING", payout)
    page = {
        "client_id": history_client,
        "statuses": None,
        "chain": None,
        "asset": None,
        "created_from": None,
        "created_to": None,
        "after_created_at": None,
        "after_id": None,
        "limit": 50,
    }
    return [
        ("authenticate", "authenticate", {"key_hash": hash_key(history_key)}),
        (
            "insert_withdrawal",
            "insert_withdrawal",
            repo.insert_params(
                [
                    (
                        hash_key(history_key),
                        repo.NewWithdrawal(
                            idempotency_key=f"explain-{time.time_ns()}",
                            request_hash=b"x" * 32,
                            chain=chain,
                            asset="USDT",
                            to_address="0x976EA74026E726554dB657fA54763abd0C3a0aa9",
                            amount=1_500_000,
                            reference=None,
                        ),
                    )
                ]
            ),
        ),
        (
            "get_withdrawal_by_idempotency_key",
            "get_withdrawal_by_idempotency_key",
            {"client_id": history_client, "idempotency_key": w["idempotency_key"]},
        ),
        ("get_withdrawal", "get_withdrawal", {"id": w["id"], "client_id": history_client}),
        ("list_withdrawals (first page)", "list_withdrawals", page),
        (
            "list_withdrawals (CONFIRMED, USDT, after a cursor)",
            "list_withdrawals",
            page
            | {
                "statuses": ["CONFIRMED"],
                "asset": "USDT",
                "after_created_at": w["created_at"],
                "after_id": w["id"],
            },
        ),
        ("withdrawal_events", "withdrawal_events", {"id": w["id"]}),
        ("payout_of_withdrawal", "payout_of_withdrawal", {"id": w["id"]}),
        ("claim_pending_withdrawals", "claim_pending_withdrawals", {"chain": chain, "limit": 500}),
        ("pending_exists", "pending_exists", {"chain": chain}),
        (
            f"transition_withdrawals ({MOVED} of {IN_FLIGHT:,} PENDING)",
            "transition_withdrawals",
            {
                "ids": pending[:MOVED],
                "from_status": "PENDING",
                "to_status": "VALIDATING",
                "note": "x",
                "failure_code": None,
                "failure_reason": None,
            },
            pending_setup,
        ),
        (
            f"transition_withdrawals_of_payouts ({MOVED} of {IN_FLIGHT:,} SIGNING)",
            "transition_withdrawals_of_payouts",
            {"payout_ids": [payout], "notes": ["signed"], "from_status": "SIGNING", "to_status": "SIGNED"},
            signing_setup,
        ),
        ("validating_withdrawals", "validating_withdrawals", {"chain": chain, "limit": 2000}),
        ("note_withdrawals", "note_withdrawals", {"ids": some, "note": "waiting"}),
        ("reservations", "reservations", {"chain": chain}),
        ("planned_payouts", "planned_payouts", {"chain": chain, "sender": sender, "limit": 200}),
        ("planned_exists", "planned_exists", {"chain": chain, "sender": sender}),
        ("payout_members", "payout_members", {"ids": payouts}),
        ("payout_members (200 payouts)", "payout_members", {"ids": many}),
        ("live_withdrawals_of_payouts", "live_withdrawals_of_payouts", {"ids": payouts}),
        ("approval_in_flight", "approval_in_flight", {"chain": chain, "sender": sender, "asset": "USDT"}),
        ("highest_live_nonce", "highest_live_nonce", {"chain": chain, "sender": sender}),
        ("signed_payouts", "signed_payouts", {"chain": chain, "sender": sender, "limit": 500}),
        ("signed_exists", "signed_exists", {"chain": chain, "sender": sender}),
        ("recent_send_seconds", "recent_send_seconds", {"chain": chain}),
        ("watched_payouts", "watched_payouts", {"chain": chain}),
        ("attempts_of_payouts", "attempts_of_payouts", {"ids": payouts}),
        ("chain_work", "chain_work", {"chain": chain, "stale": "5 seconds"}),
    ]


SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")
INDEX = re.compile(r"(?:Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)? (?:using |on )(\w+)")
EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")
BUFFERS = re.compile(r"Buffers: shared((?: \w+=\d+)+)")
ACTUAL = re.compile(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=(\d+)")
REMOVED = re.compile(r"Rows Removed by (?:Filter|Index Recheck): (\d+)")


def withdrawals_read(plan: str) -> int:
    """Rows the plan's scans of `withdrawals` read: returned plus filtered out, times loops."""
    total, loops = 0, 0
    for line in plan.splitlines():
        if "->" in line or "Scan" in line:
            loops = 0  # a new node; only a scan of withdrawals counts
        if "Scan" in line and " on withdrawals" in line and (m := ACTUAL.search(line)):
            loops = int(m.group(2))
            total += int(m.group(1)) * loops
        elif loops and (m := REMOVED.search(line)):
            total += int(m.group(1)) * loops
    return total


PARAM = re.compile(r"%\((\w+)\)s")


def positional(text: str) -> tuple[str, list[str]]:
    """The query with $1, $2 ... in place of %(name)s, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return PARAM.sub(number, text), names


def explain(url: str, label: str, name: str, params: dict[str, Any], setup: Setup | None = None) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one named query, custom and generic plan, each after `setup`
    in the same transaction, rolled back."""
    out: dict[str, Any] = {"label": label, "in_flight": bool(setup)}
    try:
        text = query(name)
    except KeyError as exc:  # sql/queries.sql changed: report it, plan the others
        return out | {"custom": f"error: {exc}", "generic": f"error: {exc}"}
    with psycopg.connect(url) as conn:
        cur = psycopg.ClientCursor(conn)
        try:
            with conn.transaction(force_rollback=True):
                for statement, args in setup or []:
                    cur.execute(statement, args)  # type: ignore[arg-type]
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, params)  # type: ignore[arg-type]
                out["custom"] = "\n".join(r[0] for r in cur.fetchall())
        except psycopg.Error as exc:
            out["custom"] = f"error: {exc}"
        statement, names = positional(text)
        try:
            with conn.transaction(force_rollback=True):
                for setup_statement, args in setup or []:
                    cur.execute(setup_statement, args)  # type: ignore[arg-type]
                cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cur.execute("PREPARE bench_generic AS " + statement)  # type: ignore[arg-type]
                placeholders = ", ".join(["%s"] * len(names))
                execute = f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_generic({placeholders})" if names else ""
                cur.execute(execute or "EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_generic", [params[n] for n in names])  # type: ignore[arg-type]
                out["generic"] = "\n".join(r[0] for r in cur.fetchall())
        except psycopg.Error as exc:
            out["generic"] = f"error: {str(exc).splitlines()[0]}"
        finally:
            conn.rollback()
            conn.execute("DEALLOCATE ALL")
    return out


def summarize(plan: str) -> dict[str, Any]:
    buffers = {"hit": 0, "read": 0}
    for match in BUFFERS.finditer(plan.split("Planning", 1)[0][:400]):
        for part in match.group(1).split():
            key, _, value = part.partition("=")
            if key in buffers:
                buffers[key] = int(value)
        break  # the top node's buffers cover the whole plan
    execution = EXECUTION.search(plan)
    return {
        "seq": sorted(set(SEQ_SCAN.findall(plan))),
        "indexes": sorted(set(INDEX.findall(plan))),
        "ms": float(execution.group(1)) if execution else None,
        "buffers": buffers,
        "withdrawals_read": withdrawals_read(plan),
        "error": plan.startswith("error"),
    }


# ------------------------------------------------------------------------------------------------
# One size


def ingest(api_url: str, key: str, seconds: int) -> dict[str, float] | None:
    if shutil.which("wrk") is None:
        return None
    return run_wrk(api_url, "/v1/withdrawals", key, 100, seconds, f"growth-{time.time_ns()}")


def cancel_client_rows(url: str, client_id: str) -> None:
    """Cancel what the ingest run made (still PENDING: no worker ran) and drop its validate jobs, so
    the end-to-end runs start clean. Cancelling is a legal transition; deleting would cost a scan
    of payout_items per row for its foreign key (see the report)."""
    time.sleep(2)  # requests wrk cut off at its deadline may still be committing
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(
            "UPDATE withdrawals SET status = 'CANCELED', status_note = 'bench: ingest only' "
            "WHERE client_id = %s AND status = 'PENDING'",
            (client_id,),
        )
        conn.execute("DELETE FROM procrastinate_jobs WHERE status = 'todo' AND task_name = 'validate'")


def measure_size(
    size: int, url: str, procs: Processes, env: dict[str, str], api_url: str, stack: e2e.Stack, args: argparse.Namespace
) -> dict[str, Any]:
    settings = e2e.Settings(timeout=args.timeout)
    history_client, history_key = args.history
    sender = stack.chain.hot_wallets[0][1]
    plans = []
    if size > 0:
        with connect(url) as conn:
            queries = hot_queries(conn, size, history_client, history_key, sender)
        plans = [explain(url, label, name, params, *setup) for label, name, params, *setup in queries]
    row: dict[str, Any] = {"size": size, "plans": plans, "tables": table_sizes(url)}
    ingest_client, ingest_key = new_client(url, f"ingest-{size}")
    row["ingest"] = ingest(api_url, ingest_key, args.duration)
    cancel_client_rows(url, ingest_client)
    start_workers(procs, env, settings.workers, settings.concurrency)
    try:
        e2e.warm_up(stack, settings)
        row["e2e"] = []
        for rate in args.rates:
            label = f"growth-{size}-{rate:g}-{int(time.time())}"
            result = e2e.run_phase(stack, settings, args.count, rate, label) | {"chain": "1s-300M"}
            row["e2e"].append(result)
            print("\n".join(e2e.results_table([result])[2:]), flush=True)
    finally:
        procs.stop_kind("worker")
    return row


# ------------------------------------------------------------------------------------------------
# Report


def report(rows: list[dict[str, Any]], fills: list[tuple[int, float]], note: str) -> str:
    lines = [
        f"Growth, {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{note}.",
        "History: CONFIRMED withdrawals (8 events each, a quarter paid alone, the rest in batches of 100) "
        "bulk-inserted with generate_series, with the USER triggers of `withdrawals` disabled during the fill "
        "(inside its transaction); then VACUUM ANALYZE and a CHECKPOINT (the fill's writes on disk before measuring).",
        "Ingest: wrk, 100 connections, API alone. End-to-end: 1 s blocks / 300M gas, as bench/e2e.py.",
        "",
        "| history withdrawals | fill s | withdrawals / events size | ingest req/s | ingest p50 / p95 / p99 ms "
        "| e2e offered/s | confirmed/s | request→inclusion p50 / p95 s | request→CONFIRMED p50 / p95 s "
        "| postgres CPU ms / withdrawal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fill_seconds = dict(fills)
    for row in rows:
        tables = row["tables"]
        size_text = f"{tables['withdrawals'][1] / 2**20:,.0f} / {tables['withdrawal_events'][1] / 2**20:,.0f} MB"
        ing = row.get("ingest")
        ingest_cells = f"{ing['rps']:,.0f} | {ing['p50']:.1f} / {ing['p95']:.1f} / {ing['p99']:.1f}" if ing else "- | -"
        for n, result in enumerate(row.get("e2e", [])):
            first = n == 0
            inc = result.get("inclusion") or {}
            con = result.get("confirmation") or {}
            pg = result["cpu"].get("postgres", 0.0) * 1000 / max(result["count"], 1)
            lines.append(
                (
                    f"| {row['size']:,} | {fill_seconds.get(row['size'], 0):.0f} | {size_text} | {ingest_cells} "
                    if first
                    else "| | | | | "
                )
                + f"| {result['offered_rate']:,.0f} | {result.get('confirmed_per_s', 0):,.0f} "
                f"| {inc.get(50, 0):.1f} / {inc.get(95, 0):.1f} | {con.get(50, 0):.1f} / {con.get(95, 0):.1f} "
                f"| {pg:.2f} |"
            )
    lines += ["", *plan_summary(rows), "", *plan_details(rows)]
    return "\n".join(lines) + "\n"


def plan_summary(rows: list[dict[str, Any]]) -> list[str]:
    rows = [row for row in rows if row["plans"]]
    if not rows:
        return []
    sizes = [row["size"] for row in rows]
    lines = [
        "Hot queries: execution ms (custom plan) and indexes used; **Seq Scan** on a big table is flagged "
        f"({', '.join(BIG_TABLES)}). `generic` is the plan a prepared statement uses after 5 runs. "
        f"The status changes are planned with {IN_FLIGHT:,} withdrawals put in flight after the statistics "
        "were taken (rolled back afterwards); one that reads more than twice the withdrawals it moves is flagged.",
        "",
        "| query | " + " | ".join(f"{s:,} rows: ms / buffers" for s in sizes) + " | indexes (largest size) | flags |",
        "|---|" + "---|" * len(sizes) + "---|---|",
    ]
    labels = [p["label"] for p in rows[0]["plans"]]
    for i, label in enumerate(labels):
        cells = []
        flags: list[str] = []
        for row in rows:
            plan = row["plans"][i]
            custom = summarize(plan["custom"])
            generic = summarize(plan.get("generic", ""))
            ms = f"{custom['ms']:.2f}" if custom["ms"] is not None else "error"
            cells.append(f"{ms} / {custom['buffers']['hit'] + custom['buffers']['read']}")
            for kind, s in (("custom", custom), ("generic", generic)):
                big = [t for t in s["seq"] if t in BIG_TABLES]
                if big:
                    flags.append(f"**Seq Scan** on {', '.join(big)} ({kind}, {row['size']:,})")
                if s["error"]:
                    flags.append(f"{kind} plan not shown")
                if plan.get("in_flight") and s["withdrawals_read"] > 2 * MOVED:
                    # The rows to move are known by id: a plan that reads many more found them by status.
                    flags.append(
                        f"**reads {s['withdrawals_read']:,} withdrawals to move {MOVED}** ({kind}, {row['size']:,})"
                    )
        last = summarize(rows[-1]["plans"][i]["custom"])
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {', '.join(last['indexes']) or '-'} "
            f"| {'; '.join(dict.fromkeys(flags)) or 'ok'} |"
        )
    return lines


def plan_details(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if not row["plans"]:
            continue
        lines += [f"<details><summary>Plans with {row['size']:,} history withdrawals</summary>", ""]
        for plan in row["plans"]:
            lines += [f"#### {plan['label']}", "", "```", plan["custom"], "```", ""]
            if plan.get("generic") and summarize(plan["generic"])["seq"] != summarize(plan["custom"])["seq"]:
                lines += ["generic plan:", "", "```", plan["generic"], "```", ""]
        lines += ["</details>", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.growth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="history sizes, comma-separated")
    parser.add_argument("--count", type=int, default=2_000, help="withdrawals per end-to-end run (default 2,000)")
    parser.add_argument("--rates", default="100,1000", help="end-to-end offered rates per second")
    parser.add_argument("--duration", type=int, default=10, help="seconds of ingest per size")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per end-to-end run before giving up")
    parser.add_argument("--quick", action="store_true", help="sizes 10,000 and 100,000; 500 withdrawals per run")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database for inspection")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.count, args.duration = "10000,100000", 500, 5
    sizes = [0] + [int(s) for s in args.sizes.split(",")]
    if any(s % PER_PAYOUT for s in sizes) or sizes != sorted(sizes):
        raise SystemExit(f"sizes must grow and be multiples of {PER_PAYOUT}")
    args.rates = [float(r) for r in args.rates.split(",")]
    log_dir = (REPO_ROOT / "bench/results/logs/growth").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.iterdir():
        old.unlink()

    rows: list[dict[str, Any]] = []
    fills: list[tuple[int, float]] = []
    with terminate_on_sigterm():
        procs = Processes(log_dir)
        blocks: BlockMeter | None = None
        try:
            url = scratch_database(DATABASE)
            args.history = new_client(url, "history")
            chain = start_chain(procs, block_time=1.0, gas_limit=300_000_000, wallet_count=16, existing_count=500)
            register_wallets(url, chain)
            chains_file = log_dir / "chains.toml"
            chains_file.write_text(chains_toml(chain, confirmations=2, max_in_flight=e2e.Settings.max_in_flight))
            env = service_env(url, chain, chains_file)
            api_url = start_api(procs, env)
            blocks = BlockMeter(chain.rpc_url)
            blocks.start()
            stack = e2e.Stack(procs, url, DATABASE, chain, api_url, blocks, log_dir)
            have = 0
            for size in sizes:
                if size > have:
                    print(f"filling the history up to {size:,} withdrawals", flush=True)
                    seconds = fill(url, args.history[0], have, size, chain_batch_contract())
                    fills.append((size, seconds))
                    print(f"  {seconds:.0f} s", flush=True)
                    have = size
                rows.append(measure_size(size, url, procs, env, api_url, stack, args))
        finally:
            if blocks is not None:
                blocks.stop()
            procs.stop_all()
            if not args.keep_db:
                drop_database(DATABASE)
    text = report(rows, fills, " (quick run)" if args.quick else "")
    print(text.split("<details>")[0])
    if args.out:
        args.out.write_text(text)
    return 0


def chain_batch_contract() -> str:
    from jobs.batchcontract import batch_contract_address

    return batch_contract_address()


if __name__ == "__main__":
    sys.exit(main())
