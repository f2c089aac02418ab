"""Our batch-payout contract (jobs/contracts/BatchPayout.vy): its address, deployment and calls.

It is deployed through the deterministic deployment proxy with CREATE2 and a zero salt, so it has
the same address on every chain where that proxy exists (anvil ships it).
"""

from __future__ import annotations

import time
from functools import cache

import httpx
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from jobs.contracts.build import load_artifact

CREATE2_DEPLOYER = "0x4e59b44847b379578588920cA78FbF26c0B4956C"
SALT = bytes(32)
PAY_NATIVE = keccak(text="pay_native(address[],uint256[])")[:4]
PAY_TOKEN = keccak(text="pay_token(address,address[],uint256[])")[:4]
APPROVE = keccak(text="approve(address,uint256)")[:4]


@cache
def init_code() -> bytes:
    return bytes.fromhex(load_artifact("BatchPayout")["bytecode"].removeprefix("0x"))


@cache
def batch_contract_address() -> str:
    digest = keccak(b"\xff" + bytes.fromhex(CREATE2_DEPLOYER[2:]) + SALT + keccak(init_code()))
    return to_checksum_address(digest[12:])


def pay_native_data(recipients: list[str], amounts: list[int]) -> bytes:
    return PAY_NATIVE + encode(["address[]", "uint256[]"], [recipients, amounts])


def pay_token_data(token: str, recipients: list[str], amounts: list[int]) -> bytes:
    return PAY_TOKEN + encode(["address", "address[]", "uint256[]"], [token, recipients, amounts])


def approve_data(spender: str, amount: int) -> bytes:
    return APPROVE + encode(["address", "uint256"], [spender, amount])


def _rpc(url: str, method: str, params: list) -> object:  # type: ignore[type-arg]
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30).json()
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error'].get('message')}")
    return reply["result"]


def deploy_batch_contract(rpc_url: str, deployer_key: bytes, timeout: float = 30.0) -> str:
    """Deploy the contract at its deterministic address unless it is there already."""
    address = batch_contract_address()
    if _rpc(rpc_url, "eth_getCode", [address, "latest"]) not in ("0x", None):
        return address
    if _rpc(rpc_url, "eth_getCode", [CREATE2_DEPLOYER, "latest"]) in ("0x", None):
        raise RuntimeError(f"no deterministic deployment proxy at {CREATE2_DEPLOYER} on this chain")
    account = Account.from_key(deployer_key)
    chain_id = int(str(_rpc(rpc_url, "eth_chainId", [])), 16)
    nonce = int(str(_rpc(rpc_url, "eth_getTransactionCount", [account.address, "pending"])), 16)
    base = int(str(_rpc(rpc_url, "eth_gasPrice", [])), 16)
    signed = Account.sign_transaction(
        {
            "chainId": chain_id,
            "nonce": nonce,
            "to": CREATE2_DEPLOYER,
            "value": 0,
            "data": SALT + init_code(),
            "gas": 3_000_000,
            "maxFeePerGas": 2 * base + 10**9,
            "maxPriorityFeePerGas": 10**9,
        },
        deployer_key,
    )
    tx_hash = _rpc(rpc_url, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
    deadline = time.monotonic() + timeout
    while _rpc(rpc_url, "eth_getTransactionReceipt", [tx_hash]) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the batch contract deployment {tx_hash} was not mined in {timeout}s")
        time.sleep(0.2)
    if _rpc(rpc_url, "eth_getCode", [address, "latest"]) in ("0x", None):
        raise RuntimeError(f"the deployment {tx_hash} left no code at {address}")
    return address
