"""A create's body (app/withdrawals.py parse_create): a key given twice is refused however the
body spells it, and only then."""

from __future__ import annotations

import json
import random
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import ApiError
from app.withdrawals import parse_create

TO = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"
FIELDS = ["chain", "asset", "to", "amount", "reference"]


def code_of(body: bytes) -> str | None:
    try:
        parse_create(body, "application/json")
    except ApiError as exc:
        return exc.code
    return None


def spelled(key: str, escaped: list[bool]) -> str:
    """The key as JSON text, each character written as itself or as a \\u escape."""
    assert len(escaped) >= len(key)
    return '"' + "".join(f"\\u{ord(c):04x}" if e else c for c, e in zip(key, escaped, strict=False)) + '"'


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1"}}', None),
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1", "amount": "2"}}', "duplicate_key"),
        (
            f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1", "\\u0061mount": "2"}}',
            "duplicate_key",
        ),
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "\\u0061mount": "1"}}', None),
        # A value that spells a key's name is a value.
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1", "reference": "amount"}}', None),
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1", "reference": "\\"amount\\""}}', None),
        # Twice, unknown or invalid: the repeat is said first, as for a valid body.
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1", "x": 1, "x": 2}}', "duplicate_key"),
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": 1, "amount": 2}}', "duplicate_key"),
        (f'{{"chain": "localhost", "asset": "USDT", "to": "{TO}", "amount": "1", "x": 1}}', "invalid_request"),
        ('{"chain": "localhost", "chain": ', "malformed_json"),
    ],
)
def test_keys_given_twice(body: str, code: str | None) -> None:
    assert code_of(body.encode()) == code


def test_a_deeply_nested_body_is_malformed_json() -> None:
    # The API runs with Python's recursion limit (the tests import py_ecc, which raises it to
    # 100,000: deep enough for the JSON parser to overflow the C stack first).
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        assert code_of(b"[" * 16 * 1024) == "malformed_json"
    finally:
        sys.setrecursionlimit(limit)


VALID = {"chain": ["localhost"], "asset": ["USDT"], "to": [TO, TO.lower()], "amount": ["1.5", "2"]}
REFERENCES = st.one_of(
    st.none(),
    st.sampled_from([*FIELDS, '"amount"', '", "amount": "1', "a\\b", ""]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
)
item = st.sampled_from(FIELDS).flatmap(
    lambda key: st.tuples(st.just(key), REFERENCES if key == "reference" else st.sampled_from(VALID[key]))
)


@given(st.lists(item, max_size=4), st.randoms(use_true_random=False), st.lists(st.booleans(), min_size=72, max_size=72))
def test_a_valid_body_is_refused_exactly_when_a_key_repeats(
    extra: list[tuple[str, str | None]], rng: random.Random, escapes: list[bool]
) -> None:
    """Every field once with a valid value, plus more fields (valid values too), in any order,
    each key spelled with or without escapes."""
    items = [(key, values[0]) for key, values in VALID.items()] + extra
    rng.shuffle(items)
    text = ", ".join(
        f"{spelled(key, escapes[9 * n : 9 * n + 9])}: {json.dumps(value)}" for n, (key, value) in enumerate(items)
    )
    keys = [key for key, _ in items]
    expected = "duplicate_key" if len(keys) != len(set(keys)) else None
    assert code_of(("{" + text + "}").encode()) == expected
