"""Transactions as the engine builds them: payloads, fields and signatures."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import coincurve
import rlp
from eth_account.signers.local import LocalAccount
from sha3 import keccak_256

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


UINT256 = 2**256


def _uint(fields: dict[str, Any], name: str) -> int:
    value = fields[name]
    if type(value) is not int or not 0 <= value < UINT256:
        raise ValueError(f"transaction field {name} must be an integer in uint256 range, got {value!r}")
    return value


ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _address(value: Any) -> bytes:
    if not isinstance(value, str) or not ADDRESS.fullmatch(value):
        raise ValueError(f"transaction field to must be a 0x-prefixed 20-byte address, got {value!r}")
    return bytes.fromhex(value[2:])


COMMON_FIELDS = {"chainId", "nonce", "to", "value", "data", "gas"}
EIP1559_FIELDS = COMMON_FIELDS | {"maxFeePerGas", "maxPriorityFeePerGas"}
LEGACY_FIELDS = COMMON_FIELDS | {"gasPrice"}


class Signer:
    """Signs transactions of one account: EIP-1559 (type 2) when the fields carry maxFeePerGas,
    legacy with EIP-155 replay protection when they carry gasPrice.

    The bytes are those eth-account's sign_transaction gives for the same fields (deterministic
    RFC 6979 signatures; tests/unit/test_txbuild.py compares them), made without its validation
    layers and its key derivation on every call: 470-590 us per transaction there, about 130 here.
    """

    def __init__(self, account: LocalAccount) -> None:
        self.address = account.address
        self._key = coincurve.PrivateKey(bytes(account.key))

    def sign(self, fields: dict[str, Any]) -> SignedTx:
        eip1559 = "maxFeePerGas" in fields or "maxPriorityFeePerGas" in fields
        if eip1559 and "gasPrice" in fields:
            raise ValueError("an EIP-1559 transaction takes maxFeePerGas and maxPriorityFeePerGas, not gasPrice")
        wanted, kind = (EIP1559_FIELDS, 2) if eip1559 else (LEGACY_FIELDS, 0)
        if fields.get("type", kind) != kind:
            raise ValueError(f"unsupported transaction type {fields['type']!r} with these fee fields")
        missing, unknown = wanted - set(fields), set(fields) - wanted - {"type"}
        if missing:
            raise ValueError(f"missing transaction fields: {', '.join(sorted(missing))}")
        if unknown:  # an access list, say, would otherwise be left out of what is signed
            raise ValueError(f"unsupported transaction fields: {', '.join(sorted(unknown))}")
        data = fields["data"]
        if not isinstance(data, bytes):
            raise ValueError("transaction field data must be bytes")
        chain_id, nonce, gas, value = (_uint(fields, name) for name in ("chainId", "nonce", "gas", "value"))
        to = _address(fields["to"])
        if chain_id == 0:
            raise ValueError("transaction field chainId must be positive")
        if eip1559:
            tip, cap = _uint(fields, "maxPriorityFeePerGas"), _uint(fields, "maxFeePerGas")
            body = [chain_id, nonce, tip, cap, gas, to, value, data, []]  # [] = no access list
            y, r, s = self._signature(keccak_256(b"\x02" + rlp.encode(body)).digest())
            raw = b"\x02" + rlp.encode([*body, y, r, s])
        else:
            body = [nonce, _uint(fields, "gasPrice"), gas, to, value, data]
            y, r, s = self._signature(keccak_256(rlp.encode([*body, chain_id, 0, 0])).digest())
            raw = rlp.encode([*body, chain_id * 2 + 35 + y, r, s])
        return SignedTx(raw=raw, tx_hash="0x" + keccak_256(raw).hexdigest())

    def _signature(self, digest: bytes) -> tuple[int, int, int]:
        """(y parity, r, s) of a low-s secp256k1 signature of `digest` (libsecp256k1 gives low s)."""
        sig = self._key.sign_recoverable(digest, hasher=None)
        return sig[64], int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")


def sign(account: LocalAccount, fields: dict[str, Any]) -> SignedTx:
    """One transaction of `account` (Signer, for several)."""
    return Signer(account).sign(fields)
