"""Transactions as the engine builds them: payloads, fields and signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

# keccak("transfer(address,uint256)")[:4]
ERC20_TRANSFER = bytes.fromhex("a9059cbb")
NATIVE_TRANSFER_GAS = 21_000


def erc20_transfer_data(to: str, amount: int) -> bytes:
    """ABI-encoded transfer(to, amount)."""
    if not 0 <= amount < 2**256:
        raise ValueError("amount out of uint256 range")
    return ERC20_TRANSFER + bytes(12) + bytes.fromhex(to[2:]) + amount.to_bytes(32, "big")


@dataclass(frozen=True)
class Payload:
    """What a transaction does, apart from its nonce and fees: replacements reuse it unchanged."""

    to: str
    value: int
    data: bytes


def tx_fields(*, chain_id: int, nonce: int, payload: Payload, gas: int, fee_fields: dict[str, int]) -> dict[str, Any]:
    return {
        "chainId": chain_id,
        "nonce": nonce,
        "to": payload.to,
        "value": payload.value,
        "data": payload.data,
        "gas": gas,
        **fee_fields,
    }


@dataclass(frozen=True)
class SignedTx:
    raw: bytes
    tx_hash: str


def sign(account: LocalAccount, fields: dict[str, Any]) -> SignedTx:
    signed = Account.sign_transaction(fields, account.key)
    return SignedTx(raw=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex())
