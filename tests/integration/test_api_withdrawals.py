"""The public withdrawal API over real HTTP, against the uvicorn server and the test database."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from db import clients, wallets
from tests.conftest import Api, make_client

Conn = psycopg.Connection[dict[str, Any]]  # the `db` fixture's rows are dicts
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
LOCALHOST_USDT = "0x700b6A60ce7EaaEA56F065753d8dcB9653dbAD35"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "retryable"}


def order(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "chain": "localhost",
        "asset": "USDT",
        "to": RECIPIENT,
        "amount": "12.5",
    }
    body.update(overrides)
    return body


@dataclass
class Caller:
    """One API client: its id, its key and an HTTP session that sends the key."""

    id: uuid.UUID
    key: str
    http: httpx.Client

    def create(self, body: Any = None, idempotency_key: str | None = None) -> httpx.Response:
        return self.http.post(
            "/v1/withdrawals",
            json=order() if body is None else body,
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )

    def created(self, **overrides: Any) -> dict[str, Any]:
        response = self.create(order(**overrides))
        assert response.status_code == 201, response.text
        return response.json()

    def list(self, **params: Any) -> httpx.Response:
        return self.http.get("/v1/withdrawals", params=params)


@pytest.fixture
def callers(db: Conn, api: Api) -> Iterator[dict[str, Caller]]:
    made: dict[str, Caller] = {}
    for name in ("acme", "globex"):
        client_id, key = make_client(db, name)
        made[name] = Caller(client_id, key, api.client(key))
    yield made
    for caller in made.values():
        caller.http.close()


@pytest.fixture
def acme(callers: dict[str, Caller]) -> Caller:
    return callers["acme"]


@pytest.fixture
def globex(callers: dict[str, Caller]) -> Caller:
    return callers["globex"]


def assert_problem(response: httpx.Response, status: int, code: str, *, retryable: bool = False) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_FIELDS <= set(body), body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:payouts:problem:{code}"
    assert body["title"] and body["detail"]
    assert body["retryable"] is retryable
    return body


def count(db: Conn, sql: str, *params: Any) -> int:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return int(row["n"])


def nothing_written(db: Conn) -> bool:
    return (
        count(db, "SELECT count(*) AS n FROM withdrawals") == 0
        and count(db, "SELECT count(*) AS n FROM procrastinate_jobs") == 0
    )


def move_to(db: Conn, withdrawal_id: str, *path: str) -> None:
    for status in path:
        db.execute("UPDATE withdrawals SET status = %s WHERE id = %s", (status, withdrawal_id))


def events(db: Conn, withdrawal_id: str) -> list[tuple[str | None, str]]:
    rows = db.execute(
        "SELECT from_status, to_status FROM withdrawal_events WHERE withdrawal_id = %s ORDER BY id",
        (withdrawal_id,),
    ).fetchall()
    return [(r["from_status"], r["to_status"]) for r in rows]


# --- creating a withdrawal -------------------------------------------------------------------


def test_create_answers_201_with_the_withdrawal(acme: Caller, db: Conn) -> None:
    response = acme.create(order(to=RECIPIENT.lower(), amount="12.50", reference="order-1"))
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    withdrawal_id = str(uuid.UUID(body["id"]))
    assert response.headers["location"] == f"/v1/withdrawals/{withdrawal_id}"
    assert body["status"] == "PENDING"
    assert (body["chain"], body["asset"]) == ("localhost", "USDT")
    assert body["to"] == RECIPIENT  # checksummed whatever case was sent
    assert (body["amount"], body["amount_base_units"]) == ("12.5", "12500000")
    assert body["reference"] == "order-1"
    assert body["failure"] is None
    created_at = datetime.fromisoformat(body["created_at"])
    assert created_at.tzinfo is not None

    row = db.execute("SELECT * FROM withdrawals WHERE id = %s", (withdrawal_id,)).fetchone()
    assert row is not None
    assert row["client_id"] == acme.id
    assert row["status"] == "PENDING"
    assert row["to_address"] == RECIPIENT
    assert int(row["amount"]) == 12_500_000
    assert row["created_at"] == created_at
    assert events(db, withdrawal_id) == [(None, "PENDING")]


def test_create_enqueues_the_validate_job_in_the_same_commit(acme: Caller, db: Conn) -> None:
    withdrawal_id = acme.created()["id"]
    jobs = db.execute("SELECT queue_name, task_name, args, status, xmin::text AS tx FROM procrastinate_jobs").fetchall()
    assert [(j["queue_name"], j["task_name"], j["args"], j["status"]) for j in jobs] == [
        ("validate", "validate", {"chain": "localhost"}, "todo")
    ]
    row = db.execute("SELECT xmin::text AS tx FROM withdrawals WHERE id = %s", (withdrawal_id,)).fetchone()
    assert row is not None
    assert row["tx"] == jobs[0]["tx"], "the row and its job were written by different transactions"


def test_create_queues_no_validate_job_while_one_runs(acme: Caller, db: Conn) -> None:
    acme.created()
    # A worker takes the job: while it runs, it looks for new withdrawals itself before it ends.
    db.execute("UPDATE procrastinate_jobs SET status = 'doing'")
    acme.created()
    acme.created()
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs") == 1
    db.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
    acme.created()
    todo = db.execute("SELECT args FROM procrastinate_jobs WHERE status = 'todo'").fetchall()
    assert todo == [{"args": {"chain": "localhost"}}]


def test_native_coin_withdrawal(acme: Caller) -> None:
    body = acme.created(asset="ETH", amount="0.000001")
    assert (body["asset"], body["amount"], body["amount_base_units"]) == (
        "ETH",
        "0.000001",
        "1000000000000",
    )


def test_get_returns_what_create_returned(acme: Caller) -> None:
    created = acme.created()
    response = acme.http.get(f"/v1/withdrawals/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


INVALID_ORDERS = [
    pytest.param({"chain": "solana"}, "chain_unknown", "chain", id="chain_unknown"),
    pytest.param({"chain": "ethereum"}, "chain_disabled", "chain", id="chain_disabled"),
    pytest.param({"asset": "DOGE"}, "asset_unknown", "asset", id="asset_unknown"),
    pytest.param({"asset": "usdt"}, "asset_unknown", "asset", id="asset_is_case_sensitive"),
    pytest.param({"to": "0x1234"}, "address_invalid", "to", id="address_invalid"),
    pytest.param({"to": "vitalik.eth"}, "address_invalid", "to", id="address_ens_name"),
    pytest.param(
        {"to": RECIPIENT.replace("C51", "c51")},
        "address_checksum_mismatch",
        "to",
        id="address_checksum_mismatch",
    ),
    pytest.param({"to": "0x" + "0" * 40}, "address_zero", "to", id="address_zero"),
    pytest.param({"to": LOCALHOST_USDT}, "address_is_token_contract", "to", id="address_is_token_contract"),
    pytest.param(
        {"to": LOCALHOST_USDT.lower()},
        "address_is_token_contract",
        "to",
        id="address_is_token_contract_lowercase",
    ),
    pytest.param({"amount": "1e5"}, "amount_invalid", "amount", id="amount_exponent"),
    pytest.param({"amount": "-1"}, "amount_invalid", "amount", id="amount_negative"),
    pytest.param({"amount": "1,000"}, "amount_invalid", "amount", id="amount_separator"),
    pytest.param({"amount": "١"}, "amount_invalid", "amount", id="amount_arabic_digit"),
    pytest.param({"amount": "0.0000001"}, "amount_too_precise", "amount", id="amount_too_precise"),
    pytest.param({"amount": "0"}, "amount_not_positive", "amount", id="amount_zero"),
    pytest.param({"amount": "0.000"}, "amount_not_positive", "amount", id="amount_zero_with_places"),
    pytest.param({"amount": "0.009"}, "amount_below_minimum", "amount", id="amount_below_minimum"),
    pytest.param({"amount": "1000000.01"}, "amount_above_maximum", "amount", id="amount_above_maximum"),
    pytest.param({"amount": str(2**256)}, "amount_too_large", "amount", id="amount_too_large"),
]


@pytest.mark.parametrize(("overrides", "code", "field"), INVALID_ORDERS)
def test_invalid_orders_are_refused(acme: Caller, db: Conn, overrides: dict[str, str], code: str, field: str) -> None:
    body = assert_problem(acme.create(order(**overrides)), 422, code)
    assert [(e["field"], e["code"]) for e in body["errors"]] == [(field, code)]
    assert body["instance"] == "/v1/withdrawals"
    assert nothing_written(db)


def test_own_wallet_is_refused_as_recipient(acme: Caller, db: Conn) -> None:
    wallets.upsert_wallet(db, "localhost", RECIPIENT, "hot", None)
    body = assert_problem(acme.create(order(to=RECIPIENT.lower())), 422, "address_is_own_wallet")
    assert body["errors"][0]["field"] == "to"
    assert nothing_written(db)
    # The same address on another chain is not ours there.
    db.execute("UPDATE hot_wallets SET chain = 'polygon'")
    assert acme.create(order()).status_code == 201


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        pytest.param(order(amount=12.5), "amount", "string_type", id="amount_as_json_float"),
        pytest.param(order(amount=12), "amount", "string_type", id="amount_as_json_int"),
        pytest.param(order(fee="0"), "fee", "unknown_field", id="unknown_field"),
        pytest.param({k: v for k, v in order().items() if k != "to"}, "to", "missing_field", id="missing_to"),
        pytest.param(order(chain=""), "chain", "string_too_short", id="empty_chain"),
        pytest.param(
            order(reference="tab\there"),
            "reference",
            "string_pattern_mismatch",
            id="reference_control",
        ),
        pytest.param(order(reference="x" * 129), "reference", "string_too_long", id="reference_too_long"),
        pytest.param([order()], "body", "model_type", id="json_array"),
        pytest.param(None, "body", "model_type", id="json_null"),
    ],
)
def test_bodies_that_do_not_match_the_schema(acme: Caller, db: Conn, body: Any, field: str, code: str) -> None:
    response = acme.http.post(
        "/v1/withdrawals",
        content=json.dumps(body),
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422, "invalid_request")
    assert (field, code) in [(e["field"], e["code"]) for e in problem["errors"]]
    assert nothing_written(db)


@pytest.mark.parametrize("content", [b"{", b"", b'{"chain": "localhost",}', b"\xff\xfe"])
def test_malformed_json_is_400(acme: Caller, db: Conn, content: bytes) -> None:
    response = acme.http.post(
        "/v1/withdrawals",
        content=content,
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")
    assert nothing_written(db)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(acme: Caller, db: Conn, content_type: str | None) -> None:
    headers = {"Idempotency-Key": "k1"} | ({"Content-Type": content_type} if content_type else {})
    response = acme.http.post("/v1/withdrawals", content=json.dumps(order()).encode(), headers=headers)
    assert_problem(response, 415, "unsupported_media_type")
    assert nothing_written(db)


def test_json_content_type_with_charset_is_accepted(acme: Caller) -> None:
    response = acme.http.post(
        "/v1/withdrawals",
        content=json.dumps(order()).encode(),
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


def oversized_order() -> bytes:
    return json.dumps(order(reference="x" * (17 * 1024))).encode()


def test_oversized_body_is_413(acme: Caller, db: Conn) -> None:
    response = acme.http.post(
        "/v1/withdrawals",
        content=oversized_order(),
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "body_too_large")
    assert nothing_written(db)


def test_oversized_chunked_body_is_413(acme: Caller, db: Conn) -> None:
    data = oversized_order()
    chunks = iter([data[i : i + 1024] for i in range(0, len(data), 1024)])  # no Content-Length
    response = acme.http.post(
        "/v1/withdrawals",
        content=chunks,
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "body_too_large")
    assert nothing_written(db)


def test_a_chunked_body_within_the_limit_is_read_whole(acme: Caller, db: Conn) -> None:
    data = json.dumps(order(amount="12.5", reference="r" * 100)).encode()
    chunks = iter([data[i : i + 16] for i in range(0, len(data), 16)])  # no Content-Length
    response = acme.http.post(
        "/v1/withdrawals",
        content=chunks,
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 201, response.text
    assert (response.json()["amount"], response.json()["reference"]) == ("12.5", "r" * 100)
    assert count(db, "SELECT count(*) AS n FROM withdrawals WHERE reference = %s", "r" * 100) == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "idempotency_key_missing", id="missing"),
        pytest.param({"Idempotency-Key": ""}, "idempotency_key_missing", id="empty"),
        pytest.param({"Idempotency-Key": "k" * 256}, "idempotency_key_invalid", id="too_long"),
        pytest.param({"Idempotency-Key": b"caf\xe9"}, "idempotency_key_invalid", id="not_ascii"),
    ],
)
def test_idempotency_key_is_required(acme: Caller, db: Conn, headers: dict[str, Any], code: str) -> None:
    response = acme.http.post("/v1/withdrawals", json=order(), headers=headers)
    assert_problem(response, 400, code)
    assert nothing_written(db)


def test_longest_idempotency_key_is_accepted(acme: Caller) -> None:
    assert acme.create(idempotency_key="k" * 255).status_code == 201


# --- idempotency -----------------------------------------------------------------------------


def test_same_key_and_body_replays_the_withdrawal(acme: Caller, db: Conn) -> None:
    first = acme.create(order(amount="12.50"), idempotency_key="pay-1")
    assert first.status_code == 201
    # Same meaning, other spelling: trailing zeros and the address's case do not matter.
    again = acme.create(order(amount="12.5", to=RECIPIENT.lower()), idempotency_key="pay-1")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 1
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs") == 1
    assert count(db, "SELECT count(*) AS n FROM withdrawal_events") == 1


def test_same_key_with_another_body_is_refused(acme: Caller, db: Conn) -> None:
    first = acme.created()
    response = acme.create(order(amount="13"), idempotency_key="pay-1")
    assert response.status_code == 201  # a new key: a new withdrawal
    for other in (order(amount="14"), order(asset="ETH", amount="1"), order(reference="x")):
        assert_problem(acme.create(other, idempotency_key="pay-1"), 422, "idempotency_key_reused")
    # An order that breaks the rules, under a used key, is still a reuse of the key.
    assert_problem(acme.create(order(chain="solana"), idempotency_key="pay-1"), 422, "idempotency_key_reused")
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 2
    assert acme.http.get(f"/v1/withdrawals/{first['id']}").json()["amount"] == "12.5"


def test_replay_succeeds_after_the_rules_changed(acme: Caller, db: Conn) -> None:
    first = acme.create(idempotency_key="pay-1")
    assert first.status_code == 201
    wallets.upsert_wallet(db, "localhost", RECIPIENT, "hot", None)
    again = acme.create(idempotency_key="pay-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


def test_idempotency_keys_are_per_client(acme: Caller, globex: Caller, db: Conn) -> None:
    a = acme.create(idempotency_key="pay-1")
    b = globex.create(idempotency_key="pay-1")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 2


def test_concurrent_identical_requests_create_one_withdrawal(acme: Caller, api: Api, db: Conn) -> None:
    async def fire() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {acme.key}", "Idempotency-Key": "burst-1"}
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=api.url, headers=headers, limits=limits, timeout=30) as http:
            return await asyncio.gather(*(http.post("/v1/withdrawals", json=order()) for _ in range(50)))

    responses = asyncio.run(fire())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 201}, [r.text for r in responses if r.status_code not in (200, 201)]
    assert statuses.count(201) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 1
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs") == 1
    assert count(db, "SELECT count(*) AS n FROM withdrawal_events") == 1


# --- authentication and isolation ------------------------------------------------------------


def test_requests_without_a_valid_key_are_401(api: Api, acme: Caller, db: Conn) -> None:
    created = acme.created()
    with api.client() as anonymous:
        calls = [
            lambda: anonymous.get("/v1/withdrawals"),
            lambda: anonymous.get(f"/v1/withdrawals/{created['id']}"),
            lambda: anonymous.post(f"/v1/withdrawals/{created['id']}/cancel"),
            lambda: anonymous.post("/v1/withdrawals", json=order(), headers={"Idempotency-Key": "k2"}),
        ]
        for call in calls:
            response = call()
            assert_problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"].startswith("Bearer")
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer " + "x" * 200, acme.key):
            response = anonymous.get("/v1/withdrawals", headers={"Authorization": header})
            assert_problem(response, 401, "unauthenticated")
    with api.client("pk_not-a-real-key") as stranger:
        assert_problem(stranger.get("/v1/withdrawals"), 401, "invalid_api_key")
        # An unknown key hears 401 whatever its request: valid, invalid, or without Idempotency-Key.
        for body, headers in (
            (order(), {"Idempotency-Key": "k3"}),
            (order(amount="-1"), {"Idempotency-Key": "k4"}),
            (order(), {}),
        ):
            assert_problem(stranger.post("/v1/withdrawals", json=body, headers=headers), 401, "invalid_api_key")
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs") == 1  # the one withdrawal's job
    assert count(db, "SELECT count(*) AS n FROM withdrawals") == 1
    assert acme.http.get(f"/v1/withdrawals/{created['id']}").json()["status"] == "PENDING"


def test_revoked_keys_and_disabled_clients_are_401(acme: Caller, globex: Caller, db: Conn) -> None:
    assert acme.list().status_code == 200
    assert clients.revoke_keys(db, acme.id) == 1
    assert_problem(acme.list(), 401, "invalid_api_key")
    assert_problem(acme.create(), 401, "invalid_api_key")
    db.execute("UPDATE api_clients SET disabled_at = now() WHERE id = %s", (globex.id,))
    assert_problem(globex.list(), 401, "invalid_api_key")
    assert nothing_written(db)


def test_a_client_never_sees_another_clients_withdrawal(acme: Caller, globex: Caller, db: Conn) -> None:
    mine = acme.created()
    assert_problem(globex.http.get(f"/v1/withdrawals/{mine['id']}"), 404, "withdrawal_not_found")
    assert_problem(globex.http.post(f"/v1/withdrawals/{mine['id']}/cancel"), 404, "withdrawal_not_found")
    listed = globex.list()
    assert listed.status_code == 200
    assert listed.json() == {"data": [], "next_cursor": None}
    assert acme.http.get(f"/v1/withdrawals/{mine['id']}").json()["status"] == "PENDING"
    assert events(db, mine["id"]) == [(None, "PENDING")]


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path_id", [str(uuid.uuid4()), "not-a-uuid", "1", "x" * 300])
def test_unknown_or_malformed_ids_are_404(acme: Caller, path_id: str) -> None:
    acme.created()
    assert_problem(acme.http.get(f"/v1/withdrawals/{path_id}"), 404, "withdrawal_not_found")
    assert_problem(acme.http.post(f"/v1/withdrawals/{path_id}/cancel"), 404, "withdrawal_not_found")


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [w["id"] for w in response.json()["data"]]


def test_list_filters(acme: Caller, db: Conn) -> None:
    usdt = [acme.created()["id"] for _ in range(3)]
    eth = [acme.created(asset="ETH", amount="1")["id"] for _ in range(2)]
    canceled = usdt[1]
    assert acme.http.post(f"/v1/withdrawals/{canceled}/cancel").status_code == 200
    move_to(db, eth[0], "VALIDATING")
    newest_first = list(reversed(usdt + eth))

    assert ids(acme.list()) == newest_first
    assert ids(acme.list(status="CANCELED")) == [canceled]
    assert ids(acme.list(status="PENDING,VALIDATING")) == [i for i in newest_first if i != canceled]
    assert ids(acme.list(status=" VALIDATING , CANCELED ")) == [eth[0], canceled]
    assert ids(acme.list(status=["VALIDATING", "CANCELED"])) == [eth[0], canceled]
    assert ids(acme.list(chain="localhost")) == newest_first
    assert ids(acme.list(chain="polygon")) == []
    assert ids(acme.list(asset="ETH")) == list(reversed(eth))
    assert ids(acme.list(asset="ETH", status="PENDING")) == [eth[1]]
    for bad in ("pending", "DONE", "PENDING,DONE", ","):
        body = assert_problem(acme.list(status=bad), 400, "invalid_query")
        assert body["errors"][0]["field"] == "status"


def test_list_time_window(acme: Caller) -> None:
    created = [acme.created() for _ in range(5)]
    middle = created[2]["created_at"]
    assert ids(acme.list(created_from=middle)) == [w["id"] for w in reversed(created[2:])]
    assert ids(acme.list(created_to=middle)) == [w["id"] for w in reversed(created[:2])]
    assert ids(acme.list(created_from=created[1]["created_at"], created_to=created[3]["created_at"])) == [
        created[2]["id"],
        created[1]["id"],
    ]
    assert ids(acme.list(created_from="2000-01-01T00:00:00+05:00", created_to="2000-01-02T00:00:00Z")) == []
    for param in ("created_from", "created_to"):
        for bad in ("2026-01-01T00:00:00", "2026-01-01", "yesterday", "2026-13-01T00:00:00Z"):
            body = assert_problem(acme.list(**{param: bad}), 400, "invalid_query")
            assert body["errors"][0]["field"] == param


def test_list_limit_bounds(acme: Caller) -> None:
    made = [acme.created()["id"] for _ in range(3)]
    assert ids(acme.list(limit=1)) == made[-1:]
    assert ids(acme.list(limit=200)) == list(reversed(made))
    for bad in ("0", "201", "-1", "abc", "", "1.5", "²", "١", "9" * 5000):
        body = assert_problem(acme.list(limit=bad), 400, "invalid_query")
        assert body["errors"][0]["field"] == "limit"


def test_list_refuses_unknown_parameters(acme: Caller) -> None:
    body = assert_problem(acme.list(sort="asc"), 400, "invalid_query")
    assert body["errors"][0]["field"] == "sort"


@pytest.mark.parametrize("param", ["chain", "asset"])
def test_list_refuses_text_postgres_cannot_hold(acme: Caller, param: str) -> None:
    body = assert_problem(acme.list(**{param: "local\x00host"}), 400, "invalid_query")
    assert body["errors"][0]["field"] == param


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "",
        b64(b"not json"),
        b64(b"\xff\xfe"),
        b64(b"[1, 2]"),
        b64(b'["2026-01-01T00:00:00+00:00"]'),
        b64(b'["2026-01-01T00:00:00+00:00", "not-a-uuid"]'),
        b64(b'["yesterday", "' + str(uuid.uuid4()).encode() + b'"]'),
        b64(b'{"a": 1}'),
    ],
)
def test_bad_cursor_is_400(acme: Caller, cursor: str) -> None:
    acme.created()
    assert_problem(acme.list(cursor=cursor), 400, "invalid_cursor")


def test_cursor_pagination_returns_each_withdrawal_once(acme: Caller, globex: Caller) -> None:
    made = [acme.created(amount=str(i + 1))["id"] for i in range(25)]
    globex.created()
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        response = acme.list(**params)
        pages.append(ids(response))
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5, "pagination does not end"
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for page in pages for i in page] == list(reversed(made))


def test_pagination_is_stable_when_rows_share_a_timestamp(acme: Caller, db: Conn) -> None:
    made = [acme.created()["id"] for _ in range(7)]
    db.execute("UPDATE withdrawals SET created_at = '2026-01-01T00:00:00Z'")
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        response = acme.list(limit=3, **({"cursor": cursor} if cursor else {}))
        seen += ids(response)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert seen == sorted(made, key=uuid.UUID, reverse=True)


def test_a_full_last_page_has_no_next_cursor(acme: Caller) -> None:
    for _ in range(4):
        acme.created()
    first = acme.list(limit=2).json()
    assert first["next_cursor"] is not None
    second = acme.list(limit=2, cursor=first["next_cursor"]).json()
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None


# --- canceling -------------------------------------------------------------------------------


def test_cancel_pending(acme: Caller, db: Conn) -> None:
    created = acme.created()
    response = acme.http.post(f"/v1/withdrawals/{created['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "CANCELED"
    assert body["status_note"] == "canceled by the client"
    assert events(db, created["id"]) == [(None, "PENDING"), ("PENDING", "CANCELED")]
    again = acme.http.post(f"/v1/withdrawals/{created['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "CANCELED"
    assert events(db, created["id"]) == [(None, "PENDING"), ("PENDING", "CANCELED")]
    assert acme.http.get(f"/v1/withdrawals/{created['id']}").json()["status"] == "CANCELED"


def test_cancel_validating(acme: Caller, db: Conn) -> None:
    created = acme.created()
    move_to(db, created["id"], "VALIDATING")
    response = acme.http.post(f"/v1/withdrawals/{created['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELED"
    assert events(db, created["id"])[-1] == ("VALIDATING", "CANCELED")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (("VALIDATING", "SIGNING"), "withdrawal_being_signed"),
        # BROADCASTED with no transaction on record (moved here by SQL): nothing to cancel on chain.
        (("VALIDATING", "SIGNING", "SIGNED", "BROADCASTING", "BROADCASTED"), "withdrawal_not_cancelable"),
        (("FAILED",), "withdrawal_not_cancelable"),
    ],
)
def test_too_late_to_cancel_is_409(acme: Caller, db: Conn, path: tuple[str, ...], code: str) -> None:
    created = acme.created()
    move_to(db, created["id"], *path)
    retryable = code == "withdrawal_being_signed"
    body = assert_problem(acme.http.post(f"/v1/withdrawals/{created['id']}/cancel"), 409, code, retryable=retryable)
    if not retryable:
        assert path[-1] in body["detail"]
    row = db.execute("SELECT status FROM withdrawals WHERE id = %s", (created["id"],)).fetchone()
    assert row == {"status": path[-1]}
    assert len(events(db, created["id"])) == 1 + len(path)


# --- service endpoints -----------------------------------------------------------------------


def test_healthz(api: Api) -> None:
    with api.client() as http:
        response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_document(api: Api) -> None:
    with api.client() as http:
        document = http.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    operations = {
        (path, method): op["operationId"]
        for path, item in document["paths"].items()
        for method, op in item.items()
        if path.startswith("/v1/")
    }
    assert operations == {
        ("/v1/withdrawals", "post"): "createWithdrawal",
        ("/v1/withdrawals", "get"): "listWithdrawals",
        ("/v1/withdrawals/{withdrawal_id}", "get"): "getWithdrawal",
        ("/v1/withdrawals/{withdrawal_id}/cancel", "post"): "cancelWithdrawal",
    }
    schemas = document["components"]["schemas"]
    assert {"CreateWithdrawal", "Withdrawal", "WithdrawalPage", "Problem"} <= set(schemas)
    assert schemas["CreateWithdrawal"]["additionalProperties"] is False
    refs = set(find_refs(document))
    assert "#/components/schemas/CreateWithdrawal" in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rpartition("/")[2] in schemas, ref


def find_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from find_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from find_refs(item)


def test_docs_page_is_html(api: Api) -> None:
    with api.client() as http:
        response = http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


def test_unknown_routes_and_methods_are_problems(acme: Caller) -> None:
    assert_problem(acme.http.get("/v2/withdrawals"), 404, "not_found")
    assert_problem(acme.http.delete("/v1/withdrawals"), 405, "method_not_allowed")


def test_a_key_given_twice_is_refused(api, db) -> None:  # type: ignore[no-untyped-def]
    _, key = make_client(db, "dup-keys")
    with api.client(key) as http:
        r = http.post(
            "/v1/withdrawals",
            headers={"Idempotency-Key": "dup-1", "Content-Type": "application/json"},
            content=b'{"chain": "localhost", "asset": "USDT", '
            b'"to": "0x976EA74026E726554dB657fA54763abd0C3a0aa9", "amount": "1", "amount": "2"}',
        )
    assert r.status_code == 400
    assert r.json()["code"] == "duplicate_key"
    assert db.execute("SELECT count(*) AS n FROM withdrawals").fetchone()["n"] == 0
