"""Account manager: keep hot wallets funded from the main account, and say when it runs low.

Every `account_check_seconds` (registry) and chain, one check:
1. reads the top-ups on their way and what the last 24 hours of top-ups took (database first,
   balances second: a top-up mined in between is then counted twice, never missed);
2. reads the native and token balances of the main account and every hot wallet;
3. per asset with a rule, tops every hot wallet whose free balance (balance minus what its
   withdrawals in flight will spend) is under the rule's threshold back up to the target, in one
   transaction from the main account (a batch through our batch contract when there are several),
   within the daily limit and what the main account can spare, lowest wallet first;
4. raises an alert when the main account is under its alert level or could not cover a top-up,
   and when the daily limit held a top-up back (jobs/alerts.py: log, metric, webhook).

A top-up is a payout of kind 'topup' with one `topups` row per wallet: it is signed, broadcast,
bumped, reorg-checked and confirmed by the same steps as withdrawals, and settles with its
transaction (a trigger on payouts). A partial unique index allows one top-up on its way per
wallet and asset, and one check per chain runs at a time (an advisory lock): a worker killed
anywhere in a top-up cannot cause a second one.

Gas station: on a chain with a token rule, the native threshold of every hot wallet is at least
the gas of `gas_station_transfers` token transfers at current fees (the target twice that), so
wallets that pay tokens keep coin for their gas. It needs a native rule (its daily limit bounds it).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.amounts import format_units
from app.registry import Asset, Chain
from db.queries import query
from jobs import context
from jobs.alerts import AlertSink, clear_alert, raise_alert
from jobs.fees import Fees, suggest_fees
from jobs.plan import TOKEN_TRANSFER_GAS_RESERVE, batch_contract_verified, insert_payment, read_balances
from jobs.queue import PRIORITY, enqueue, queue
from jobs.retry import backoff
from jobs.rpc import RpcClient
from jobs.sign import with_margin

log = logging.getLogger("payouts.jobs.accounts")

# Gas a top-up transaction may take, to check the main account can pay it (the signer estimates
# the real figure): a plain transfer, or a batch call's base plus a share per wallet.
SINGLE_GAS = {"native": 21_000, "token": TOKEN_TRANSFER_GAS_RESERVE}
BATCH_GAS = {"native": (40_000, 12_000), "token": (50_000, 32_000)}


@dataclass(frozen=True)
class Rule:
    asset: Asset
    threshold: int
    target: int
    daily_limit: int
    main_alert_below: int


@dataclass(frozen=True)
class TopUp:
    wallet: str
    amount: int
    balance_before: int


@dataclass
class CheckResult:
    checked: bool = False
    topups: dict[str, list[TopUp]] = field(default_factory=dict)  # asset symbol -> top-ups planned
    alerts: dict[str, str] = field(default_factory=dict)  # key -> message of conditions that hold
    cleared: dict[str, str] = field(default_factory=dict)  # key -> message of conditions that ended


def gas_floor(chain: Chain, fees: Fees) -> int:
    """Native coin a hot wallet keeps for its token transfers (the gas station)."""
    return chain.gas_station_transfers * TOKEN_TRANSFER_GAS_RESERVE * fees.max_cost_per_gas()


def effective_rule(chain: Chain, rule: Rule, rules: dict[str, Rule], fees: Fees) -> Rule:
    if not rule.asset.is_native or not any(not r.asset.is_native for r in rules.values()):
        return rule
    floor = gas_floor(chain, fees)
    return replace(rule, threshold=max(rule.threshold, floor), target=max(rule.target, 2 * floor))


def tx_gas(asset: Asset, wallets: int, batched: bool) -> int:
    """The most gas the top-ups of `wallets` wallets may be given (with the signer's margin)."""
    kind = "native" if asset.is_native else "token"
    if not batched:
        return with_margin(SINGLE_GAS[kind]) * wallets
    base, per_wallet = BATCH_GAS[kind]
    return with_margin(base + per_wallet * wallets)


def choose_topups(
    rule: Rule,
    free: dict[str, int],
    in_flight: set[str],
    *,
    daily_left: int,
    main_spare: int,
) -> tuple[list[TopUp], int, int]:
    """The top-ups of one asset: wallets under the threshold (none on its way), lowest first, each
    up to the target, within the daily limit and the main account's spare balance.

    Returns (top-ups, amount held back by the daily limit, amount held back by the main balance).
    """
    low = sorted(
        (balance, wallet) for wallet, balance in free.items() if balance < rule.threshold and wallet not in in_flight
    )
    chosen: list[TopUp] = []
    limited = short = 0
    for balance, wallet in low:
        need = rule.target - max(balance, 0)
        amount = min(need, daily_left, main_spare)
        if amount < need:
            if daily_left <= main_spare:
                limited += need - amount
            else:
                short += need - amount
        if amount <= 0:
            continue
        chosen.append(TopUp(wallet=wallet, amount=amount, balance_before=balance))
        daily_left -= amount
        main_spare -= amount
    return chosen, limited, short


async def check_chain(pool: AsyncConnectionPool, rpc: RpcClient, chain: Chain) -> CheckResult:
    """One account check of a chain; a no-op when another worker is running one."""
    result = CheckResult()
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(query("try_lock_accounts"), {"chain": chain.name})
        row = await cur.fetchone()
        if not row or not row["locked"]:  # type: ignore[call-overload]
            return result
        await _check(conn, rpc, chain, result)
    return result


async def _check(conn: AsyncConnection, rpc: RpcClient, chain: Chain, result: CheckResult) -> None:
    cur = await conn.execute(query("topup_rules_of_chain"), {"chain": chain.name})
    rules: dict[str, Rule] = {}
    for r in await cur.fetchall():
        asset = chain.asset(r["asset"])  # type: ignore[call-overload]
        if asset is None:
            log.warning("top-up rule for %s on %s: the asset is not in the registry; ignored", r["asset"], chain.name)  # type: ignore[call-overload]
            continue
        rules[asset.symbol] = Rule(
            asset=asset,
            threshold=int(r["threshold"]),  # type: ignore[call-overload]
            target=int(r["target"]),  # type: ignore[call-overload]
            daily_limit=int(r["daily_limit"]),  # type: ignore[call-overload]
            main_alert_below=int(r["main_alert_below"]),  # type: ignore[call-overload]
        )
    if not rules:
        return
    cur = await conn.execute(query("chain_wallets"), {"chain": chain.name})
    wallets = await cur.fetchall()
    mains = [w["address"] for w in wallets if w["role"] == "main"]  # type: ignore[call-overload]
    hots = [w["address"] for w in wallets if w["role"] == "hot"]  # type: ignore[call-overload]
    if len(mains) != 1:
        result.alerts[f"main_account:{chain.name}"] = (
            f"{chain.name}: top-up rules are set but {len(mains)} main accounts are registered (need exactly one)"
        )
        return
    result.cleared[f"main_account:{chain.name}"] = f"{chain.name}: one main account is registered again"
    main = mains[0]

    # Database first, balances second (see the module's docstring).
    cur = await conn.execute(query("topups_in_flight"), {"chain": chain.name})
    in_flight: dict[str, set[str]] = {}
    main_reserved: dict[str, int] = {}
    for r in await cur.fetchall():
        in_flight.setdefault(r["asset"], set()).add(r["wallet"])  # type: ignore[call-overload]
        main_reserved[r["asset"]] = main_reserved.get(r["asset"], 0) + int(r["amount"])  # type: ignore[call-overload]
    cur = await conn.execute(query("topped_up_last_day"), {"chain": chain.name})
    spent = {r["asset"]: int(r["spent"]) for r in await cur.fetchall()}  # type: ignore[call-overload]
    cur = await conn.execute(query("reservations"), {"chain": chain.name})
    withdrawals_reserved: dict[tuple[str, str], int] = {
        (r["sender"], r["asset"]): int(r["reserved"])  # type: ignore[call-overload]
        for r in await cur.fetchall()
    }

    batching = chain.batch_contract is not None and await batch_contract_verified(rpc, chain)
    # Gas the main account's transactions on their way (top-ups, approvals) may still burn.
    most_gas = max(tx_gas(rule.asset, len(hots), batching) for rule in rules.values())
    cur = await conn.execute(
        query("unmined_gas_of_sender"), {"chain": chain.name, "sender": main, "default_gas": most_gas}
    )
    row = await cur.fetchone()
    main_unmined_gas = int(row["gas"]) if row else 0  # type: ignore[call-overload]

    fees = await suggest_fees(rpc, chain)
    assets = [chain.native, *(a for a in chain.tokens.values() if a.symbol in rules)]
    balances = await read_balances(rpc, [main, *hots], assets)
    result.checked = True
    rows = [(address, symbol, balance) for address, held in balances.items() for symbol, balance in held.items()]
    await conn.execute(
        query("save_wallet_balances"),
        {
            "chain": chain.name,
            "addresses": [a for a, _, _ in rows],
            "assets": [s for _, s, _ in rows],
            "balances": [b for _, _, b in rows],
        },
    )

    cost_per_gas = fees.max_cost_per_gas()
    main_native_spare = (
        balances[main][chain.native.symbol]
        - main_reserved.get(chain.native.symbol, 0)
        - main_unmined_gas * cost_per_gas
    )
    # Tokens first: their gas comes out of the native balance that native top-ups would use.
    for symbol in sorted(rules, key=lambda s: rules[s].asset.is_native):
        rule = effective_rule(chain, rules[symbol], rules, fees)
        asset = rule.asset
        main_balance = balances[main][symbol]
        low_key = f"main_low:{chain.name}:{symbol}"
        if main_balance < rule.main_alert_below:
            result.alerts[low_key] = (
                f"{chain.name}: the main account {main} holds {format_units(main_balance, asset.decimals)} "
                f"{symbol}, under its alert level of {format_units(rule.main_alert_below, asset.decimals)}"
            )
        else:
            result.cleared[low_key] = f"{chain.name}: the main account holds enough {symbol} again"
        free = {w: balances[w][symbol] - withdrawals_reserved.get((w, symbol), 0) for w in hots}
        spare = main_native_spare if asset.is_native else main_balance - main_reserved.get(symbol, 0)
        # Keep gas for the top-up transaction itself.
        gas_cost = tx_gas(asset, len(hots), batching) * cost_per_gas
        if asset.is_native:
            spare -= gas_cost
        chosen, limited, short = choose_topups(
            rule,
            free,
            in_flight.get(symbol, set()),
            daily_left=max(rule.daily_limit - spent.get(symbol, 0), 0),
            main_spare=max(spare, 0),
        )
        limit_key = f"topup_limit:{chain.name}:{symbol}"
        if limited:
            result.alerts[limit_key] = (
                f"{chain.name}: the daily top-up limit of {format_units(rule.daily_limit, asset.decimals)} {symbol} "
                f"held back {format_units(limited, asset.decimals)} {symbol} of top-ups"
            )
        else:
            result.cleared[limit_key] = f"{chain.name}: {symbol} top-ups are within the daily limit again"
        short_key = f"main_short:{chain.name}:{symbol}"
        if short or (chosen and not asset.is_native and main_native_spare < gas_cost):
            result.alerts[short_key] = (
                f"{chain.name}: the main account {main} cannot cover the {symbol} top-ups "
                f"({format_units(short, asset.decimals)} {symbol} short, or no coin for the gas)"
            )
            if not asset.is_native and main_native_spare < gas_cost:
                chosen = []
        else:
            result.cleared[short_key] = f"{chain.name}: the main account covers the {symbol} top-ups again"
        if not chosen:
            continue
        main_native_spare -= gas_cost + (sum(t.amount for t in chosen) if asset.is_native else 0)
        await insert_topups(conn, chain, main, asset, chosen, batched=batching)
        result.topups[symbol] = chosen
    if result.topups:
        await enqueue(conn, "sign", chain=chain.name, sender=main)


async def insert_topups(
    conn: AsyncConnection, chain: Chain, main: str, asset: Asset, chosen: list[TopUp], *, batched: bool
) -> list[uuid.UUID]:
    """One transaction for all of them when batching is possible, else one per wallet."""
    groups = [chosen] if batched and len(chosen) > 1 else [[t] for t in chosen]
    payout_ids = []
    batch_chain = chain if batched else replace(chain, batch_contract=None)
    for group in groups:
        wallets, amounts = [t.wallet for t in group], [t.amount for t in group]
        payout_id = await insert_payment(conn, batch_chain, main, "topup", asset, wallets, amounts)
        await conn.execute(
            query("insert_topups"),
            {
                "payout_id": payout_id,
                "chain": chain.name,
                "asset": asset.symbol,
                "wallets": wallets,
                "amounts": amounts,
                "balances_before": [t.balance_before for t in group],
            },
        )
        log.info(
            "top-up on %s: %s %s to %s",
            chain.name,
            " + ".join(format_units(t.amount, asset.decimals) for t in group),
            asset.symbol,
            ", ".join(t.wallet for t in group),
        )
        payout_ids.append(payout_id)
    return payout_ids


async def report(pool: AsyncConnectionPool, sink: AlertSink, result: CheckResult) -> None:
    for key, message in result.alerts.items():
        await raise_alert(pool, sink, key, message)
    for key, message in result.cleared.items():
        await clear_alert(pool, key, message)


@queue.task(name="accounts", queue="accounts", priority=PRIORITY["accounts"], retry=backoff(3))
async def accounts_task(chain: str) -> int:
    """Check a chain's hot wallets and the main account; returns how many top-ups were planned."""
    settings = context.settings()
    pool = context.pool()
    result = await check_chain(pool, context.rpc(chain), context.chain(chain))
    await report(pool, AlertSink(settings.alert_webhook_url, settings.alert_interval_seconds), result)
    return sum(len(t) for t in result.topups.values())
