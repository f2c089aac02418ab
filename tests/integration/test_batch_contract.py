"""The batch-payout contract on a real chain: exact payments, and nobody can move a hot wallet's
funds through it but the hot wallet itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from jobs import devchain
from jobs.batchcontract import (
    approve_data,
    batch_contract_address,
    deploy_batch_contract,
    pay_native_data,
    pay_token_data,
)
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.chain


@pytest.fixture
def w3(tmp_path: Path) -> Iterator[Web3]:
    proc = devchain.start_anvil(port=free_port(), log_path=tmp_path / "anvil.log")
    url = f"http://127.0.0.1:{proc.args[proc.args.index('--port') + 1]}"
    devchain.bootstrap_chain(url)
    deploy_batch_contract(url, devchain.dev_account(devchain.DEPLOYER_INDEX).key)
    yield Web3(Web3.HTTPProvider(url))
    devchain.stop_process(proc)


def send(w3: Web3, index: int, to: str, data: bytes, value: int = 0) -> int:
    """Send from dev account `index`; returns the receipt status (1 ok, 0 reverted)."""
    account = devchain.dev_account(index)
    signed = Account.sign_transaction(
        {
            "chainId": 31337,
            "nonce": w3.eth.get_transaction_count(account.address),
            "to": to,
            "value": value,
            "data": data,
            "gas": 2_000_000,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        },
        account.key,
    )
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30)
    return int(receipt["status"])


def token_balance(w3: Web3, token: str, owner: str) -> int:
    return int(devchain.token_contract(w3, token).functions.balanceOf(owner).call())


def test_deployment_is_deterministic_and_idempotent(w3: Web3) -> None:
    address = batch_contract_address()
    assert w3.eth.get_code(address)
    url = w3.provider.endpoint_uri  # type: ignore[attr-defined]
    nonce = w3.eth.get_transaction_count(devchain.dev_account(devchain.DEPLOYER_INDEX).address)
    assert deploy_batch_contract(url, devchain.dev_account(devchain.DEPLOYER_INDEX).key) == address
    assert w3.eth.get_transaction_count(devchain.dev_account(devchain.DEPLOYER_INDEX).address) == nonce


def test_native_batch_pays_exact_amounts_and_keeps_nothing(w3: Web3) -> None:
    recipients = [Account.create().address for _ in range(3)]
    amounts = [1, 10**15, 3 * 10**17]
    assert send(w3, 1, batch_contract_address(), pay_native_data(recipients, amounts), value=sum(amounts)) == 1
    assert [w3.eth.get_balance(r) for r in recipients] == amounts
    assert w3.eth.get_balance(batch_contract_address()) == 0
    # Sending more or less than the amounts add up to is refused.
    assert send(w3, 1, batch_contract_address(), pay_native_data(recipients, amounts), value=sum(amounts) + 1) == 0


def test_token_batch_pays_from_the_caller_only(w3: Web3) -> None:
    token = devchain.bootstrap_chain(w3.provider.endpoint_uri)["tokens"]["USDT"]  # type: ignore[attr-defined]
    hot = devchain.dev_account(1).address
    assert send(w3, 1, token, approve_data(batch_contract_address(), 2**256 - 1)) == 1
    recipients = [Account.create().address for _ in range(3)]
    amounts = [1, 2_500_000, 7_000_000]
    before = token_balance(w3, token, hot)
    assert send(w3, 1, batch_contract_address(), pay_token_data(token, recipients, amounts)) == 1
    assert [token_balance(w3, token, r) for r in recipients] == amounts
    assert token_balance(w3, token, hot) == before - sum(amounts)

    # A stranger calls the contract to pay itself: the contract moves the caller's tokens, and
    # the stranger has no allowance of its own, so nothing moves. The hot wallet's unlimited
    # approval is of no use to anyone else.
    stranger = devchain.dev_account(7).address
    hot_before, stranger_before = token_balance(w3, token, hot), token_balance(w3, token, stranger)
    assert send(w3, 7, batch_contract_address(), pay_token_data(token, [stranger], [1_000_000])) == 0
    assert token_balance(w3, token, hot) == hot_before
    assert token_balance(w3, token, stranger) == stranger_before


def test_native_payment_to_a_contract_that_refuses_it_reverts(w3: Web3) -> None:
    refuser = batch_contract_address()  # no payable fallback
    ok = Account.create().address
    data = pay_native_data([ok, refuser], [10**15, 10**15])
    assert send(w3, 1, batch_contract_address(), data, value=2 * 10**15) == 0
    assert w3.eth.get_balance(ok) == 0


def test_operators_deploy_it_with_a_key_from_stdin(tmp_path: Path) -> None:
    port = free_port()
    proc = devchain.start_anvil(port=port, log_path=tmp_path / "anvil.log")
    try:
        url = f"http://127.0.0.1:{port}"
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
        assert Web3(Web3.HTTPProvider(url)).eth.get_code(batch_contract_address())
    finally:
        devchain.stop_process(proc)
