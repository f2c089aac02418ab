"""Business rules for a new withdrawal: chain, asset, recipient and amount."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

from app.addresses import AddressError, parse_address
from app.amounts import DECIMAL_PATTERN, AmountError, format_units, parse_units
from app.errors import ApiError
from app.registry import Asset, Chain, Registry
from app.schemas import CreateWithdrawal


@dataclass(frozen=True)
class ValidOrder:
    chain: Chain
    asset: Asset
    to: str
    amount: int


def invalid(code: str, detail: str, field: str) -> ApiError:
    return ApiError(422, code, detail, errors=[{"field": field, "code": code, "message": detail}])


def _json_string(value: str | None) -> str:
    # What json.dumps writes for a string (ASCII, escaped) or None: one C call, where
    # json.dumps(..., separators=(",", ":")) of the list sets up an encoder each time.
    return "null" if value is None else encode_basestring_ascii(value)


def request_hash(body: CreateWithdrawal) -> bytes:
    """A fingerprint of what was asked, equal for requests that mean the same thing.

    Computed from the request alone (not the registry), so that a retried request can be matched to
    its withdrawal even after the registry changed.
    """
    amount = body.amount
    if DECIMAL_PATTERN.fullmatch(amount) and "." in amount:
        amount = amount.rstrip("0").rstrip(".")
    canonical = [body.chain, body.asset, body.to.lower(), amount, body.reference]
    # The text of json.dumps(canonical, separators=(",", ":")): stored fingerprints match it.
    return hashlib.sha256(f"[{','.join(map(_json_string, canonical))}]".encode()).digest()


def validate_order(registry: Registry, body: CreateWithdrawal) -> ValidOrder:
    chain = registry.get(body.chain)
    if chain is None:
        raise invalid("chain_unknown", f"unknown chain {body.chain!r}; known: {sorted(registry.chains)}", "chain")
    if not chain.enabled:
        raise invalid("chain_disabled", f"chain {chain.name!r} is not enabled on this system", "chain")
    asset = chain.asset(body.asset)
    if asset is None:
        symbols = [a.symbol for a in chain.assets]
        raise invalid("asset_unknown", f"asset {body.asset!r} is not paid on {chain.name}; known: {symbols}", "asset")
    if not asset.enabled:
        raise invalid("asset_disabled", f"asset {asset.symbol!r} is not enabled on {chain.name}", "asset")

    try:
        to = parse_address(body.to)
    except AddressError as exc:
        raise invalid(exc.code, str(exc), "to") from None
    if any(to == token.address for token in chain.tokens.values()):
        raise invalid("address_is_token_contract", "the recipient is a token contract; funds sent there are lost", "to")

    try:
        amount = parse_units(body.amount, asset.decimals)
    except AmountError as exc:
        raise invalid(exc.code, str(exc), "amount") from None
    if amount == 0:
        raise invalid("amount_not_positive", "amount must be greater than zero", "amount")
    if amount < asset.min_units:
        minimum = format_units(asset.min_units, asset.decimals)
        raise invalid(
            "amount_below_minimum", f"the minimum {asset.symbol} withdrawal on {chain.name} is {minimum}", "amount"
        )
    if amount > asset.max_units:
        maximum = format_units(asset.max_units, asset.decimals)
        raise invalid(
            "amount_above_maximum", f"the maximum {asset.symbol} withdrawal on {chain.name} is {maximum}", "amount"
        )
    return ValidOrder(chain=chain, asset=asset, to=to, amount=amount)
