"""The account manager on a real chain: low hot wallets topped up from the main account, in one
transaction; the main account's alert delivered once to a webhook; a killed worker tops up once."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobs.batchcontract import batch_contract_address
from tests.conftest import Api, run_api
from tests.engine.conftest import Chain, Workers
from tests.engine.test_faults import chains_file

pytestmark = pytest.mark.chain

ETH = 10**18
USDT = 10**6


def set_rule(
    db: psycopg.Connection, asset: str, threshold: int, target: int, daily_limit: int, alert_below: int = 0
) -> None:
    db.execute(
        "INSERT INTO topup_rules (chain, asset, threshold, target, daily_limit, main_alert_below) "
        "VALUES ('localhost', %s, %s, %s, %s, %s)",
        (asset, threshold, target, daily_limit, alert_below),
    )


def fast_checks(workers: Workers, tmp_path: Path, **env: str) -> None:
    """Account checks every second (the default is 15 s)."""
    workers.env["PAYOUTS_CHAINS_FILE"] = str(chains_file(tmp_path, account_check_seconds=1))
    workers.env.update(env)


def wait_for(db: psycopg.Connection, sql: str, params: tuple[Any, ...], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        row = db.execute(sql, params).fetchone()
        if row and all(v for v in row.values()):
            return row
        if time.monotonic() > deadline:
            topups = db.execute("SELECT wallet, asset, amount, status, note FROM topups").fetchall()
            payouts = db.execute("SELECT kind, status, sender, nonce, alert FROM payouts").fetchall()
            raise AssertionError(f"timed out waiting for {what}; topups: {topups}; payouts: {payouts}")
        time.sleep(0.3)


def topups(db: psycopg.Connection) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM topups ORDER BY created_at, wallet").fetchall()


def mined_tx(chain: Chain, db: psycopg.Connection, payout_id: Any) -> dict[str, Any]:
    row = db.execute(
        "SELECT a.tx_hash FROM payouts p JOIN tx_attempts a ON a.id = p.mined_attempt_id WHERE p.id = %s",
        (payout_id,),
    ).fetchone()
    assert row is not None, "the top-up's payout has no mined attempt"
    return chain.rpc("eth_getTransactionByHash", [row["tx_hash"]])  # type: ignore[no-any-return]


def test_three_low_wallets_are_topped_up_to_target_in_one_transaction_from_the_main_account(
    db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, tmp_path: Path
) -> None:
    main = chain.info["main_account"]
    low = hot_wallets[:3]
    for n, wallet in enumerate(low, start=1):
        chain.rpc("anvil_setBalance", [wallet, hex(n * ETH)])  # 1, 2 and 3 ETH: under the threshold
    set_rule(db, "ETH", threshold=5 * ETH, target=10 * ETH, daily_limit=100 * ETH)
    main_before = chain.balance(main)
    untouched_before = chain.balance(hot_wallets[3])
    fast_checks(workers, tmp_path)
    workers.start(1)

    wait_for(
        db,
        "SELECT count(*) = 3 AS done FROM topups WHERE status = 'CONFIRMED'",
        (),
        timeout=60,
        what="three confirmed top-ups",
    )
    rows = topups(db)
    assert len(rows) == 3
    assert {r["wallet"] for r in rows} == set(low)
    assert len({r["payout_id"] for r in rows}) == 1, "one transaction for the three wallets"
    for wallet in low:
        assert chain.balance(wallet) == 10 * ETH
    assert chain.balance(hot_wallets[3]) == untouched_before, "a wallet above the threshold is left alone"
    tx = mined_tx(chain, db, rows[0]["payout_id"])
    assert tx["from"].lower() == main.lower()
    assert tx["to"].lower() == batch_contract_address().lower()
    assert int(tx["value"], 16) == (9 + 8 + 7) * ETH
    assert main_before - chain.balance(main) > 24 * ETH  # the top-ups plus the gas

    time.sleep(4)  # a few more checks: wallets at target are not topped up again
    assert len(topups(db)) == 3


def test_a_drained_token_wallet_is_topped_up_and_the_gas_station_keeps_its_coin(
    db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, tmp_path: Path
) -> None:
    drained = hot_wallets[0]
    chain.rpc("anvil_setBalance", [drained, "0x0"])  # no coin left for gas
    # Every hot wallet holds 1,000,000 USDT: a threshold above that makes all four low.
    set_rule(db, "USDT", threshold=2_000_000 * USDT, target=2_500_000 * USDT, daily_limit=10_000_000 * USDT)
    # The ETH rule asks for almost nothing; the gas station raises it for wallets that pay tokens.
    set_rule(db, "ETH", threshold=0, target=1, daily_limit=100 * ETH)
    fast_checks(workers, tmp_path)
    workers.start(1)

    wait_for(
        db,
        "SELECT count(*) FILTER (WHERE asset = 'USDT' AND status = 'CONFIRMED') = 4 AS usdt,"
        " count(*) FILTER (WHERE asset = 'ETH' AND status = 'CONFIRMED') >= 1 AS eth FROM topups",
        (),
        timeout=90,
        what="four USDT top-ups and the drained wallet's gas",
    )
    usdt = [r for r in topups(db) if r["asset"] == "USDT"]
    assert len({r["payout_id"] for r in usdt}) == 1, "one token batch"
    for wallet in hot_wallets:
        assert chain.balance(wallet, chain.usdt) == 2_500_000 * USDT
    eth = [r for r in topups(db) if r["asset"] == "ETH"]
    assert [r["wallet"] for r in eth] == [drained]
    # Enough for 50 token transfers (100,000 gas each) at the fees of the moment: far more than 1 wei.
    assert chain.balance(drained) == eth[0]["amount"] > 50 * 100_000 * 10**8
    # The main account approved the batch contract for its token batch (one approval).
    approvals = db.execute("SELECT count(*) AS n FROM payouts WHERE kind = 'approve' AND status = 'CONFIRMED'")
    assert approvals.fetchone()["n"] == 1


class Receiver:
    """A webhook receiver: records JSON bodies; answers 500 to the first `fail_first` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.refused < fail_first:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token-123"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)
    yield r
    r.close()


def test_a_low_main_account_delivers_one_alert(
    api: Api,
    database_url: str,
    client_key: str,
    db: psycopg.Connection,
    chain: Chain,
    hot_wallets: list[str],
    workers: Workers,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    main = chain.info["main_account"]
    # The main account holds about 1,000,000 ETH: an alert level above that makes it low.
    set_rule(db, "ETH", threshold=1 * ETH, target=2 * ETH, daily_limit=10 * ETH, alert_below=2_000_000 * ETH)
    fast_checks(workers, tmp_path, PAYOUTS_ALERT_WEBHOOK_URL=receiver.url, PAYOUTS_ALERT_INTERVAL_SECONDS="3600")
    workers.start(2)

    deadline = time.monotonic() + 30
    while not receiver.bodies and time.monotonic() < deadline:
        time.sleep(0.3)
    assert receiver.refused == 1, "the first post was refused (HTTP 500)"
    assert len(receiver.bodies) == 1, "the refused alert is sent again at the next check"
    text = receiver.bodies[0]["text"]
    assert "localhost" in text and main in text and "under its alert level" in text

    time.sleep(5)  # five more checks by two workers: no repeat within the interval
    assert len(receiver.bodies) == 1

    with api.client(client_key) as http:  # an API without a metrics token does not serve them
        assert http.get("/metrics").json()["code"] == "metrics_disabled"
    token = "metrics-token-0123456789"
    with run_api(database_url, tmp_path / "api.log", {"PAYOUTS_METRICS_TOKEN": token}) as private:
        with private.client(client_key) as http:  # an API client's key is not the metrics token
            assert http.get("/metrics").json()["code"] == "invalid_metrics_token"
        with private.client(token) as http:
            metrics = http.get("/metrics").text
    assert 'payouts_main_account_low{chain="localhost",asset="ETH"} 1' in metrics
    assert f'payouts_wallet_balance{{chain="localhost",role="main",address="{main}",asset="ETH"}}' in metrics
    logs = workers.logs()
    assert "ALERT main_low:localhost:ETH" in logs
    assert "secret-token-123" not in logs, "the webhook URL is a credential"


def test_a_worker_killed_during_a_top_up_does_not_top_up_twice(
    db: psycopg.Connection, chain: Chain, hot_wallets: list[str], workers: Workers, tmp_path: Path
) -> None:
    wallet = hot_wallets[1]
    chain.rpc("anvil_setBalance", [wallet, hex(ETH)])
    set_rule(db, "ETH", threshold=5 * ETH, target=10 * ETH, daily_limit=100 * ETH)
    fast_checks(workers, tmp_path)
    chain.rpc("evm_setIntervalMining", [0])  # the top-up waits in the mempool while the worker dies
    workers.start(1)
    wait_for(
        db,
        "SELECT bool_or(p.status = 'BROADCASTED') AS sent FROM topups t JOIN payouts p ON p.id = t.payout_id",
        (),
        timeout=30,
        what="the top-up broadcast",
    )
    workers.procs[0].send_signal(signal.SIGKILL)
    workers.procs[0].wait()
    workers.start(1)
    time.sleep(5)  # the new worker checks the accounts several times while the top-up is on its way
    chain.rpc("evm_setIntervalMining", [1])

    wait_for(
        db,
        "SELECT bool_and(status = 'CONFIRMED') AS done FROM topups",
        (),
        timeout=60,
        what="the top-up confirmed",
    )
    time.sleep(4)  # and a few more checks once it is confirmed
    rows = topups(db)
    assert len(rows) == 1, rows
    assert rows[0]["wallet"] == wallet and rows[0]["amount"] == 9 * ETH
    assert chain.balance(wallet) == 10 * ETH
