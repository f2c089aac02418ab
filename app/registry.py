"""The chain registry: which chains and assets exist, loaded from one TOML file (`chains.toml`)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.addresses import AddressError, parse_address
from app.amounts import AmountError, parse_units

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY_FILE = REPO_ROOT / "chains.toml"
FEE_MODELS = ("eip1559", "legacy")
GWEI_DECIMALS = 9


class RegistryError(ValueError):
    """The chain registry file is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Asset:
    symbol: str
    decimals: int
    min_units: int
    max_units: int
    address: str | None = None  # None for the chain's native coin
    enabled: bool = True

    @property
    def is_native(self) -> bool:
        return self.address is None


@dataclass(frozen=True)
class Chain:
    name: str
    chain_id: int
    enabled: bool
    rpc_urls: tuple[str, ...]
    confirmations: int
    block_time_seconds: float
    fee_model: str
    max_fee_per_gas: int  # wei
    max_priority_fee_per_gas: int  # wei
    native: Asset
    tokens: Mapping[str, Asset] = field(default_factory=dict)
    # Transactions a hot wallet may have on their way at once (each is a nonce in its lane).
    max_in_flight_per_wallet: int = 16
    # A transaction not mined this long after its broadcast is sent again or replaced.
    stuck_after_seconds: float = 30.0
    # What a reverted payout does: "fail" its withdrawals, or "repay" them in a new transaction.
    revert_policy: str = "fail"
    # Our batch-payout contract on this chain (None: every withdrawal is its own transaction).
    batch_contract: str | None = None
    # Most withdrawals in one batch, the share of the block gas limit a batch may take, and how
    # long a withdrawal may wait for others to fill its batch.
    batch_max: int = 100
    batch_gas_share: float = 0.5
    batch_wait_seconds: float = 1.0
    # How often the account manager reads hot-wallet balances and tops them up (jobs/accounts.py).
    account_check_seconds: int = 15
    # Gas station: a hot wallet keeps native coin for at least this many token transfers.
    gas_station_transfers: int = 50

    def asset(self, symbol: str) -> Asset | None:
        if symbol == self.native.symbol:
            return self.native
        return self.tokens.get(symbol)

    @property
    def assets(self) -> list[Asset]:
        return [self.native, *self.tokens.values()]


@dataclass(frozen=True)
class Registry:
    chains: Mapping[str, Chain]

    def get(self, name: str) -> Chain | None:
        return self.chains.get(name)

    @property
    def enabled(self) -> list[Chain]:
        return [c for c in self.chains.values() if c.enabled]


def redact_url(url: str) -> str:
    """scheme://host[:port] only: paths and query strings of RPC URLs often carry API keys."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def env_name(chain: str) -> str:
    return chain.upper().replace("-", "_")


def load_registry(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Registry:
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("PAYOUTS_CHAINS_FILE") or DEFAULT_REGISTRY_FILE)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the chain registry: {exc}") from exc
    chains_raw = raw.get("chains")
    if not isinstance(chains_raw, dict) or not chains_raw:
        raise RegistryError(f"{path}: no [chains.<name>] tables")

    enabled_override = environ.get("PAYOUTS_ENABLED_CHAINS")
    enabled_names = None
    if enabled_override is not None:
        enabled_names = {n.strip() for n in enabled_override.split(",") if n.strip()}
        unknown = enabled_names - set(chains_raw)
        if unknown:
            raise RegistryError(f"PAYOUTS_ENABLED_CHAINS names unknown chains: {sorted(unknown)}")

    chains: dict[str, Chain] = {}
    seen_ids: dict[int, str] = {}
    for name, table in chains_raw.items():
        chain = _parse_chain(path, name, table, environ)
        if enabled_names is not None:
            chain = replace(chain, enabled=name in enabled_names)
        if chain.chain_id in seen_ids:
            raise RegistryError(f"{path}: chains {seen_ids[chain.chain_id]} and {name} share chain_id {chain.chain_id}")
        seen_ids[chain.chain_id] = name
        chains[name] = chain
    return Registry(chains=chains)


def _parse_chain(path: Path, name: str, t: Any, environ: Mapping[str, str]) -> Chain:
    where = f"{path}: chains.{name}"
    if not isinstance(t, dict):
        raise RegistryError(f"{where}: must be a table")

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in t:
            raise RegistryError(f"{where}.{key} is missing")
        value = t[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise RegistryError(f"{where}.{key} has the wrong type")
        return value

    rpc_urls = tuple(need("rpc_urls", list))
    override = environ.get(f"PAYOUTS_RPC_URLS_{env_name(name)}")
    if override:
        rpc_urls = tuple(u.strip() for u in override.split(",") if u.strip())
    if not rpc_urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in rpc_urls):
        raise RegistryError(f"{where}.rpc_urls must be one or more http(s) URLs")

    fee_model = need("fee_model", str)
    if fee_model not in FEE_MODELS:
        raise RegistryError(f"{where}.fee_model must be one of {FEE_MODELS}")
    confirmations = need("confirmations", int)
    if confirmations < 1:
        raise RegistryError(f"{where}.confirmations must be at least 1")
    block_time = need("block_time_seconds", (int, float))
    if block_time <= 0:
        raise RegistryError(f"{where}.block_time_seconds must be positive")

    native_raw = need("native", dict)
    native = _parse_asset(f"{where}.native", native_raw.get("symbol"), native_raw, native=True)
    tokens_raw = t.get("tokens", {})
    if not isinstance(tokens_raw, dict):
        raise RegistryError(f"{where}.tokens must be a table of tokens by symbol")
    tokens: dict[str, Asset] = {}
    for symbol, token_raw in tokens_raw.items():
        asset = _parse_asset(f"{where}.tokens.{symbol}", symbol, token_raw, native=False)
        if symbol == native.symbol:
            raise RegistryError(f"{where}.tokens.{symbol} has the native coin's symbol")
        tokens[symbol] = asset

    max_in_flight = t.get("max_in_flight_per_wallet", 16)
    if not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool) or not 1 <= max_in_flight <= 1024:
        raise RegistryError(f"{where}.max_in_flight_per_wallet must be an integer from 1 to 1024")
    stuck_after = t.get("stuck_after_seconds", max(3 * float(block_time), 3.0))
    if not isinstance(stuck_after, int | float) or isinstance(stuck_after, bool) or stuck_after <= 0:
        raise RegistryError(f"{where}.stuck_after_seconds must be a positive number")
    revert_policy = t.get("revert_policy", "fail")
    if revert_policy not in ("fail", "repay"):
        raise RegistryError(f"{where}.revert_policy must be 'fail' or 'repay'")

    batch_contract = t.get("batch_contract")
    if batch_contract is not None:
        try:
            batch_contract = parse_address(str(batch_contract))
        except AddressError as exc:
            raise RegistryError(f"{where}.batch_contract: {exc}") from exc
    batch_max = t.get("batch_max", 100)
    if not isinstance(batch_max, int) or isinstance(batch_max, bool) or not 1 <= batch_max <= 1000:
        raise RegistryError(f"{where}.batch_max must be an integer from 1 to 1000")
    batch_gas_share = t.get("batch_gas_share", 0.5)
    if not isinstance(batch_gas_share, int | float) or not 0 < batch_gas_share <= 1:
        raise RegistryError(f"{where}.batch_gas_share must be a number in (0, 1]")
    # Waiting for a batch to fill costs latency: by default at most half a block, and 1 s.
    batch_wait = t.get("batch_wait_seconds", min(1.0, float(block_time) / 2))
    if not isinstance(batch_wait, int | float) or isinstance(batch_wait, bool) or batch_wait < 0:
        raise RegistryError(f"{where}.batch_wait_seconds must be a number >= 0")

    account_check = t.get("account_check_seconds", 15)
    if not isinstance(account_check, int) or isinstance(account_check, bool) or not 1 <= account_check <= 3600:
        raise RegistryError(f"{where}.account_check_seconds must be an integer from 1 to 3600")
    gas_station = t.get("gas_station_transfers", 50)
    if not isinstance(gas_station, int) or isinstance(gas_station, bool) or not 0 <= gas_station <= 100_000:
        raise RegistryError(f"{where}.gas_station_transfers must be an integer from 0 to 100000")

    return Chain(
        name=name,
        chain_id=need("chain_id", int),
        enabled=need("enabled", bool),
        rpc_urls=rpc_urls,
        confirmations=confirmations,
        block_time_seconds=float(block_time),
        fee_model=fee_model,
        max_fee_per_gas=_gwei(where, "max_fee_per_gas_gwei", need("max_fee_per_gas_gwei", str)),
        max_priority_fee_per_gas=_gwei(
            where, "max_priority_fee_per_gas_gwei", need("max_priority_fee_per_gas_gwei", str)
        ),
        native=native,
        tokens=tokens,
        max_in_flight_per_wallet=max_in_flight,
        stuck_after_seconds=float(stuck_after),
        revert_policy=revert_policy,
        batch_contract=batch_contract,
        batch_max=batch_max,
        batch_gas_share=float(batch_gas_share),
        batch_wait_seconds=float(batch_wait),
        account_check_seconds=account_check,
        gas_station_transfers=gas_station,
    )


def _gwei(where: str, key: str, text: str) -> int:
    try:
        return parse_units(text, GWEI_DECIMALS)
    except AmountError as exc:
        raise RegistryError(f"{where}.{key}: {exc}") from exc


def _parse_asset(where: str, symbol: Any, t: Any, *, native: bool) -> Asset:
    if not isinstance(t, dict):
        raise RegistryError(f"{where} must be a table")
    if not isinstance(symbol, str) or not symbol.isalnum() or len(symbol) > 16:
        raise RegistryError(f"{where}: symbol must be 1-16 letters or digits")
    decimals = t.get("decimals")
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 36:
        raise RegistryError(f"{where}.decimals must be an integer from 0 to 36")
    try:
        min_units = parse_units(str(t.get("min", "")), decimals)
        max_units = parse_units(str(t.get("max", "")), decimals)
    except AmountError as exc:
        raise RegistryError(f"{where}: min/max: {exc}") from exc
    if not 0 < min_units <= max_units:
        raise RegistryError(f"{where}: need 0 < min <= max")
    address = None
    if not native:
        try:
            address = parse_address(str(t.get("address", "")))
        except AddressError as exc:
            raise RegistryError(f"{where}.address: {exc}") from exc
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RegistryError(f"{where}.enabled must be true or false")
    return Asset(
        symbol=symbol,
        decimals=decimals,
        min_units=min_units,
        max_units=max_units,
        address=address,
        enabled=enabled,
    )
