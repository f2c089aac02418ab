"""Operator commands: `payouts <command>` (DATABASE_URL from the environment).

payouts migrate                              apply database migrations
payouts clients create NAME                  new API client; prints its first key once
payouts keys create NAME                     another key for a client; printed once
payouts keys revoke NAME                     revoke every key of a client
payouts wallets add CHAIN ADDRESS --role hot|main [--key-ref REF]
payouts wallets create CHAIN --role hot|main  new wallet, key made and sealed in the vault; prints the address
payouts wallets import CHAIN --role hot|main  seal a key read from stdin into the vault; prints the address
payouts wallets list                         wallets and where their keys are (never the keys)
payouts keys rotate-master [--rewrap-only]   new vault master key; re-wraps every data key under it
payouts jobs failed [--limit N]              dead letters: jobs that failed their last try
payouts jobs retry ID                        queue a failed job again
payouts jobs stats                           jobs per queue and status
payouts contract address                     the batch-payout contract's address (every chain)
payouts contract deploy CHAIN                deploy it; the paying key is read from stdin
payouts accounts rule set CHAIN ASSET --threshold X --target Y --daily-limit Z [--alert-below W]
                                             what hot wallets keep (whole units of the asset)
payouts accounts rule list|delete            the top-up rules
payouts accounts show [--chain C] [--history N]
                                             balances against thresholds, and the latest top-ups
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from app.addresses import AddressError, parse_address
from app.amounts import AmountError, format_units, parse_units
from app.registry import Asset, Chain, Registry, load_registry, redact_url
from app.settings import Settings, SettingsError
from db import clients, wallets
from db.engine import psycopg_url
from db.queries import query
from jobs import vault
from jobs.keyproviders import MasterKeyProvider, ProviderError, provider_from_settings
from jobs.keys import custody_check

REPO_ROOT = Path(__file__).resolve().parent.parent


class CommandError(Exception):
    """A command that cannot do what was asked; the message says why."""


def alembic_config(database_url: str) -> Any:
    """The project's Alembic configuration (alembic.ini) for `database_url` (an alembic Config)."""
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def migrate(database_url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def connect(settings: Settings) -> psycopg.Connection[Any]:  # rows are dicts (dict_row)
    return psycopg.connect(psycopg_url(settings.database_url.reveal()), row_factory=dict_row)


def cmd_clients_create(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        if clients.find_client(conn, args.name) is not None:
            raise CommandError(f"a client named {args.name!r} exists; use `payouts keys create {args.name}`")
        client_id = clients.create_client(conn, args.name)
        key = clients.create_key(conn, client_id)
    print(f"client {args.name} ({client_id})", file=sys.stderr)
    print("API key (shown only now; store it in your secret manager):", file=sys.stderr)
    print(key)


def _client(conn: psycopg.Connection, name: str):  # type: ignore[no-untyped-def]
    client_id = clients.find_client(conn, name)
    if client_id is None:
        raise CommandError(f"no client named {name!r}")
    return client_id


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        key = clients.create_key(conn, _client(conn, args.name))
    print("API key (shown only now):", file=sys.stderr)
    print(key)


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        count = clients.revoke_keys(conn, _client(conn, args.name))
    print(f"revoked {count} key(s) of {args.name}")


def cmd_wallets_add(settings: Settings, args: argparse.Namespace) -> None:
    if load_registry().get(args.chain) is None:
        raise CommandError(f"unknown chain {args.chain!r}")
    try:
        address = parse_address(args.address)
    except AddressError as exc:
        raise CommandError(f"{args.address}: {exc}") from None
    with connect(settings) as conn:
        wallets.upsert_wallet(conn, args.chain, address, args.role, args.key_ref)
    print(f"{args.role} wallet {address} on {args.chain}")


def key_scheme(row: dict[str, Any]) -> str:
    """Where a wallet's key is, for people: the scheme and the master key, never the key."""
    scheme = (row["key_ref"] or "").partition(":")[0]
    if not scheme:
        return "no key"
    if scheme == "vault":
        return f"vault ({row['provider']} {row['master_key_id']})" if row["provider"] else "vault (missing!)"
    return scheme


def cmd_wallets_list(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        for row in conn.execute(query("list_wallets_with_keys")).fetchall():
            disabled = "" if row["enabled"] else "  (disabled)"
            print(f"{row['chain']:<18} {row['role']:<5} {row['address']}  {key_scheme(row)}{disabled}")


def read_private_key(prompt: str) -> bytes:
    """A 32-byte hex private key from standard input (hidden when typed), never from arguments."""
    line = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()
    key = line.strip().removeprefix("0x")
    if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
        raise CommandError("expected a 32-byte hex private key on standard input (it is never taken from arguments)")
    return bytes.fromhex(key)


def vault_provider(settings: Settings, *, create_local: bool) -> MasterKeyProvider:
    custody_check(settings)
    local_file = settings.custody.local_master_key_file
    made = settings.custody.provider == "local" and create_local and not local_file.exists()
    provider = provider_from_settings(settings.custody, create_local=create_local)
    if made:
        print(f"made a local master key file {local_file} (development only)", file=sys.stderr)
    return provider


def store_wallet_key(settings: Settings, chain: str, role: str, private_key: bytes) -> str:
    from eth_account import Account

    if load_registry().get(chain) is None:
        raise CommandError(f"unknown chain {chain!r}")
    address = Account.from_key(private_key).address
    provider = vault_provider(settings, create_local=settings.environment != "production")
    with connect(settings) as conn:
        vault.store_new_key(conn, provider, chain, address, role, private_key)
    print(f"{role} wallet on {chain}, key sealed in the vault ({provider.name}):", file=sys.stderr)
    return address


def cmd_wallets_create(settings: Settings, args: argparse.Namespace) -> None:
    from eth_account import Account

    print(store_wallet_key(settings, args.chain, args.role, bytes(Account.create().key)))


def cmd_wallets_import(settings: Settings, args: argparse.Namespace) -> None:
    from eth_account import Account

    private_key = read_private_key("private key (hex, hidden): ")
    try:
        Account.from_key(private_key)
    except Exception:  # zero, or not below the curve order; the library's message is not needed
        raise CommandError("that is not a valid secp256k1 private key") from None
    print(store_wallet_key(settings, args.chain, args.role, private_key))


def cmd_keys_rotate_master(settings: Settings, args: argparse.Namespace) -> None:
    provider = vault_provider(settings, create_local=False)

    def progress(done: int, total: int) -> None:
        print(f"re-wrapped {done}/{total}", file=sys.stderr, flush=True)

    # Autocommit: each key is re-wrapped in its own short transaction (jobs/vault.py rewrap_all).
    with psycopg.connect(psycopg_url(settings.database_url.reveal()), autocommit=True, row_factory=dict_row) as conn:
        if not args.rewrap_only:
            # Two master keys at most: an unfinished rotation is finished before a new key is made
            # (Secrets Manager may drop a version that lost its AWSCURRENT/AWSPREVIOUS label).
            current = provider.current_key_id()
            behind = [r for r in conn.execute(query("wallet_keys_by_master_key")) if r["master_key_id"] != current]
            if behind:
                raise CommandError(
                    f"{sum(r['keys'] for r in behind)} key(s) are not under the current master key yet: "
                    "finish the last rotation first with `payouts keys rotate-master --rewrap-only`"
                )
            print(f"new master key {provider.rotate()} is now current", file=sys.stderr)
        target = provider.current_key_id()
        count = vault.rewrap_all(conn, provider, progress)
        left = [r for r in conn.execute(query("wallet_keys_by_master_key")).fetchall() if r["master_key_id"] != target]
    print(f"{count} data key(s) re-wrapped under {target}")
    if left:
        raise CommandError(f"{sum(r['keys'] for r in left)} key(s) are still under an old master key; run again")
    print(
        "every key is under the new master key; retire the old one once workers have dropped their "
        "cached data keys (PAYOUTS_DATA_KEY_CACHE_SECONDS)",
        file=sys.stderr,
    )


# procrastinate stores no exception text: a failed job keeps its status, attempts and a 'failed'
# event with its time. The error and traceback are in the worker's log, on the line
# "Job <task>[<id>](...) ended with status: Error".
FAILED_HELP = (
    "list jobs that failed their last try (dead letters): id, queue, task, attempts, when the "
    "last try failed, and the job's arguments as JSON. procrastinate does not store the "
    "exception: find it in the worker log by searching for '<task>[<id>]'."
)
RETRY_HELP = (
    "queue a failed job again, now, with procrastinate's own retry function; "
    "refuses (exit 2) a job that does not exist or is not failed"
)
JOB_STATUSES = ("todo", "doing", "failed", "succeeded", "cancelled", "aborted")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def utc(when: datetime | None) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds") if when else "-"


def cmd_jobs_failed(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        rows = conn.execute(query("jobs_failed"), {"limit": args.limit}).fetchall()
    if not rows:
        print("no failed jobs", file=sys.stderr)
        return
    print(f"{'id':>8}  {'queue':<10} {'task':<10} {'attempts':>8}  {'failed at (UTC)':<25} args")
    for r in rows:
        print(
            f"{r['id']:>8}  {r['queue_name']:<10} {r['task_name']:<10} {r['attempts']:>8}  "
            f"{utc(r['failed_at']):<25} {json.dumps(r['args'], sort_keys=True)}"
        )
    example = f"{rows[0]['task_name']}[{rows[0]['id']}]"
    print(
        "the error of each job is in the worker log (procrastinate does not store it): "
        f"search for '<task>[<id>]', e.g. '{example}'",
        file=sys.stderr,
    )


def cmd_jobs_retry(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        job = conn.execute(query("jobs_lock_one"), {"id": args.id}).fetchone()
        if job is None:
            raise CommandError(f"no job with id {args.id}")
        if job["status"] != "failed":
            raise CommandError(
                f"job {args.id} ({job['task_name']}) is {job['status']}, not failed; only failed jobs are retried"
            )
        lock = job["queueing_lock"]
        if lock is not None:
            waiting = conn.execute(query("jobs_waiting_with_queueing_lock"), {"queueing_lock": lock}).fetchone()
            if waiting is not None:
                raise CommandError(
                    f"job {args.id} was not queued again: job {waiting['id']} with the same "
                    f"queueing lock {lock!r} is already waiting and will do the same work"
                )
        try:
            conn.execute(query("jobs_retry"), {"id": args.id})
        except psycopg.errors.UniqueViolation:
            raise CommandError(
                f"job {args.id} was not queued again: a job with the same queueing lock "
                f"{lock!r} was queued meanwhile and will do the same work"
            ) from None
    print(f"job {args.id} ({job['task_name']}) queued again")


def cmd_jobs_stats(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        rows = conn.execute(query("jobs_counts")).fetchall()
    counts: dict[str, dict[str, int]] = {}
    stalled: dict[str, int] = {}
    for r in rows:
        counts.setdefault(r["queue_name"], {})[r["status"]] = r["jobs"]
        stalled[r["queue_name"]] = stalled.get(r["queue_name"], 0) + r["stalled"]
    print(f"{'queue':<10}" + "".join(f"{s:>11}" for s in JOB_STATUSES) + f"{'stalled':>11}")
    for queue_name in sorted(counts):
        cells = "".join(f"{counts[queue_name].get(s, 0):>11}" for s in JOB_STATUSES)
        print(f"{queue_name:<10}{cells}{stalled[queue_name]:>11}")
    if any(stalled.values()):
        print(
            "stalled: doing, but the worker is gone or silent for over 30 s; nothing will finish "
            "those rows (the tick queues their work again)",
            file=sys.stderr,
        )


def cmd_contract_address(settings: Settings | None, args: argparse.Namespace) -> None:
    from jobs.batchcontract import batch_contract_address

    print(batch_contract_address())


def cmd_contract_deploy(settings: Settings | None, args: argparse.Namespace) -> None:
    """Deploy the batch contract on a chain, paying gas with a key read from standard input."""
    from jobs.batchcontract import deploy_batch_contract

    chain = load_registry().get(args.chain)
    if chain is None:
        raise CommandError(f"unknown chain {args.chain!r}")
    key = read_private_key("paying key (hex, hidden): ")
    errors = []
    for url in chain.rpc_urls:
        try:
            address = deploy_batch_contract(url, key)
        except (RuntimeError, httpx.HTTPError) as exc:
            errors.append(f"{redact_url(url)}: {type(exc).__name__}: {exc}")
            continue
        print(f"batch contract on {chain.name}: {address}")
        if chain.batch_contract != address:
            print(f'set batch_contract = "{address}" for {chain.name} in chains.toml to turn batching on')
        return
    raise CommandError("deployment failed on every RPC URL: " + "; ".join(errors))


def rule_asset(chain_name: str, symbol: str) -> tuple[Chain, Asset]:
    chain = load_registry().get(chain_name)
    if chain is None:
        raise CommandError(f"unknown chain {chain_name!r}")
    asset = chain.asset(symbol)
    if asset is None:
        raise CommandError(f"{chain_name} has no asset {symbol!r} (it has {', '.join(a.symbol for a in chain.assets)})")
    return chain, asset


def whole_units(registry: Registry, chain: str, symbol: str, units: Any) -> str:
    """Base units as a decimal string of the asset (base units when the registry lost the asset)."""
    if units is None:
        return "-"
    c = registry.get(chain)
    asset = c.asset(symbol) if c else None
    return format_units(int(units), asset.decimals) if asset else str(units)


def cmd_accounts_rule_set(settings: Settings, args: argparse.Namespace) -> None:
    chain, asset = rule_asset(args.chain, args.asset)
    units = {}
    for name in ("threshold", "target", "daily_limit", "alert_below"):
        text = getattr(args, name)
        try:
            units[name] = parse_units(text, asset.decimals)
        except AmountError as exc:
            raise CommandError(f"--{name.replace('_', '-')} {text}: {exc}") from None
    if units["target"] <= units["threshold"]:
        raise CommandError("--target must be above --threshold (a wallet under the threshold is filled to the target)")
    if units["daily_limit"] < units["target"] - units["threshold"]:
        print(
            "note: the daily limit is below one top-up (target - threshold): top-ups will be partial",
            file=sys.stderr,
        )
    with connect(settings) as conn:
        conn.execute(
            query("upsert_topup_rule"),
            {
                "chain": args.chain,
                "asset": asset.symbol,
                "threshold": units["threshold"],
                "target": units["target"],
                "daily_limit": units["daily_limit"],
                "main_alert_below": units["alert_below"],
            },
        )
        symbols = {r["asset"] for r in conn.execute(query("list_topup_rules")) if r["chain"] == args.chain}
    print(
        f"{args.chain} {asset.symbol}: hot wallets under {args.threshold} are topped up to {args.target}, "
        f"at most {args.daily_limit} a day; the main account alerts under {args.alert_below}"
    )
    if not asset.is_native and chain.native.symbol not in symbols:
        print(
            f"note: token hot wallets need {chain.native.symbol} for gas: set a {chain.native.symbol} rule too "
            f"(its threshold is raised to cover {chain.gas_station_transfers} token transfers)",
            file=sys.stderr,
        )


def cmd_accounts_rule_list(settings: Settings, args: argparse.Namespace) -> None:
    registry = load_registry()
    with connect(settings) as conn:
        rows = conn.execute(query("list_topup_rules")).fetchall()
    if not rows:
        print("no top-up rules (set one with `payouts accounts rule set`)")
    for r in rows:

        def units(v: Any, r: dict[str, Any] = r) -> str:
            return whole_units(registry, r["chain"], r["asset"], v)

        print(
            f"{r['chain']:<12} {r['asset']:<6} threshold {units(r['threshold'])}  target {units(r['target'])}  "
            f"daily limit {units(r['daily_limit'])}  main alert under {units(r['main_alert_below'])}"
        )


def cmd_accounts_rule_delete(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        gone = conn.execute(query("delete_topup_rule"), {"chain": args.chain, "asset": args.asset}).fetchone()
    if gone is None:
        raise CommandError(f"no top-up rule for {args.asset} on {args.chain}")
    print(f"{args.chain} {args.asset}: no more top-ups")


def cmd_accounts_show(settings: Settings, args: argparse.Namespace) -> None:
    registry = load_registry()

    def units(chain: str, symbol: str, v: Any) -> str:
        return whole_units(registry, chain, symbol, v)

    with connect(settings) as conn:
        rows = conn.execute(query("accounts_overview"), {"chain": args.chain}).fetchall()
        history = conn.execute(query("topup_history"), {"chain": args.chain, "limit": args.history}).fetchall()
    if not rows:
        print("no balances read yet: workers read them every account_check_seconds once a rule is set")
    else:
        print(f"{'chain':<12} {'role':<5} {'address':<42} {'asset':<6} {'balance':>22} {'threshold':>14} state")
    for r in rows:
        c, a = r["chain"], r["asset"]
        if r["threshold"] is None:
            state = "no rule"
        elif r["role"] == "main":
            state = "LOW" if int(r["balance"]) < int(r["main_alert_below"]) else "ok"
        else:
            state = "LOW" if int(r["balance"]) < int(r["threshold"]) else "ok"
        limit = r["main_alert_below"] if r["role"] == "main" else r["threshold"]
        print(
            f"{c:<12} {r['role']:<5} {r['address']:<42} {a:<6} {units(c, a, r['balance']):>22} "
            f"{units(c, a, limit):>14} {state}  (read {r['checked_at']:%Y-%m-%d %H:%M:%S})"
        )
    print()
    print("latest top-ups:" if history else "no top-ups yet")
    for t in history:
        c, a = t["chain"], t["asset"]
        print(
            f"{t['created_at']:%Y-%m-%d %H:%M:%S} {c:<12} {a:<6} {t['wallet']} +{units(c, a, t['amount'])} "
            f"(had {units(c, a, t['balance_before'])}) {t['status']} {t['tx_hash'] or ''} {t['note'] or ''}".rstrip()
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payouts", description="Payouts operator commands")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(
        func=lambda s, a: migrate(s.database_url.reveal())
    )
    c = sub.add_parser("clients", help="API clients").add_subparsers(dest="action", required=True)
    cc = c.add_parser("create", help="create a client and its first API key")
    cc.add_argument("name")
    cc.set_defaults(func=cmd_clients_create)
    k = sub.add_parser("keys", help="API keys; and the wallet-key vault's master key").add_subparsers(
        dest="action", required=True
    )
    kc = k.add_parser("create", help="another key for a client")
    kc.add_argument("name")
    kc.set_defaults(func=cmd_keys_create)
    kr = k.add_parser("revoke", help="revoke every key of a client")
    kr.add_argument("name")
    kr.set_defaults(func=cmd_keys_revoke)
    km = k.add_parser(
        "rotate-master",
        help="wallet-key vault: make a new master key current and re-wrap every data key under it",
        description="Payouts keep running meanwhile: each data key is re-wrapped in its own transaction. "
        "With aws-kms, create the new key in KMS, set PAYOUTS_KMS_KEY_ID to it and pass --rewrap-only.",
    )
    km.add_argument(
        "--rewrap-only",
        action="store_true",
        help="no new master key: re-wrap what is not yet under the current one (resume, or KMS)",
    )
    km.set_defaults(func=cmd_keys_rotate_master)
    w = sub.add_parser("wallets", help="our wallets").add_subparsers(dest="action", required=True)
    wa = w.add_parser("add", help="register a wallet on a chain")
    wa.add_argument("chain")
    wa.add_argument("address")
    wa.add_argument("--role", choices=["hot", "main"], required=True)
    wa.add_argument("--key-ref", help="where the signer finds the key (never the key itself)")
    wa.set_defaults(func=cmd_wallets_add)
    for action, func, helptext in (
        ("create", cmd_wallets_create, "new wallet: its key is made and sealed in the vault; prints the address"),
        ("import", cmd_wallets_import, "seal a key read from standard input into the vault; prints the address"),
    ):
        wc = w.add_parser(action, help=helptext, description=helptext)
        wc.add_argument("chain")
        wc.add_argument("--role", choices=["hot", "main"], required=True)
        wc.set_defaults(func=func)
    w.add_parser("list", help="list wallets and where their keys are").set_defaults(func=cmd_wallets_list)
    j = sub.add_parser("jobs", help="the job queue: dead letters and counts").add_subparsers(
        dest="action", required=True
    )
    jf = j.add_parser("failed", help=FAILED_HELP, description=FAILED_HELP)
    jf.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="at most N jobs, newest first (default 50)",
    )
    jf.set_defaults(func=cmd_jobs_failed)
    jr = j.add_parser("retry", help=RETRY_HELP, description=RETRY_HELP)
    jr.add_argument("id", type=positive_int, help="the job id, as `payouts jobs failed` shows it")
    jr.set_defaults(func=cmd_jobs_retry)
    j.add_parser("stats", help="jobs per queue and status").set_defaults(func=cmd_jobs_stats)
    k2 = sub.add_parser("contract", help="the batch-payout contract").add_subparsers(dest="action", required=True)
    k2.add_parser("address", help="its address (the same on every chain)").set_defaults(
        func=cmd_contract_address, needs_db=False
    )
    kd = k2.add_parser("deploy", help="deploy it on a chain; the paying key is read from standard input")
    kd.add_argument("chain")
    kd.set_defaults(func=cmd_contract_deploy, needs_db=False)
    a = sub.add_parser("accounts", help="the account manager: top-up rules, balances, top-ups").add_subparsers(
        dest="action", required=True
    )
    ar = a.add_parser("rule", help="what hot wallets keep, per chain and asset").add_subparsers(
        dest="rule_action", required=True
    )
    ars = ar.add_parser(
        "set",
        help="set a rule (amounts in whole units of the asset, e.g. 1.5)",
        description="A hot wallet under the threshold is topped up to the target from the main account, "
        "at most the daily limit in any 24 hours; the main account alerts under --alert-below.",
    )
    ars.add_argument("chain")
    ars.add_argument("asset")
    ars.add_argument("--threshold", required=True)
    ars.add_argument("--target", required=True)
    ars.add_argument("--daily-limit", required=True)
    ars.add_argument("--alert-below", default="0", help="the main account's alert level (default 0: none)")
    ars.set_defaults(func=cmd_accounts_rule_set)
    ar.add_parser("list", help="every rule").set_defaults(func=cmd_accounts_rule_list)
    ard = ar.add_parser("delete", help="stop topping up an asset on a chain")
    ard.add_argument("chain")
    ard.add_argument("asset")
    ard.set_defaults(func=cmd_accounts_rule_delete)
    ash = a.add_parser("show", help="balances against thresholds, and the latest top-ups")
    ash.add_argument("--chain", default=None)
    ash.add_argument("--history", type=positive_int, default=20, metavar="N", help="latest N top-ups (default 20)")
    ash.set_defaults(func=cmd_accounts_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(Settings.from_env() if getattr(args, "needs_db", True) else None, args)
    except (CommandError, SettingsError, ProviderError, vault.VaultError) as exc:
        print(f"payouts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
