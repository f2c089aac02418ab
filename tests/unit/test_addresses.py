"""Recipient addresses: EIP-55 enforced on mixed case, single case accepted, zero refused."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import assume, given
from hypothesis import strategies as st

from app.addresses import ZERO_ADDRESS, AddressError, parse_address

KNOWN = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's second dev account


def eip55(body_hex: str) -> str:
    """EIP-55 written out from the spec, independent of the code under test."""
    lower = body_hex.lower()
    digest = keccak(text=lower).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))


def flip_case(text: str, index: int) -> str:
    c = text[index]
    return text[:index] + (c.lower() if c.isupper() else c.upper()) + text[index + 1 :]


def code_of(text: str) -> str:
    with pytest.raises(AddressError) as exc:
        parse_address(text)
    return exc.value.code


def test_known_checksummed_address_is_returned_unchanged() -> None:
    assert eip55(KNOWN[2:]) == KNOWN
    assert parse_address(KNOWN) == KNOWN


def test_single_case_spellings_are_accepted_and_checksummed() -> None:
    assert parse_address(KNOWN.lower()) == KNOWN
    assert parse_address("0x" + KNOWN[2:].upper()) == KNOWN


def test_mixed_case_with_a_wrong_checksum_is_refused() -> None:
    first_letter = next(i for i, c in enumerate(KNOWN) if i > 1 and c.isalpha())
    assert code_of(flip_case(KNOWN, first_letter)) == "address_checksum_mismatch"


@pytest.mark.parametrize("text", [ZERO_ADDRESS, ZERO_ADDRESS.upper().replace("0X", "0x")])
def test_zero_address_is_refused(text: str) -> None:
    assert code_of(text) == "address_zero"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0x",
        KNOWN[:-1],  # 39 hex digits
        KNOWN + "0",  # 41 hex digits
        KNOWN[2:],  # no 0x
        "0X" + KNOWN[2:],
        KNOWN[:-1] + "g",
        " " + KNOWN,
        KNOWN + "\n",
        "0x" + "0" * 64,  # a 32-byte value, not an address
        "vitalik.eth",
    ],
)
def test_malformed_addresses_are_invalid(text: str) -> None:
    assert code_of(text) == "address_invalid"


addresses = st.binary(min_size=20, max_size=20).filter(lambda b: any(b)).map(bytes.hex)


@given(addresses)
def test_every_spelling_of_an_address_yields_its_checksum(body: str) -> None:
    checksummed = eip55(body)
    assert parse_address("0x" + body.lower()) == checksummed
    assert parse_address("0x" + body.upper()) == checksummed
    assert parse_address(checksummed) == checksummed


@given(addresses, st.data())
def test_any_case_typo_in_a_mixed_case_address_is_caught(body: str, data: st.DataObject) -> None:
    checksummed = eip55(body)
    letters = [i for i, c in enumerate(checksummed) if i > 1 and c.isalpha()]
    assume(letters)
    typo = flip_case(checksummed, data.draw(st.sampled_from(letters)))
    typo_body = typo[2:]
    # Flipping the only letter of one case yields a single-case spelling, which carries no checksum.
    assume(typo_body not in (typo_body.lower(), typo_body.upper()))
    assert code_of(typo) == "address_checksum_mismatch"
