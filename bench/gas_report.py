"""Gas per withdrawal, single transfers against our batch contract, measured from receipts on anvil.

    .venv/bin/python -m bench.gas_report [--out FILE]

Starts its own anvil on a free port (automine, anvil's default block gas limit, which a batch of
200 fits in many times over), deploys the test token and the batch contract, measures, stops anvil
and prints a Markdown table. Every figure is a receipt's gasUsed divided by its withdrawals.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

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
from jobs.txbuild import erc20_transfer_data

SIZES = (1, 10, 50, 100, 200)
SENDER = devchain.HOT_WALLET_INDEXES[0]
AMOUNT = 1_000  # base units paid per withdrawal
# (kind, is token, recipients already hold the asset)
KINDS = (
    ("native, existing account", False, True),
    ("native, new account", False, False),
    ("ERC-20, existing holder", True, True),
    ("ERC-20, new holder", True, False),
)
# Targets at batch sizes >= 50, as a share of the single transfer's gas.
TARGETS = {"ERC-20, new holder": 55, "ERC-20, existing holder": 30, "native, existing account": 55}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Meter:
    """Sends from one hot wallet and reads gasUsed from each receipt."""

    def __init__(self, w3: Web3, token: str) -> None:
        self.w3, self.token = w3, token
        self.account = devchain.dev_account(SENDER)
        self.nonce = int(w3.eth.get_transaction_count(self.account.address))
        self.largest = 0  # the most gas one measured transaction used

    def gas(self, to: str, data: bytes, value: int = 0) -> int:
        tx = {"from": self.account.address, "to": to, "value": value, "data": data}
        signed = Account.sign_transaction(
            {
                **tx,
                "chainId": self.w3.eth.chain_id,
                "nonce": self.nonce,
                "gas": self.w3.eth.estimate_gas(tx) * 5 // 4,  # type: ignore[arg-type]
                "maxFeePerGas": 10**11,
                "maxPriorityFeePerGas": 10**9,
            },
            self.account.key,
        )
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        self.nonce += 1
        if receipt["status"] != 1:
            raise RuntimeError(f"a measured transaction to {to} reverted")
        self.largest = max(self.largest, int(receipt["gasUsed"]))
        return int(receipt["gasUsed"])

    def recipients(self, n: int, token: bool, existing: bool) -> list[str]:
        """`n` fresh addresses; "existing" ones first get 1 base unit, so the measured payment is not their first."""
        found = [Account.create().address for _ in range(n)]
        if existing:
            if token:
                self.gas(batch_contract_address(), pay_token_data(self.token, found, [1] * n))
            else:
                self.gas(batch_contract_address(), pay_native_data(found, [1] * n), value=n)
        return found

    def single(self, token: bool, existing: bool) -> int:
        [to] = self.recipients(1, token, existing)
        return self.gas(self.token, erc20_transfer_data(to, AMOUNT)) if token else self.gas(to, b"", value=AMOUNT)

    def batch(self, n: int, token: bool, existing: bool) -> int:
        """Gas per withdrawal of one batch of `n`."""
        to, amounts = self.recipients(n, token, existing), [AMOUNT] * n
        if token:
            used = self.gas(batch_contract_address(), pay_token_data(self.token, to, amounts))
        else:
            used = self.gas(batch_contract_address(), pay_native_data(to, amounts), value=sum(amounts))
        return round(used / n)


def measure(meter: Meter) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    for label, token, existing in KINDS:
        row = {"single": meter.single(token, existing)}
        row |= {str(n): meter.batch(n, token, existing) for n in SIZES}
        rows[label] = row
    return rows


def share(row: dict[str, int], n: int) -> int:
    return round(100 * row[str(n)] / row["single"])


def table(rows: dict[str, dict[str, int]]) -> str:
    head = "| withdrawal | single | " + " | ".join(f"batch of {n}" for n in SIZES) + " |"
    lines = [head, "|---" * (len(SIZES) + 2) + "|"]
    for label, row in rows.items():
        cells = [f"{row[str(n)]:,} ({share(row, n)}%)" for n in SIZES]
        lines.append(f"| {label} | {row['single']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(rows: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for label, limit in TARGETS.items():
        shares = [share(rows[label], n) for n in SIZES if n >= 50]
        verdict = "met" if max(shares) <= limit else "MISSED"
        out.append(f"- {label}: {min(shares)}-{max(shares)}% of single at 50 and more (target <= {limit}%): {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gas_report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)

    anvil = devchain.anvil_binary()
    version = subprocess.run([anvil, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    version = version.replace("Version: ", "")  # "anvil Version: 1.7.1" -> "anvil 1.7.1"
    port = free_port()
    proc = devchain.start_anvil(port=port)
    try:
        url = f"http://127.0.0.1:{port}"
        info = devchain.bootstrap_chain(url)
        deploy_batch_contract(url, devchain.dev_account(devchain.DEPLOYER_INDEX).key)
        w3 = Web3(Web3.HTTPProvider(url))
        block_gas_limit = int(w3.eth.get_block("latest")["gasLimit"])
        meter = Meter(w3, info["tokens"]["USDT"])
        meter.gas(meter.token, approve_data(batch_contract_address(), 2**256 - 1))
        rows = measure(meter)
    finally:
        devchain.stop_process(proc)

    text = "\n".join(
        [
            f"Gas per withdrawal (receipt gasUsed / withdrawals, share of the single transfer), measured "
            f"{datetime.now(UTC):%Y-%m-%d} with {version} ({platform.machine()}, {os.cpu_count()} cores).",
            f"Block gas limit {block_gas_limit:,} (anvil's default, no --gas-limit): the largest measured "
            f"transaction used {meter.largest:,} gas ({100 * meter.largest / block_gas_limit:.1f}% of a block).",
            f"Batch contract {batch_contract_address()}.",
            "",
            table(rows),
            "",
            *target_lines(rows),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
