"""Gas per withdrawal, single transfers against our batch contract, measured from receipts on anvil.

    .venv/bin/python -m bench.gas_report [--out FILE]

Starts its own anvil (automine, 300M gas blocks so a batch of 200 fits), deploys the test token
and the batch contract, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
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
SENDER = 1  # a hot wallet of the dev mnemonic


class Meter:
    def __init__(self, w3: Web3, token: str) -> None:
        self.w3, self.token = w3, token
        self.account = devchain.dev_account(SENDER)

    def gas(self, to: str, data: bytes, value: int = 0) -> int:
        signed = Account.sign_transaction(
            {
                "chainId": 31337,
                "nonce": self.w3.eth.get_transaction_count(self.account.address),
                "to": to,
                "value": value,
                "data": data,
                "gas": 100_000_000,
                "maxFeePerGas": 10**11,
                "maxPriorityFeePerGas": 10**9,
            },
            self.account.key,
        )
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        if receipt["status"] != 1:
            raise RuntimeError(f"a measured transaction reverted: {to}")
        return int(receipt["gasUsed"])

    def recipients(self, n: int, existing: bool, token: bool) -> list[str]:
        found = [Account.create().address for _ in range(n)]
        if existing:  # give each a first balance, so the measured payment is not its first
            if token:
                self.gas(batch_contract_address(), pay_token_data(self.token, found, [1] * n))
            else:
                self.gas(batch_contract_address(), pay_native_data(found, [1] * n), value=n)
        return found


def measure(meter: Meter) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    kinds: dict[str, tuple[bool, bool]] = {
        "native, existing account": (False, True),
        "native, new account": (False, False),
        "ERC-20, existing holder": (True, True),
        "ERC-20, new holder": (True, False),
    }
    for label, (token, existing) in kinds.items():
        row: dict[str, int] = {}
        [one] = meter.recipients(1, existing, token)
        row["single"] = (
            meter.gas(meter.token, erc20_transfer_data(one, 1_000)) if token else meter.gas(one, b"", value=1_000)
        )
        for n in SIZES:
            who = meter.recipients(n, existing, token)
            amounts = [1_000] * n
            pay: Callable[[], int] = (
                (
                    lambda who=who, amounts=amounts: meter.gas(
                        batch_contract_address(), pay_token_data(meter.token, who, amounts)
                    )
                )
                if token
                else (
                    lambda who=who, amounts=amounts: meter.gas(
                        batch_contract_address(), pay_native_data(who, amounts), value=sum(amounts)
                    )
                )
            )
            row[str(n)] = pay() // n
        rows[label] = row
    return rows


def table(rows: dict[str, dict[str, int]]) -> str:
    head = "| withdrawal | single | " + " | ".join(f"batch of {n}" for n in SIZES) + " |"
    lines = [head, "|---" * (len(SIZES) + 2) + "|"]
    for label, row in rows.items():
        single = row["single"]
        cells = [f"{row[str(n)]:,} ({100 * row[str(n)] // single}%)" for n in SIZES]
        lines.append(f"| {label} | {single:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gas_report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    from tests.conftest import free_port

    port = free_port()
    proc = devchain.start_anvil(port=port, gas_limit=300_000_000)
    try:
        url = f"http://127.0.0.1:{port}"
        info = devchain.bootstrap_chain(url)
        deploy_batch_contract(url, devchain.dev_account(devchain.DEPLOYER_INDEX).key)
        w3 = Web3(Web3.HTTPProvider(url))
        meter = Meter(w3, info["tokens"]["USDT"])
        meter.gas(meter.token, approve_data(batch_contract_address(), 2**256 - 1))
        version = subprocess.run([devchain.anvil_binary(), "--version"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0]
        result = table(measure(meter))
    finally:
        devchain.stop_process(proc)
    text = f"Gas per withdrawal (gas used / withdrawals), {version}, 300M-gas blocks:\n\n{result}\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
