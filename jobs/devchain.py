"""Local anvil chain helpers for the dev stack and the test suite.

Account roles on the well-known anvil mnemonic:
    index 0      main account (reserves)
    indexes 1-4  hot wallets
    index 9      deployer of the test token; also funds the top-ups
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import httpx
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.types import Nonce, TxParams, Wei
from web3.utils import get_create_address

from jobs.contracts.build import load_artifact
from jobs.keys import ANVIL_MNEMONIC, dev_account

MAIN_ACCOUNT_INDEX = 0
HOT_WALLET_INDEXES = (1, 2, 3, 4)
DEPLOYER_INDEX = 9

ANVIL_ACCOUNT_COUNT = 10
ANVIL_ACCOUNT_BALANCE_ETH = 1_000_000
ANVIL_STATE_INTERVAL_SECONDS = 5

ERC20_CONTRACT_NAME = "TestToken"
TOKEN_INITIAL_SUPPLY = 1_000_000_000
MAIN_ACCOUNT_TOKEN_TARGET = 100_000_000
HOT_WALLET_TOKEN_TARGET = 1_000_000
HOT_WALLET_ETH_TARGET = 1_000

RECEIPT_TIMEOUT_SECONDS = 30.0
LOG_TAIL_BYTES = 4_000


class ChainInfo(TypedDict):
    chain_id: int
    tokens: dict[str, ChecksumAddress]
    main_account: ChecksumAddress
    hot_wallets: list[ChecksumAddress]
    deployer: ChecksumAddress


def repo_root() -> Path:
    """The directory holding pyproject.toml, searched upwards from this file."""
    for directory in Path(__file__).resolve().parents:
        if (directory / "pyproject.toml").is_file():
            return directory
    raise RuntimeError(f"no pyproject.toml found above {Path(__file__).resolve()}")


def anvil_binary() -> str:
    """Path of the anvil executable: $ANVIL_BIN, else the one installed by `npm ci`.

    The platform binary from @foundry-rs/anvil-<os>-<arch> is preferred over the
    node_modules/.bin/anvil wrapper: the wrapper exits on SIGTERM before anvil has
    finished shutting down (and dumping its state), and a SIGKILL orphans anvil.
    """
    from_env = os.environ.get("ANVIL_BIN")
    if from_env:
        if not Path(from_env).is_file():
            raise RuntimeError(f"ANVIL_BIN points to {from_env!r}, which is not a file")
        return from_env
    node_modules = repo_root() / "node_modules"
    native = node_modules / "@foundry-rs" / f"anvil-{_npm_platform()}" / "bin"
    native /= "anvil.exe" if sys.platform == "win32" else "anvil"
    wrapper = node_modules / ".bin" / "anvil"
    for candidate in (native, wrapper):
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(
        f"anvil not found at {wrapper}; run `npm ci` in {repo_root()} or set ANVIL_BIN to an anvil executable"
    )


def _npm_platform() -> str:
    """The <os>-<arch> suffix of the @foundry-rs platform packages for this machine."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    return f"{sys.platform}-{arch.get(machine, machine)}"


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def anvil_argv(
    *,
    port: int,
    chain_id: int = 31337,
    block_time: float | None = None,
    gas_limit: int | None = None,
    state_path: str | Path | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of an anvil on 127.0.0.1:`port` with the dev accounts."""
    args = [
        anvil_binary(),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chain-id", str(chain_id),
        "--mnemonic", ANVIL_MNEMONIC,
        "--accounts", str(ANVIL_ACCOUNT_COUNT),
        "--balance", str(ANVIL_ACCOUNT_BALANCE_ETH),
    ]  # fmt: skip
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    if gas_limit is not None:
        args += ["--gas-limit", str(gas_limit)]
    if state_path is not None:
        Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        args += ["--state", str(state_path), "--state-interval", str(ANVIL_STATE_INTERVAL_SECONDS)]
    return args + list(extra_args)


def start_anvil(
    *,
    port: int,
    chain_id: int = 31337,
    block_time: float | None = None,
    gas_limit: int | None = None,
    state_path: str | Path | None = None,
    log_path: str | Path | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start anvil on 127.0.0.1:`port` and return once its RPC answers with `chain_id`."""
    # Without this check, a chain already listening on the port would answer the
    # readiness poll while the new anvil fails to bind.
    if port_in_use(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is already in use")
    args = anvil_argv(
        port=port,
        chain_id=chain_id,
        block_time=block_time,
        gas_limit=gas_limit,
        state_path=state_path,
        extra_args=extra_args,
    )

    log_offset = 0
    if log_path is None:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    else:
        log_file = Path(log_path)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # The log is appended to across restarts, so failures report only this run's output.
        log_offset = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603

    try:
        wait_for_rpc(proc, f"http://127.0.0.1:{port}", chain_id, startup_timeout)
    except RuntimeError as exc:
        stop_process(proc)
        raise RuntimeError(f"{exc}\n{log_tail(log_path, log_offset)}") from exc
    except BaseException:
        stop_process(proc)
        raise
    return proc


def wait_for_rpc(proc: subprocess.Popen[bytes], rpc_url: str, chain_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    # A proxy from the environment must not intercept requests to the local node.
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"anvil exited with code {proc.returncode} during startup")
            try:
                response = client.post(rpc_url, json=request)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
                continue
            payload = response.json()
            if "result" not in payload:
                raise RuntimeError(f"unexpected eth_chainId answer from {rpc_url}: {payload}")
            answered = int(payload["result"], 16)
            if answered != chain_id:
                raise RuntimeError(f"anvil at {rpc_url} reports chain id {answered}, expected {chain_id}")
            if proc.poll() is not None:
                raise RuntimeError(f"anvil exited with code {proc.returncode} during startup")
            return
    raise RuntimeError(f"anvil at {rpc_url} did not answer within {timeout}s ({last_error})")


def log_tail(log_path: str | Path | None, offset: int) -> str:
    if log_path is None:
        return "anvil output was discarded; pass log_path to capture it"
    with Path(log_path).open("rb") as log:
        log.seek(max(offset, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
        tail = log.read().decode("utf-8", errors="replace")
    return f"anvil log ({log_path}):\n{tail}"


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Terminate `proc`, killing it if it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def token_contract(w3: Web3, address: str) -> Contract:
    """A web3 contract for the test token at `address`, using the committed ABI."""
    abi = load_artifact(ERC20_CONTRACT_NAME)["abi"]
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)


def bootstrap_chain(
    rpc_url: str,
    *,
    token_symbol: str = "USDT",  # noqa: S107 - a ticker, not a credential
    token_decimals: int = 6,
) -> ChainInfo:
    """Deploy the test token and fund the dev accounts; safe to run repeatedly.

    Balances are only topped up to their targets, and the token is only deployed if
    the deployer's first CREATE address has no code yet.
    """
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
    chain_id = w3.eth.chain_id
    deployer = dev_account(DEPLOYER_INDEX)
    main_account = dev_account(MAIN_ACCOUNT_INDEX).address
    hot_wallets = [dev_account(index).address for index in HOT_WALLET_INDEXES]
    sender = _Sender(w3, deployer, chain_id)

    token = _ensure_token(w3, sender, token_symbol, token_decimals)
    unit = 10**token_decimals

    token_targets = {main_account: MAIN_ACCOUNT_TOKEN_TARGET * unit}
    token_targets |= {wallet: HOT_WALLET_TOKEN_TARGET * unit for wallet in hot_wallets}
    token_shortfalls = {
        holder: target - token.functions.balanceOf(holder).call() for holder, target in token_targets.items()
    }
    needed = sum(amount for amount in token_shortfalls.values() if amount > 0)
    available = token.functions.balanceOf(deployer.address).call()
    if needed > available:
        raise RuntimeError(
            f"deployer {deployer.address} holds {available} {token_symbol} base units "
            f"but {needed} are needed to top up the dev accounts"
        )
    for holder, amount in token_shortfalls.items():
        if amount > 0:
            data = token.encode_abi("transfer", args=[holder, amount])
            sender.send({"to": token.address, "data": data})

    eth_target = Web3.to_wei(HOT_WALLET_ETH_TARGET, "ether")
    for wallet in hot_wallets:
        shortfall = eth_target - w3.eth.get_balance(wallet)
        if shortfall > 0:
            sender.send({"to": wallet, "value": Wei(shortfall)})

    sender.wait_all()
    return {
        "chain_id": chain_id,
        "tokens": {token_symbol: token.address},
        "main_account": main_account,
        "hot_wallets": hot_wallets,
        "deployer": deployer.address,
    }


def _ensure_token(w3: Web3, sender: _Sender, symbol: str, decimals: int) -> Contract:
    deployer = sender.account.address
    address = get_create_address(deployer, Nonce(0))
    if w3.eth.get_code(address):
        token = token_contract(w3, address)
        found = (token.functions.symbol().call(), token.functions.decimals().call())
        if found != (symbol, decimals):
            raise RuntimeError(
                f"contract at {address} is {found[0]} with {found[1]} decimals, "
                f"expected {symbol} with {decimals} decimals"
            )
        return token

    # The token address is derived from deployer nonce 0, so it can only be deployed first.
    deployer_nonce = w3.eth.get_transaction_count(deployer, "pending")
    if deployer_nonce != 0:
        raise RuntimeError(
            f"deployer {deployer} has nonce {deployer_nonce} but no token at {address}; "
            "the chain was used for something else, start from a fresh anvil state"
        )
    artifact = load_artifact(ERC20_CONTRACT_NAME)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    supply = TOKEN_INITIAL_SUPPLY * 10**decimals
    data = factory.constructor(f"Test {symbol}", symbol, decimals, supply).data_in_transaction
    sender.send({"data": data})
    sender.wait_all()
    return token_contract(w3, address)


class _Sender:
    """Signs and sends EIP-1559 transactions from one account with local nonce tracking.

    Transactions are sent back to back and awaited together, so interval-mined chains
    include a whole batch in one block instead of one block per transaction.
    """

    def __init__(self, w3: Web3, account: LocalAccount, chain_id: int) -> None:
        self.w3 = w3
        self.account = account
        self.chain_id = chain_id
        self.nonce = w3.eth.get_transaction_count(account.address, "pending")
        self.pending: list[HexBytes] = []

    def send(self, tx: TxParams) -> None:
        priority_fee = self.w3.eth.max_priority_fee
        base_fee = self.w3.eth.get_block("latest")["baseFeePerGas"]
        full: TxParams = {
            "from": self.account.address,
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "type": 2,
            "maxPriorityFeePerGas": priority_fee,
            "maxFeePerGas": Wei(2 * base_fee + priority_fee),
            "value": Wei(0),
            **tx,
        }
        # Estimated without the nonce: earlier transactions of the batch may still be pending.
        estimate = {key: value for key, value in full.items() if key != "nonce"}
        full["gas"] = self.w3.eth.estimate_gas(estimate)  # type: ignore[arg-type]
        signed = self.account.sign_transaction(full)  # type: ignore[arg-type]
        self.pending.append(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        self.nonce = Nonce(self.nonce + 1)

    def wait_all(self) -> None:
        for tx_hash in self.pending:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_SECONDS)
            if receipt["status"] != 1:
                raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
        self.pending.clear()


def wait_until_serving(url: str, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Return once `url` answers 200; raise RuntimeError if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {url} within {timeout}s")
