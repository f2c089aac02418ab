"""Operator commands: `payouts <command>` (DATABASE_URL from the environment).

  payouts migrate                              apply database migrations
  payouts clients create NAME                  new API client; prints its first key once
  payouts keys create NAME                     another key for a client; printed once
  payouts keys revoke NAME                     revoke every key of a client
  payouts wallets add CHAIN ADDRESS --role hot|main [--key-ref REF]
  payouts wallets list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from app.addresses import AddressError, parse_address
from app.registry import load_registry
from app.settings import Settings, SettingsError
from db import clients, wallets
from db.engine import psycopg_url

REPO_ROOT = Path(__file__).resolve().parent.parent


class CommandError(Exception):
    """A command that cannot do what was asked; the message says why."""


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def connect(settings: Settings) -> psycopg.Connection:
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


def cmd_wallets_list(settings: Settings, args: argparse.Namespace) -> None:
    with connect(settings) as conn:
        for row in wallets.list_wallets(conn):
            print(f"{row['chain']:<18} {row['role']:<5} {row['address']}{'' if row['enabled'] else '  (disabled)'}")


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
    k = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kc = k.add_parser("create", help="another key for a client")
    kc.add_argument("name")
    kc.set_defaults(func=cmd_keys_create)
    kr = k.add_parser("revoke", help="revoke every key of a client")
    kr.add_argument("name")
    kr.set_defaults(func=cmd_keys_revoke)
    w = sub.add_parser("wallets", help="our wallets").add_subparsers(dest="action", required=True)
    wa = w.add_parser("add", help="register a wallet on a chain")
    wa.add_argument("chain")
    wa.add_argument("address")
    wa.add_argument("--role", choices=["hot", "main"], required=True)
    wa.add_argument("--key-ref", help="where the signer finds the key (never the key itself)")
    wa.set_defaults(func=cmd_wallets_add)
    w.add_parser("list", help="list wallets").set_defaults(func=cmd_wallets_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(Settings.from_env(), args)
    except (CommandError, SettingsError) as exc:
        print(f"payouts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
