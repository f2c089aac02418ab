"""The batch-payout contract on a real chain: exact payments, nothing kept, and nobody can move a
hot wallet's funds through it but the hot wallet itself."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import vyper
from eth_abi import encode
from eth_account import Account
from web3 import Web3

from jobs import devchain
from jobs.batchcontract import (
    CREATE2_DEPLOYER,
    PAY_NATIVE,
    approve_data,
    batch_contract_address,
    deploy_batch_contract,
    pay_native_data,
    pay_token_data,
)
from jobs.contracts.build import load_artifact
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.chain

HOT = devchain.HOT_WALLET_INDEXES[0]
STRANGER = 7  # a dev account that is neither a hot wallet nor the deployer
UNLIMITED = 2**256 - 1
GAS = 2_000_000


@dataclass
class Chain:
    url: str
    w3: Web3
    token: str

    def send(self, index: int, to: str | None, data: bytes, value: int = 0) -> dict[str, Any]:
        """Send from dev account `index` with a fixed gas limit (a revert is mined, not estimated away)."""
        account = devchain.dev_account(index)
        tx: dict[str, Any] = {
            "chainId": 31337,
            "nonce": self.w3.eth.get_transaction_count(account.address),
            "value": value,
            "data": data,
            "gas": GAS,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
        if to is not None:
            tx["to"] = to
        signed = Account.sign_transaction(tx, account.key)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30))

    def status(self, index: int, to: str, data: bytes, value: int = 0) -> int:
        return int(self.send(index, to, data, value)["status"])

    def revert_message(self, index: int, to: str, data: bytes, value: int = 0) -> str:
        """The node's message for the call simulated from dev account `index` ("" if it succeeds)."""
        call = {"from": devchain.dev_account(index).address, "to": to, "data": "0x" + data.hex(), "value": hex(value)}
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [call, "latest"]}
        reply = httpx.post(self.url, json=request, trust_env=False).json()
        return str(reply["error"]["message"]) if "error" in reply else ""

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def token_balance(self, owner: str, token: str | None = None) -> int:
        contract = devchain.token_contract(self.w3, token or self.token)
        return int(contract.functions.balanceOf(owner).call())

    def deploy(self, index: int, source: str, *args: Any) -> str:
        """Compile `source` with vyper and deploy it from dev account `index`; returns its address."""
        out = vyper.compile_code(source, output_formats=["abi", "bytecode"])
        factory = self.w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"])
        receipt = self.send(index, None, bytes.fromhex(factory.constructor(*args).data_in_transaction[2:]))
        assert receipt["status"] == 1
        return str(receipt["contractAddress"])


def start_chain(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    port = free_port()
    proc = devchain.start_anvil(port=port, log_path=tmp_path / "anvil.log")
    request.addfinalizer(lambda: devchain.stop_process(proc))
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Chain:
    """A fresh anvil with the test token, funded hot wallets and the batch contract."""
    url = start_chain(request, tmp_path)
    info = devchain.bootstrap_chain(url)
    deploy_batch_contract(url, devchain.dev_account(devchain.DEPLOYER_INDEX).key)
    return Chain(url, Web3(Web3.HTTPProvider(url)), info["tokens"]["USDT"])


def new_accounts(n: int) -> list[str]:
    return [Account.create().address for _ in range(n)]


def test_calldata_matches_the_abi() -> None:
    recipients, amounts = new_accounts(2), [5, 7]
    w3 = Web3()
    batch = w3.eth.contract(abi=load_artifact("BatchPayout")["abi"])
    token = w3.eth.contract(abi=load_artifact("TestToken")["abi"])
    assert "0x" + pay_native_data(recipients, amounts).hex() == batch.encode_abi("pay_native", [recipients, amounts])
    assert "0x" + pay_token_data(recipients[0], recipients, amounts).hex() == batch.encode_abi(
        "pay_token", [recipients[0], recipients, amounts]
    )
    assert "0x" + approve_data(recipients[1], UNLIMITED).hex() == token.encode_abi(
        "approve", [recipients[1], UNLIMITED]
    )
    functions = {e["name"] for e in load_artifact("BatchPayout")["abi"] if e["type"] == "function"}
    assert functions == {"pay_native", "pay_token"}  # no owner, no rescue, nothing else
    with pytest.raises(ValueError, match="2 recipients but 1 amounts"):
        pay_native_data(recipients, [1])
    with pytest.raises(ValueError, match="2 recipients but 3 amounts"):
        pay_token_data(recipients[0], recipients, [1, 2, 3])


def test_deployment_is_deterministic_and_idempotent(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = start_chain(request, tmp_path)
    w3 = Web3(Web3.HTTPProvider(url))
    deployer = devchain.dev_account(devchain.DEPLOYER_INDEX)
    address = Web3.to_checksum_address(batch_contract_address())
    assert w3.eth.get_code(Web3.to_checksum_address(CREATE2_DEPLOYER)), (
        "anvil has the deterministic deployment proxy at genesis"
    )
    assert not w3.eth.get_code(address)

    assert deploy_batch_contract(url, deployer.key) == address
    assert w3.eth.get_code(address)
    assert w3.eth.get_transaction_count(deployer.address) == 1

    # A second deployment finds the code and sends nothing.
    assert deploy_batch_contract(url, deployer.key) == address
    assert w3.eth.get_transaction_count(deployer.address) == 1


def test_native_batch_pays_exact_amounts_and_keeps_nothing(chain: Chain) -> None:
    hot = devchain.dev_account(HOT).address
    recipients = new_accounts(3)
    amounts = [1, 10**15, 3 * 10**17]
    before = chain.balance(hot)
    receipt = chain.send(HOT, batch_contract_address(), pay_native_data(recipients, amounts), value=sum(amounts))
    assert receipt["status"] == 1
    assert [chain.balance(r) for r in recipients] == amounts
    assert chain.balance(batch_contract_address()) == 0
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(hot) == before - sum(amounts) - fee


def test_a_value_that_does_not_match_the_amounts_reverts(chain: Chain) -> None:
    contract = batch_contract_address()
    recipients = new_accounts(3)
    amounts = [10**15, 2 * 10**15, 3 * 10**15]
    data = pay_native_data(recipients, amounts)
    for value in (sum(amounts) + 1, sum(amounts) - 1, 0):
        assert chain.revert_message(HOT, contract, data, value) == "execution reverted: " + (
            "value mismatch" if value > sum(amounts) else "native transfer failed"
        )
        assert chain.status(HOT, contract, data, value) == 0
    # Calldata with more recipients than amounts (our encoder refuses to build it).
    mismatched = PAY_NATIVE + encode(["address[]", "uint256[]"], [recipients, amounts[:2]])
    assert chain.revert_message(HOT, contract, mismatched, sum(amounts[:2])) == "execution reverted: length mismatch"
    assert chain.status(HOT, contract, mismatched, sum(amounts[:2])) == 0
    assert [chain.balance(r) for r in recipients] == [0, 0, 0]
    assert chain.balance(contract) == 0


def test_native_payment_to_a_contract_that_refuses_it_reverts(chain: Chain) -> None:
    ok = new_accounts(1)[0]
    refuser = chain.token  # the test token has no payable fallback
    data = pay_native_data([ok, refuser], [10**15, 10**15])
    message = chain.revert_message(HOT, batch_contract_address(), data, 2 * 10**15)
    assert message == "execution reverted: native transfer failed"
    assert chain.status(HOT, batch_contract_address(), data, value=2 * 10**15) == 0
    assert chain.balance(ok) == 0
    assert chain.balance(refuser) == 0
    assert chain.balance(batch_contract_address()) == 0


def test_token_batch_pays_exact_amounts_after_approval(chain: Chain) -> None:
    hot = devchain.dev_account(HOT).address
    recipients = new_accounts(3)
    amounts = [1, 2_500_000, 7_000_000]
    data = pay_token_data(chain.token, recipients, amounts)
    assert chain.revert_message(HOT, batch_contract_address(), data) == "execution reverted: insufficient allowance"

    assert chain.status(HOT, chain.token, approve_data(batch_contract_address(), sum(amounts))) == 1
    before = chain.token_balance(hot)
    assert chain.status(HOT, batch_contract_address(), data) == 1
    assert [chain.token_balance(r) for r in recipients] == amounts
    assert chain.token_balance(hot) == before - sum(amounts)
    assert chain.token_balance(batch_contract_address()) == 0


def test_a_stranger_cannot_spend_a_hot_wallets_approval(chain: Chain) -> None:
    hot = devchain.dev_account(HOT).address
    stranger = devchain.dev_account(STRANGER).address
    token = devchain.token_contract(chain.w3, chain.token)
    assert chain.status(HOT, chain.token, approve_data(batch_contract_address(), UNLIMITED)) == 1
    assert token.functions.allowance(stranger, batch_contract_address()).call() == 0
    hot_before, stranger_before = chain.token_balance(hot), chain.token_balance(stranger)

    # The contract only ever calls transferFrom(msg.sender, ...): the stranger's own tokens, for
    # which it gave no allowance. The hot wallet's unlimited approval is of no use to anyone else.
    for recipients in ([stranger], [stranger, hot], [hot]):
        data = pay_token_data(chain.token, recipients, [1_000_000] * len(recipients))
        assert chain.revert_message(STRANGER, batch_contract_address(), data).endswith("insufficient allowance")
        assert chain.status(STRANGER, batch_contract_address(), data) == 0
    assert chain.token_balance(hot) == hot_before
    assert chain.token_balance(stranger) == stranger_before
    assert token.functions.allowance(hot, batch_contract_address()).call() == UNLIMITED


TOKEN_TEMPLATE = """
# pragma version 0.4.3
# pragma evm-version cancun
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])

@deploy
def __init__(supply: uint256):
    self.balanceOf[msg.sender] = supply

@external
def approve(spender: address, amount: uint256):
    self.allowance[msg.sender][spender] = amount

@external
TRANSFER_FROM
"""
# USDT's transferFrom returns nothing.
SILENT_TOKEN = TOKEN_TEMPLATE.replace(
    "TRANSFER_FROM",
    """def transferFrom(src: address, dst: address, amount: uint256):
    self.allowance[src][msg.sender] -= amount
    self.balanceOf[src] -= amount
    self.balanceOf[dst] += amount""",
)
# A token that answers false without reverting: the batch must not count it as paid.
FALSE_TOKEN = TOKEN_TEMPLATE.replace(
    "TRANSFER_FROM",
    """def transferFrom(src: address, dst: address, amount: uint256) -> bool:
    return False""",
)


def test_tokens_that_return_nothing_pay_and_a_false_answer_reverts(chain: Chain) -> None:
    hot = devchain.dev_account(HOT).address
    contract = batch_contract_address()
    silent = chain.deploy(HOT, SILENT_TOKEN, 10**12)
    liar = chain.deploy(HOT, FALSE_TOKEN, 10**12)
    recipients, amounts = new_accounts(2), [3, 4]
    for token in (silent, liar):
        assert chain.status(HOT, token, approve_data(contract, UNLIMITED)) == 1

    assert chain.status(HOT, contract, pay_token_data(silent, recipients, amounts)) == 1
    assert [chain.token_balance(r, silent) for r in recipients] == amounts
    assert chain.token_balance(hot, silent) == 10**12 - 7

    data = pay_token_data(liar, recipients, amounts)
    assert chain.revert_message(HOT, contract, data) == "execution reverted: transfer failed"
    assert chain.status(HOT, contract, data) == 0
    # An address without code is not a token that "returned nothing": the call reverts.
    assert chain.status(HOT, contract, pay_token_data(new_accounts(1)[0], recipients, amounts)) == 0


def test_operators_deploy_it_with_a_key_from_stdin(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = start_chain(request, tmp_path)
    env = os.environ | {"PAYOUTS_RPC_URLS_LOCALHOST": url}
    key = devchain.dev_account(devchain.DEPLOYER_INDEX).key.hex()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "contract", "deploy", "localhost"],
        input=key + "\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert batch_contract_address() in done.stdout
    assert key.removeprefix("0x") not in done.stdout + done.stderr
    assert Web3(Web3.HTTPProvider(url)).eth.get_code(Web3.to_checksum_address(batch_contract_address()))
