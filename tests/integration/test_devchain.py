"""bootstrap_chain against a real anvil: token deployment, top-ups and idempotency."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from web3 import Web3
from web3.exceptions import ContractLogicError

from jobs.devchain import (
    DEPLOYER_INDEX,
    HOT_WALLET_INDEXES,
    MAIN_ACCOUNT_INDEX,
    ChainInfo,
    bootstrap_chain,
    dev_account,
    start_anvil,
    stop_process,
    token_contract,
)

pytestmark = pytest.mark.chain

USDT = 10**6
MAIN_TARGET = 100_000_000 * USDT
HOT_TARGET = 1_000_000 * USDT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def run_anvil(log_path: Path, block_time: float | None = None) -> Iterator[str]:
    port = free_port()
    proc = start_anvil(port=port, block_time=block_time, log_path=log_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def rpc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_anvil(tmp_path_factory.mktemp("anvil") / "anvil.log") as url:
        yield url


@pytest.fixture(scope="module")
def w3(rpc_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url))


@pytest.fixture(scope="module")
def chain(rpc_url: str) -> ChainInfo:
    return bootstrap_chain(rpc_url)


def token_balances(w3: Web3, chain: ChainInfo) -> dict[str, int]:
    token = token_contract(w3, chain["tokens"]["USDT"])
    holders = [chain["main_account"], *chain["hot_wallets"], chain["deployer"]]
    return {holder: token.functions.balanceOf(holder).call() for holder in holders}


def test_reports_the_dev_accounts(w3: Web3, chain: ChainInfo) -> None:
    assert chain["chain_id"] == 31337 == w3.eth.chain_id
    assert chain["main_account"] == dev_account(MAIN_ACCOUNT_INDEX).address
    assert chain["deployer"] == dev_account(DEPLOYER_INDEX).address
    assert len(chain["hot_wallets"]) == 4
    assert chain["hot_wallets"] == [dev_account(i).address for i in HOT_WALLET_INDEXES]
    assert set(chain["tokens"]) == {"USDT"}
    assert Web3.is_checksum_address(chain["tokens"]["USDT"])


def test_deploys_the_token(w3: Web3, chain: ChainInfo) -> None:
    token = token_contract(w3, chain["tokens"]["USDT"])
    assert w3.eth.get_code(token.address)
    assert token.functions.symbol().call() == "USDT"
    assert token.functions.decimals().call() == 6
    assert token.functions.totalSupply().call() == 1_000_000_000 * USDT


def test_funds_main_account_and_hot_wallets(w3: Web3, chain: ChainInfo) -> None:
    balances = token_balances(w3, chain)
    assert balances[chain["main_account"]] == MAIN_TARGET
    for wallet in chain["hot_wallets"]:
        assert balances[wallet] == HOT_TARGET
        assert w3.eth.get_balance(wallet) >= Web3.to_wei(1_000, "ether")
    assert balances[chain["deployer"]] == (1_000_000_000 - 100_000_000 - 4 * 1_000_000) * USDT


def test_second_run_changes_nothing(rpc_url: str, w3: Web3, chain: ChainInfo) -> None:
    deployer_nonce = w3.eth.get_transaction_count(chain["deployer"])
    block = w3.eth.block_number
    balances = token_balances(w3, chain)

    again = bootstrap_chain(rpc_url)

    assert again == chain
    assert w3.eth.get_transaction_count(chain["deployer"]) == deployer_nonce
    assert w3.eth.block_number == block
    assert token_balances(w3, chain) == balances


def test_tops_up_only_the_shortfall(rpc_url: str, w3: Web3, chain: ChainInfo) -> None:
    token = token_contract(w3, chain["tokens"]["USDT"])
    wallet = dev_account(HOT_WALLET_INDEXES[0])
    spent = 250 * USDT
    tx = token.functions.transfer(chain["main_account"], spent).build_transaction(
        {"from": wallet.address, "nonce": w3.eth.get_transaction_count(wallet.address)}
    )
    tx_hash = w3.eth.send_raw_transaction(wallet.sign_transaction(tx).raw_transaction)  # type: ignore[arg-type]
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 1
    deployer_before = token.functions.balanceOf(chain["deployer"]).call()

    bootstrap_chain(rpc_url)

    assert token.functions.balanceOf(wallet.address).call() == HOT_TARGET
    # The main account is now above its target and must not be drained back down.
    assert token.functions.balanceOf(chain["main_account"]).call() == MAIN_TARGET + spent
    assert token.functions.balanceOf(chain["deployer"]).call() == deployer_before - spent


def test_transfer_from_without_allowance_reverts(w3: Web3, chain: ChainInfo) -> None:
    token = token_contract(w3, chain["tokens"]["USDT"])
    spender = chain["hot_wallets"][0]
    assert token.functions.allowance(chain["main_account"], spender).call() == 0
    with pytest.raises(ContractLogicError, match="insufficient allowance"):
        token.functions.transferFrom(chain["main_account"], spender, 1).call({"from": spender})


def test_mint_is_owner_only(w3: Web3, chain: ChainInfo) -> None:
    token = token_contract(w3, chain["tokens"]["USDT"])
    outsider = chain["hot_wallets"][0]
    with pytest.raises(ContractLogicError, match="only owner"):
        token.functions.mint(outsider, 1).call({"from": outsider})


def test_bootstrap_with_interval_mining(tmp_path: Path) -> None:
    with run_anvil(tmp_path / "anvil.log", block_time=1) as rpc_url:
        first = bootstrap_chain(rpc_url)
        assert bootstrap_chain(rpc_url) == first
        w3 = Web3(Web3.HTTPProvider(rpc_url))
        balances = token_balances(w3, first)
        assert balances[first["main_account"]] == MAIN_TARGET
        assert all(balances[wallet] == HOT_TARGET for wallet in first["hot_wallets"])
