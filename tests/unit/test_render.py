"""The API writes withdrawals as plain dicts (app/withdrawals.py render): the text must be the one
the published response models (app/schemas.py, the OpenAPI schemas) give for the same data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import to_json

from app.registry import load_registry
from app.schemas import Withdrawal, WithdrawalPage
from app.withdrawals import json_response, render
from db.states import WithdrawalStatus

REGISTRY = load_registry(environ={})
REQUEST: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(registry=REGISTRY)))

text = st.text(max_size=40)  # any characters: quotes, backslashes, controls, non-ASCII
optional_text = st.none() | text
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.sampled_from([UTC])
) | st.datetimes(timezones=st.just(timezone(timedelta(hours=-5, minutes=-30))))

rows = st.fixed_dictionaries(
    {
        "id": st.uuids(),
        "status": st.sampled_from([s.value for s in WithdrawalStatus]),
        # Known chains and assets (formatted in whole units) and ones the registry no longer has.
        "chain": st.sampled_from(["localhost", "ethereum", "gone"]) | text,
        "asset": st.sampled_from(["USDT", "ETH", "GONE"]) | text,
        "to_address": text,
        "amount": st.integers(min_value=0, max_value=2**256 - 1).map(Decimal),
        "reference": optional_text,
        "failure_code": optional_text,
        "failure_reason": optional_text,
        "status_note": optional_text,
        "created_at": moments,
        "updated_at": moments,
    },
    optional={
        "tx_hash": optional_text,
        "block_number": st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        "confirmations": st.none() | st.integers(min_value=0, max_value=2**31 - 1),
    },
)


@given(rows)
def test_a_withdrawal_reads_as_its_response_model_writes_it(row: dict[str, Any]) -> None:
    body = render(REQUEST, row)
    expected = Withdrawal.model_validate(body).model_dump_json().encode()
    assert to_json(body) == expected
    response = json_response(body, status_code=201)
    assert response.body == expected
    assert response.headers["content-type"] == "application/json"
    assert set(body) == set(Withdrawal.model_fields)


@given(st.lists(rows, max_size=3), st.none() | text)
def test_a_page_reads_as_its_response_model_writes_it(page: list[dict[str, Any]], cursor: str | None) -> None:
    body = {"data": [render(REQUEST, row) for row in page], "next_cursor": cursor}
    assert json_response(body).body == WithdrawalPage.model_validate(body).model_dump_json().encode()


def test_amounts_are_in_whole_units_of_a_known_asset_and_base_units_otherwise() -> None:
    now = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    row = {
        "id": uuid.UUID(int=7),
        "status": "PENDING",
        "chain": "localhost",
        "asset": "USDT",
        "to_address": "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
        "amount": Decimal(1_500_000),
        "reference": None,
        "failure_code": "insufficient_funds",
        "failure_reason": None,
        "status_note": None,
        "created_at": now,
        "updated_at": now,
    }
    decimals = REGISTRY.chains["localhost"].tokens["USDT"].decimals
    body = render(REQUEST, row)
    assert body["amount"] == str(Decimal(1_500_000) / 10**decimals).rstrip("0").rstrip(".")
    assert body["amount_base_units"] == "1500000"
    assert body["failure"] == {"code": "insufficient_funds", "reason": None}
    assert render(REQUEST, row | {"asset": "GONE"})["amount"] == "1500000"
    assert json_response(body).body.startswith(b'{"id":"00000000-0000-0000-0000-000000000007","status":"PENDING",')
