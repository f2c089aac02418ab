"""Our batch-payout contract (jobs/contracts/BatchPayout.vy): its address, deployment and calls.

It is deployed through the deterministic deployment proxy with CREATE2 and a zero salt, so it has
the same address on every chain where that proxy exists (anvil ships it at genesis).

    .venv/bin/python -m jobs.batchcontract     # prints the address of the committed bytecode
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache
from typing import Any

import httpx
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from app.registry import redact_url
from jobs.contracts.build import load_artifact
from jobs.rpc import _redact_httpx_logs  # httpx logs full URLs at INFO

CONTRACT_NAME = "BatchPayout"
CREATE2_DEPLOYER = "0x4e59b44847b379578588920cA78FbF26c0B4956C"
SALT = bytes(32)
# The standard ERC-20 approve(address,uint256); the same on every token, USDT included.
APPROVE = keccak(text="approve(address,uint256)")[:4]
RECEIPT_POLL_SECONDS = 0.2
NO_CODE = ("0x", "0x0", None)


def _selector(name: str) -> tuple[bytes, list[str]]:
    """The 4-byte selector and argument types of function `name` in the committed ABI."""
    [entry] = [e for e in load_artifact(CONTRACT_NAME)["abi"] if e["type"] == "function" and e["name"] == name]
    types = [arg["type"] for arg in entry["inputs"]]
    return keccak(text=f"{name}({','.join(types)})")[:4], types


PAY_NATIVE, PAY_NATIVE_TYPES = _selector("pay_native")
PAY_TOKEN, PAY_TOKEN_TYPES = _selector("pay_token")


@cache
def init_code() -> bytes:
    """The committed creation bytecode (jobs/contracts/build/BatchPayout.json)."""
    return bytes.fromhex(load_artifact(CONTRACT_NAME)["bytecode"].removeprefix("0x"))


@cache
def runtime_code() -> bytes:
    return bytes.fromhex(load_artifact("BatchPayout")["bytecode_runtime"].removeprefix("0x"))


def is_our_contract(code_hex: str | None) -> bool:
    """Whether code read from a chain is exactly our batch contract's runtime code."""
    return bool(code_hex) and bytes.fromhex(str(code_hex).removeprefix("0x")) == runtime_code()


@cache
def batch_contract_address() -> str:
    """keccak(0xff ++ deployer ++ salt ++ keccak(init_code))[12:], checksummed."""
    digest = keccak(b"\xff" + bytes.fromhex(CREATE2_DEPLOYER[2:]) + SALT + keccak(init_code()))
    return to_checksum_address(digest[12:])


def _check_lengths(recipients: Sequence[str], amounts: Sequence[int]) -> None:
    if len(recipients) != len(amounts):
        raise ValueError(f"{len(recipients)} recipients but {len(amounts)} amounts")


def pay_native_data(recipients: Sequence[str], amounts: Sequence[int]) -> bytes:
    """Calldata of pay_native(recipients, amounts); send it with value = sum(amounts)."""
    _check_lengths(recipients, amounts)
    return PAY_NATIVE + encode(PAY_NATIVE_TYPES, [list(recipients), list(amounts)])


def pay_token_data(token: str, recipients: Sequence[str], amounts: Sequence[int]) -> bytes:
    """Calldata of pay_token(token, recipients, amounts); the sender must have approved the contract."""
    _check_lengths(recipients, amounts)
    return PAY_TOKEN + encode(PAY_TOKEN_TYPES, [token, list(recipients), list(amounts)])


def approve_data(spender: str, amount: int) -> bytes:
    """Calldata of the ERC-20 approve(spender, amount)."""
    return APPROVE + encode(["address", "uint256"], [spender, amount])


def _rpc(http: httpx.Client, url: str, method: str, params: list[Any]) -> Any:
    """One JSON-RPC call. Errors name the host only: RPC URLs often carry API keys."""
    where = redact_url(url)
    try:
        response = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{where} {method}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise RuntimeError(f"{where} {method}: HTTP {response.status_code}")
    try:
        reply = response.json()
    except ValueError:
        raise RuntimeError(f"{where} {method}: the answer is not JSON") from None
    if not isinstance(reply, dict):
        raise RuntimeError(f"{where} {method}: unexpected answer")
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        raise RuntimeError(f"{where} {method}: {error.get('message', 'error')}")
    return reply.get("result")


def deploy_batch_contract(rpc_url: str, deployer_key: bytes, timeout: float = 30.0) -> str:
    """Deploy the contract at its deterministic address unless it is there already; returns the address.

    The deployer key only pays the gas: the contract has no owner, so the key gains nothing over it.
    """
    address = batch_contract_address()
    _redact_httpx_logs()
    # Proxies from the environment are opt-in, as in jobs/rpc.py: URLs with API keys must not leak.
    with httpx.Client(timeout=30.0, trust_env=False) as http:

        def call(method: str, *params: Any) -> Any:
            return _rpc(http, rpc_url, method, list(params))

        if call("eth_getCode", address, "latest") not in NO_CODE:
            return address
        if call("eth_getCode", CREATE2_DEPLOYER, "latest") in NO_CODE:
            raise RuntimeError(f"no deterministic deployment proxy at {CREATE2_DEPLOYER} on this chain")
        account = Account.from_key(deployer_key)
        data = "0x" + (SALT + init_code()).hex()
        estimate = int(call("eth_estimateGas", {"from": account.address, "to": CREATE2_DEPLOYER, "data": data}), 16)
        gas_price = int(call("eth_gasPrice"), 16)
        tip = min(10**9, gas_price)
        signed = Account.sign_transaction(
            {
                "chainId": int(call("eth_chainId"), 16),
                "nonce": int(call("eth_getTransactionCount", account.address, "pending"), 16),
                "to": CREATE2_DEPLOYER,
                "value": 0,
                "data": data,
                "gas": estimate * 5 // 4,
                "maxFeePerGas": 2 * gas_price + tip,
                "maxPriorityFeePerGas": tip,
            },
            deployer_key,
        )
        tx_hash = call("eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
        deadline = time.monotonic() + timeout
        while (receipt := call("eth_getTransactionReceipt", tx_hash)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the batch contract deployment {tx_hash} was not mined in {timeout}s")
            time.sleep(RECEIPT_POLL_SECONDS)
        if receipt.get("status") != "0x1":
            raise RuntimeError(f"the batch contract deployment {tx_hash} reverted")
        if call("eth_getCode", address, "latest") in NO_CODE:
            raise RuntimeError(f"the deployment {tx_hash} left no code at {address}")
    return address


if __name__ == "__main__":
    print(batch_contract_address())
