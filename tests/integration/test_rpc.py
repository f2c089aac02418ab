"""RpcClient and the fee oracle against real anvil nodes: failover, classified node errors, fees.

Each test that depends on chain state gets its own anvil (they start in well under a second).
The few failure modes anvil cannot produce (HTTP 429/503, slow answers) come from a stub HTTP
server that answers every request the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from eth_account import Account
from eth_account.datastructures import SignedTransaction

from app.registry import Asset, Chain
from jobs.devchain import ChainInfo, bootstrap_chain, dev_account, start_anvil, stop_process
from jobs.fees import Fees, bump_fees, suggest_fees
from jobs.rpc import (
    RpcClient,
    RpcError,
    RpcErrorKind,
    RpcUnavailable,
    is_maybe_mined,
    revert_reason,
)
from jobs.sign import simulate, with_margin
from tests.conftest import free_port

pytestmark = pytest.mark.chain

T = TypeVar("T")
CHAIN_ID = 31337
GWEI = 10**9
SECRET = "s3cr3t-api-key"
RECIPIENT = dev_account(8).address
TRANSFER_FROM = bytes.fromhex("23b872dd")  # transferFrom(address,address,uint256)

# Generous caps: the tests that want a cap to bind set their own.
ANVIL = Chain(
    name="anvil",
    chain_id=CHAIN_ID,
    enabled=True,
    rpc_urls=("http://127.0.0.1:8545",),
    confirmations=1,
    block_time_seconds=1.0,
    fee_model="eip1559",
    max_fee_per_gas=10_000 * GWEI,
    max_priority_fee_per_gas=1_000 * GWEI,
    native=Asset(symbol="ETH", decimals=18, min_units=1, max_units=10**24),
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextmanager
def anvil(
    log_dir: Path, *, port: int | None = None, chain_id: int = CHAIN_ID, args: Sequence[str] = ()
) -> Iterator[str]:
    port = port or free_port()
    proc = start_anvil(port=port, chain_id=chain_id, log_path=log_dir / f"anvil-{port}.log", extra_args=args)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def anvil_url(tmp_path: Path) -> Iterator[str]:
    with anvil(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def token_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ChainInfo]]:
    with anvil(tmp_path_factory.mktemp("anvil")) as url:
        yield url, bootstrap_chain(url)


@contextmanager
def stub_rpc(status: int, answer: object = None, delay: float = 0.0) -> Iterator[str]:
    """An HTTP server answering every POST with `status` and `answer` (JSON) after `delay`."""
    body = b"<html>upstream trouble</html>" if answer is None else json.dumps(answer).encode()
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            stopping.wait(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: that is what a slow stub is for

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            """Silent: the tests assert on the client's view."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False  # server_close() then joins the handler threads
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()


def dead_url() -> str:
    """A URL nothing listens on, carrying an API key the way hosted providers do."""
    return f"http://127.0.0.1:{free_port()}/v3/{SECRET}?apikey={SECRET}"


def transfer(sender: int, *, nonce: int, fees: Fees, value: int = 1, chain_id: int = CHAIN_ID) -> SignedTransaction:
    tx = {"chainId": chain_id, "nonce": nonce, "to": RECIPIENT, "value": value, "gas": 21_000}
    return Account.sign_transaction(tx | fees.tx_fields(), dev_account(sender).key)


async def mined_receipt(rpc: RpcClient, tx_hash: str) -> dict[str, Any] | None:
    """The receipt once anvil's automine has mined the transaction (None after 5 s): the answer
    to eth_sendRawTransaction can come before the block holding it is recorded."""
    for _ in range(250):
        receipt = await rpc.get_receipt(tx_hash)
        if receipt is not None:
            return receipt
        await asyncio.sleep(0.02)
    return None


async def rejection(rpc: RpcClient, signed: SignedTransaction) -> RpcError:
    with pytest.raises(RpcError) as info:
        await rpc.send_raw_transaction(signed.raw_transaction)
    return info.value


# -- failover and health ----------------------------------------------------------------------


def test_fails_over_from_a_dead_url_and_reports_it(anvil_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[int]:
        async with RpcClient([dead_url(), anvil_url], chain_id=CHAIN_ID, name="anvil") as rpc:
            numbers = [await rpc.block_number(), await rpc.chain_id()]
            health = rpc.health()
        dead, alive = health
        # The second call skipped the dead URL: it was cooling down.
        assert (dead.healthy, dead.consecutive_failures, dead.successes) == (False, 1, 0)
        assert dead.cooldown_remaining > 0 and "Cannot connect" in (dead.last_error or "")
        assert (alive.healthy, alive.successes, alive.failures) == (True, 2, 0)
        assert SECRET not in repr(health)
        return numbers

    with caplog.at_level(logging.WARNING, logger="jobs.rpc"):
        assert run(scenario()) == [0, CHAIN_ID]
    assert "failed" in caplog.text and SECRET not in caplog.text


def test_every_url_down_is_unavailable_without_leaking_keys() -> None:
    async def scenario() -> None:
        async with RpcClient([dead_url(), dead_url()], chain_id=CHAIN_ID, max_cooldown=0.5) as rpc:
            for attempt in (1, 2):  # cooling URLs are still tried rather than refusing
                with pytest.raises(RpcUnavailable) as info:
                    await rpc.block_number()
                assert info.value.kind is RpcErrorKind.NETWORK
                assert SECRET not in str(info.value) and "127.0.0.1" in str(info.value)
                assert [h.consecutive_failures for h in rpc.health()] == [attempt, attempt]
            assert all(0 < h.cooldown_remaining <= 0.5 for h in rpc.health())

    run(scenario())


def test_when_every_url_cools_down_the_least_recently_failed_goes_first(tmp_path: Path) -> None:
    late_port = free_port()
    urls = [dead_url(), f"http://127.0.0.1:{late_port}"]

    async def scenario() -> None:
        async with RpcClient(urls, chain_id=CHAIN_ID, base_cooldown=30) as rpc:
            with pytest.raises(RpcUnavailable):
                await rpc.block_number()
            with anvil(tmp_path, port=late_port):
                assert await rpc.block_number() == 0
            dead, revived = rpc.health()
        assert (dead.consecutive_failures, dead.failures) == (2, 2)
        assert (revived.consecutive_failures, revived.failures, revived.successes) == (0, 1, 1)
        assert revived.healthy and revived.cooldown_remaining == 0

    run(scenario())


RATE_LIMITED_ANSWER = {
    "jsonrpc": "2.0",
    "id": 1,
    "error": {"code": -32005, "message": "daily request count exceeded, request rate limited"},
}


def test_fails_over_on_429_401_503_rate_limit_answers_and_timeouts(
    anvil_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        stub_rpc(429) as too_many,
        stub_rpc(401, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "bad key"}}) as unauthorized,
        stub_rpc(503) as unavailable,
        stub_rpc(200, RATE_LIMITED_ANSWER) as limited,
        stub_rpc(200, {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}, delay=2.0) as slow,
        caplog.at_level(logging.INFO),
    ):
        keyed = [f"{url}/v3/{SECRET}?key={SECRET}" for url in (too_many, unauthorized, unavailable)]
        urls = [*keyed, limited, slow, anvil_url]

        async def scenario() -> None:
            async with RpcClient(urls, chain_id=CHAIN_ID, timeout=0.3) as rpc:
                assert await rpc.block_number() == 0
                health = rpc.health()
            assert [h.failures for h in health] == [1, 1, 1, 1, 1, 0]
            assert [h.last_error for h in health] == [
                "HTTP 429 Too Many Requests",
                "HTTP 401",
                "HTTP 503 without a JSON-RPC answer",
                "HTTP 200, node says rate limited",
                "no answer within 0.3s",
                None,
            ]

        run(scenario())
    # Each failure is logged with its URL, redacted.
    assert caplog.text.count("cooling down") == 5 and SECRET not in caplog.text


def test_only_rate_limited_urls_are_unavailable_as_rate_limited() -> None:
    with stub_rpc(429) as too_many, stub_rpc(200, RATE_LIMITED_ANSWER) as limited:

        async def scenario() -> None:
            async with RpcClient([too_many, limited], chain_id=CHAIN_ID) as rpc:
                with pytest.raises(RpcUnavailable) as info:
                    await rpc.gas_price()
            assert info.value.kind is RpcErrorKind.RATE_LIMITED

        run(scenario())


def test_a_url_on_another_chain_is_never_used(anvil_url: str, tmp_path: Path) -> None:
    with anvil(tmp_path, chain_id=1337) as other_chain:

        async def scenario() -> None:
            async with RpcClient([other_chain, anvil_url], chain_id=CHAIN_ID) as rpc:
                assert await rpc.chain_id() == CHAIN_ID
                wrong, right = rpc.health()
            assert (wrong.wrong_chain_id, wrong.healthy) == (1337, False)
            assert (right.wrong_chain_id, right.healthy) == (None, True)
            async with RpcClient([other_chain], chain_id=CHAIN_ID) as rpc:
                for _ in range(2):
                    with pytest.raises(RpcError, match="chain") as info:
                        await rpc.block_number()
                    assert info.value.kind is RpcErrorKind.OTHER

        run(scenario())


def test_batch_answers_in_order_in_one_exchange(anvil_url: str) -> None:
    main = dev_account(0).address
    calls: list[tuple[str, list[Any]]] = [
        ("eth_getBalance", [main, "latest"]),
        ("eth_no_such_method", []),
        ("eth_chainId", []),
        ("eth_blockNumber", []),
    ]

    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            balance, missing, chain_id, block = await rpc.batch(calls, return_errors=True)
            assert rpc.health()[0].successes == 1
            with pytest.raises(RpcError, match="Method not found"):
                await rpc.batch(calls)
            assert await rpc.batch([]) == []
        assert int(balance, 16) == 1_000_000 * 10**18
        assert isinstance(missing, RpcError) and missing.code == -32601
        assert (int(chain_id, 16), int(block, 16)) == (CHAIN_ID, 0)

    run(scenario())


# -- node errors as anvil answers them --------------------------------------------------------


def test_a_used_nonce_is_nonce_too_low(anvil_url: str) -> None:
    fees = Fees.eip1559(10 * GWEI, GWEI)

    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            first = transfer(1, nonce=0, fees=fees)
            assert await rpc.send_raw_transaction(first.raw_transaction) == first.hash.to_0x_hex()
            receipt = await mined_receipt(rpc, first.hash.to_0x_hex())
            assert receipt is not None and receipt["status"] == "0x1"
            error = await rejection(rpc, transfer(1, nonce=0, fees=fees, value=2))
        assert error.kind is RpcErrorKind.NONCE_TOO_LOW and is_maybe_mined(error.kind)

    run(scenario())


def test_pending_duplicates_and_replacements(anvil_url: str) -> None:
    """Rule 7 in action: the same bytes are "already known", a same-fee replacement is
    "underpriced", and bump_fees gives a replacement the node accepts and mines instead."""
    fees = Fees.eip1559(10 * GWEI, GWEI)

    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            await rpc.call("evm_setAutomine", [False])
            original = transfer(2, nonce=0, fees=fees)
            await rpc.send_raw_transaction(original.raw_transaction)
            again = await rejection(rpc, original)
            cheap = await rejection(rpc, transfer(2, nonce=0, fees=fees, value=2))
            assert again.kind is RpcErrorKind.ALREADY_KNOWN and is_maybe_mined(again.kind)
            assert cheap.kind is RpcErrorKind.REPLACEMENT_UNDERPRICED and is_maybe_mined(cheap.kind)

            bumped = bump_fees(fees, await suggest_fees(rpc, ANVIL), ANVIL)
            assert bumped is not None
            replacement = transfer(2, nonce=0, fees=bumped)
            await rpc.send_raw_transaction(replacement.raw_transaction)
            await rpc.call("evm_mine", [])
            assert await rpc.get_receipt(original.hash.to_0x_hex()) is None
            mined = await rpc.get_transaction(replacement.hash.to_0x_hex())
            assert mined is not None and mined["blockNumber"] == "0x1"

    run(scenario())


def test_simulation_reads_the_latest_block_not_the_pool(anvil_url: str) -> None:
    """The estimate, like the call, is of the latest block: the node does not replay its pool for
    it (anvil does when no block is named). A payment the sender's pending transfer leaves no coins
    for is estimated, as it is called, against the mined balance. It carries a byte of data: anvil
    answers 21,000 for a plain transfer without running it."""
    fees = Fees.eip1559(10 * GWEI, GWEI)
    sender = dev_account(5).address
    value, data = 10**18, b"\x01"

    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            await rpc.call("evm_setAutomine", [False])
            balance = await rpc.get_balance(sender)
            drain = transfer(5, nonce=0, fees=fees, value=balance - 21_000 * 10 * GWEI)
            await rpc.send_raw_transaction(drain.raw_transaction)
            tx = {"from": sender, "to": RECIPIENT, "value": value, "data": data}
            with pytest.raises(RpcError) as info:
                await rpc.estimate_gas(tx, "pending")
            assert info.value.kind is RpcErrorKind.INSUFFICIENT_FUNDS
            gas = await rpc.estimate_gas(tx)
            assert 21_000 < gas < 22_000
            row = {"id": uuid.uuid4(), "to_address": RECIPIENT, "value": value, "data": data}
            prepared, reverted = await simulate(rpc, sender, [row])
            assert reverted == {} and [(p.payout_id, p.gas_limit) for p in prepared] == [(row["id"], with_margin(gas))]

    run(scenario())


def test_an_empty_account_is_insufficient_funds(anvil_url: str) -> None:
    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            await rpc.call("anvil_setBalance", [dev_account(3).address, "0x1"])
            error = await rejection(rpc, transfer(3, nonce=0, fees=Fees.eip1559(10 * GWEI, GWEI)))
        assert error.kind is RpcErrorKind.INSUFFICIENT_FUNDS and not is_maybe_mined(error.kind)

    run(scenario())


def test_a_max_fee_under_the_base_fee_is_fee_too_low(anvil_url: str) -> None:
    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            await rpc.call("anvil_setNextBlockBaseFeePerGas", [hex(1_000 * GWEI)])
            error = await rejection(rpc, transfer(4, nonce=0, fees=Fees.eip1559(10 * GWEI, GWEI)))
            assert error.kind is RpcErrorKind.FEE_TOO_LOW and not is_maybe_mined(error.kind)
            # The oracle sees the raised base fee, and its suggestion gets in.
            fees = await suggest_fees(rpc, ANVIL)
            assert fees.max_fee_per_gas is not None and fees.max_fee_per_gas > 2_000 * GWEI
            tx_hash = await rpc.send_raw_transaction(transfer(4, nonce=0, fees=fees).raw_transaction)
            # anvil mines on its own time after accepting the transaction.
            for _ in range(100):
                if await rpc.get_receipt(tx_hash) is not None:
                    break
                await asyncio.sleep(0.02)
            assert await rpc.get_transaction_count(dev_account(4).address, "latest") == 1

    run(scenario())


def test_a_failing_transfer_from_reverts_with_the_token_reason(
    token_chain: tuple[str, ChainInfo],
) -> None:
    url, info = token_chain
    token, main, hot = info["tokens"]["USDT"], info["main_account"], info["hot_wallets"][0]
    data = TRANSFER_FROM + b"".join(bytes(12) + bytes.fromhex(a[2:]) for a in (main, hot)) + (1).to_bytes(32, "big")

    async def scenario() -> None:
        async with RpcClient([url], chain_id=CHAIN_ID) as rpc:
            with pytest.raises(RpcError) as call_info:
                await rpc.eth_call({"from": hot, "to": token, "data": data})
            with pytest.raises(RpcError) as estimate_info:
                await rpc.estimate_gas({"from": hot, "to": token, "data": data})
            assert await rpc.erc20_balance(token, main) == 100_000_000 * 10**6
        for error in (call_info.value, estimate_info.value):
            assert (error.kind, error.code) == (RpcErrorKind.EXECUTION_REVERTED, 3)
            assert revert_reason(error.data) == error.reason == "insufficient allowance"

    run(scenario())


def test_typed_reads(token_chain: tuple[str, ChainInfo]) -> None:
    url, info = token_chain
    deployer = info["deployer"]

    async def scenario() -> None:
        async with RpcClient([url], chain_id=CHAIN_ID) as rpc:
            latest = await rpc.get_block("latest", full=True)
            assert latest is not None and int(latest["number"], 16) == await rpc.block_number()
            assert await rpc.get_block(10**9) is None
            assert await rpc.get_transaction_count(deployer, "pending") > 0
            assert await rpc.get_balance(deployer, 0) == 1_000_000 * 10**18
            assert await rpc.get_receipt("0x" + "00" * 32) is None
            assert await rpc.get_transaction("0x" + "00" * 32) is None
            gas = await rpc.estimate_gas({"from": deployer, "to": RECIPIENT, "value": 1})
            assert gas == 21_000

    run(scenario())


# -- the fee oracle -----------------------------------------------------------------------------


def test_suggest_fees_is_twice_the_next_base_fee_plus_the_median_tip(anvil_url: str) -> None:
    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            for nonce, tip in enumerate((3 * GWEI, GWEI, 2 * GWEI)):  # one block each
                signed = transfer(5, nonce=nonce, fees=Fees.eip1559(100 * GWEI, tip))
                await rpc.send_raw_transaction(signed.raw_transaction)
            fees = await suggest_fees(rpc, ANVIL)
            history = await rpc.fee_history(10, "latest", [50])
            capped = await suggest_fees(rpc, replace(ANVIL, max_fee_per_gas=GWEI, max_priority_fee_per_gas=GWEI // 10))
            await rpc.send_raw_transaction(transfer(5, nonce=3, fees=fees).raw_transaction)
        next_base_fee = history.base_fees[-1]
        assert fees == Fees.eip1559(2 * next_base_fee + 2 * GWEI, 2 * GWEI, capped=False)
        assert capped == Fees.eip1559(min(GWEI, 2 * next_base_fee + GWEI // 10), GWEI // 10, capped=True)

    run(scenario())


def test_suggest_fees_on_empty_blocks_asks_the_node_for_a_tip(anvil_url: str) -> None:
    async def scenario() -> None:
        async with RpcClient([anvil_url], chain_id=CHAIN_ID) as rpc:
            fees = await suggest_fees(rpc, ANVIL)
            node_tip = await rpc.max_priority_fee()
            history = await rpc.fee_history(10, "latest", [50])
        assert history.rewards == ((0,),)  # the genesis block: no transactions, no reward
        assert fees == Fees.eip1559(2 * history.base_fees[-1] + node_tip, node_tip)

    run(scenario())


def test_legacy_chains_use_the_gas_price(tmp_path: Path) -> None:
    legacy = replace(ANVIL, fee_model="legacy")

    async def scenario(url: str) -> None:
        async with RpcClient([url], chain_id=CHAIN_ID) as rpc:
            fees = await suggest_fees(rpc, legacy)
            assert fees == Fees.legacy(await rpc.gas_price())
            signed = transfer(6, nonce=0, fees=fees)
            await rpc.send_raw_transaction(signed.raw_transaction)
            receipt = await mined_receipt(rpc, signed.hash.to_0x_hex())
            assert receipt is not None and receipt["type"] == "0x0"
            capped = await suggest_fees(rpc, replace(legacy, max_fee_per_gas=7))
            assert capped == Fees.legacy(7, capped=True)

    with anvil(tmp_path, args=["--hardfork", "berlin"]) as url:
        run(scenario(url))
