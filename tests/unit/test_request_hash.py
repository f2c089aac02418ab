"""The fingerprint of a create (app/validation.py request_hash): what an idempotency key is
matched against, stored with every withdrawal, so its text must not change between releases."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from app.schemas import CreateWithdrawal
from app.validation import request_hash

TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def create(**fields: str) -> CreateWithdrawal:
    return CreateWithdrawal(**({"chain": "localhost", "asset": "USDT", "to": TO, "amount": "1.5"} | fields))


def test_the_fingerprint_is_the_sha256_of_the_compact_canonical_json() -> None:
    # Stored fingerprints of earlier withdrawals were made from exactly this text.
    text = b'["localhost","USDT","0x70997970c51812dc3a010c7d01b50e0d17dc79c8","1.5",null]'
    assert request_hash(create()) == hashlib.sha256(text).digest()
    text = b'["localhost","USDT","0x70997970c51812dc3a010c7d01b50e0d17dc79c8","2","order \\"7\\""]'
    assert request_hash(create(amount="2.000", reference='order "7"')) == hashlib.sha256(text).digest()


def test_spellings_of_one_request_share_a_fingerprint_and_other_requests_do_not() -> None:
    same = [create(), create(to=TO.lower()), create(amount="1.50"), create(to=TO.upper().replace("0X", "0x"))]
    assert len({request_hash(c) for c in same}) == 1
    others = [create(amount="15"), create(asset="ETH"), create(reference="a"), create(chain="polygon")]
    assert len({request_hash(c) for c in others + same[:1]}) == 5


@given(
    chain=st.text(),
    asset=st.text(),
    to=st.text(),
    amount=st.text(min_size=1).filter(lambda a: "." not in a),
    reference=st.none() | st.text(),
)
def test_the_fingerprint_text_is_what_json_dumps_writes_for_any_field_text(
    chain: str, asset: str, to: str, amount: str, reference: str | None
) -> None:
    # Any text, escapes and lone surrogates included, hashes as the json module writes it, so
    # fingerprints stored by earlier releases keep matching. (Amounts without a point are not trimmed.)
    body = CreateWithdrawal.model_construct(chain=chain, asset=asset, to=to, amount=amount, reference=reference)
    text = json.dumps([chain, asset, to.lower(), amount, reference], separators=(",", ":"))
    assert request_hash(body) == hashlib.sha256(text.encode()).digest()
