"""The signer's bytes and hashes are eth-account's, for both kinds of transaction the engine signs."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.keys import dev_account
from jobs.txbuild import Signer, sign

UINT256 = st.integers(0, 2**256 - 1)
ACCOUNTS = st.integers(0, 9).map(dev_account)
COMMON = {
    "chainId": st.integers(1, 2**64 - 1),
    "nonce": st.integers(0, 2**64 - 2),
    "to": st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    "value": UINT256,
    "data": st.binary(max_size=600),
    "gas": st.integers(0, 2**63),
}
EIP1559 = st.fixed_dictionaries(COMMON | {"type": st.just(2), "maxFeePerGas": UINT256, "maxPriorityFeePerGas": UINT256})
LEGACY = st.fixed_dictionaries(COMMON | {"gasPrice": UINT256})


def reference(account: LocalAccount, fields: dict[str, Any]) -> tuple[bytes, str]:
    """eth-account's signature (it takes `to` as bytes or checksummed; the signed bytes are the same)."""
    signed = Account.sign_transaction(fields | {"to": bytes.fromhex(fields["to"][2:])}, account.key)
    return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()


@settings(max_examples=300, deadline=None)
@given(account=ACCOUNTS, fields=st.one_of(EIP1559, LEGACY))
def test_the_signed_bytes_are_eth_accounts(account: LocalAccount, fields: dict[str, Any]) -> None:
    tx = sign(account, fields)
    assert (tx.raw, tx.tx_hash) == reference(account, fields)
    assert Account.recover_transaction(tx.raw) == account.address


def test_one_signer_signs_many_and_checksummed_addresses_sign_alike() -> None:
    account = dev_account(3)
    signer = Signer(account)
    to = dev_account(4).address
    base = {"chainId": 137, "to": to, "value": 10**18, "data": b"", "gas": 21_000}
    for nonce in range(5):
        fields = base | {"nonce": nonce, "type": 2, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 30 * 10**9}
        assert signer.sign(fields) == signer.sign(fields | {"to": to.lower()})
        assert (signer.sign(fields).raw, signer.sign(fields).tx_hash) == reference(account, fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nonce": -1}, "nonce must be an integer in uint256 range"),
        ({"value": 2**256}, "value must be an integer in uint256 range"),
        ({"gas": True}, "gas must be an integer"),
        ({"value": "1"}, "value must be an integer"),
        ({"to": "0x1234"}, "to must be a 0x-prefixed 20-byte address"),
        ({"to": None}, "to must be a 0x-prefixed 20-byte address"),
        ({"to": "0x" + "zz" * 20}, "to must be a 0x-prefixed 20-byte address"),
        ({"chainId": 0}, "chainId must be positive"),
        ({"accessList": []}, "unsupported transaction fields: accessList"),
        ({"data": "0x"}, "data must be bytes"),
        ({"gasPrice": 1}, "not gasPrice"),
        ({"type": 1}, "unsupported transaction type 1"),
        ({"maxFeePerGas": None}, "maxFeePerGas must be an integer"),
    ],
)
def test_bad_fields_are_refused(change: dict[str, Any], message: str) -> None:
    fields = {
        "chainId": 1,
        "nonce": 0,
        "to": dev_account(4).address,
        "value": 1,
        "data": b"",
        "gas": 21_000,
        "type": 2,
        "maxFeePerGas": 2,
        "maxPriorityFeePerGas": 1,
    }
    with pytest.raises(ValueError, match=message):
        sign(dev_account(3), fields | change)


def test_a_legacy_transaction_is_refused_what_it_would_not_sign() -> None:
    fields = {"chainId": 1, "nonce": 0, "to": dev_account(4).address, "value": 1, "data": b"", "gas": 21_000}
    with pytest.raises(ValueError, match="unsupported transaction type 1"):
        sign(dev_account(3), fields | {"gasPrice": 1, "type": 1})
    with pytest.raises(ValueError, match="not gasPrice"):
        sign(dev_account(3), fields | {"gasPrice": 1, "maxPriorityFeePerGas": 1})
    with pytest.raises(ValueError, match="missing transaction fields: maxFeePerGas"):
        sign(dev_account(3), fields | {"maxPriorityFeePerGas": 1})
    with pytest.raises(ValueError, match="missing transaction fields: gasPrice, nonce"):
        sign(dev_account(3), {k: v for k, v in fields.items() if k != "nonce"})
    assert sign(dev_account(3), fields | {"gasPrice": 1, "type": 0}) == sign(dev_account(3), fields | {"gasPrice": 1})
