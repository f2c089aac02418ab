"""EVM addresses as the API accepts them."""

from __future__ import annotations

import re

from eth_hash.auto import keccak

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
ZERO_ADDRESS = "0x" + "0" * 40
# Hex digits of the hash that make the address letter beside them upper case (EIP-55).
_UPPER = frozenset("89abcdef")


class AddressError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _checksummed(body: str) -> str:
    """The EIP-55 spelling of an address given as its 40 hex digits (any case).

    eth_utils' to_checksum_address does the same behind several layers of argument checks that
    cost about three times as much; the API runs this on every create."""
    lower = body.lower()
    digest = keccak(lower.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if d in _UPPER else c for c, d in zip(lower, digest, strict=False))


def parse_address(text: str) -> str:
    """Return the EIP-55 checksummed form; enforce the checksum when the input is mixed case."""
    if not _HEX_ADDRESS.fullmatch(text):
        raise AddressError("address_invalid", "address must be 0x followed by 40 hex digits")
    body = text[2:]
    result = _checksummed(body)
    mixed_case = body != body.lower() and body != body.upper()
    if mixed_case and text != result:
        raise AddressError(
            "address_checksum_mismatch",
            "address has mixed case but fails its EIP-55 checksum (a typo?)",
        )
    if result == ZERO_ADDRESS:
        raise AddressError("address_zero", "the zero address cannot receive a withdrawal")
    return result
