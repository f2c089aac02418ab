"""EVM addresses as the API accepts them."""

from __future__ import annotations

import re

from eth_utils import to_checksum_address

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
ZERO_ADDRESS = "0x" + "0" * 40


class AddressError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_address(text: str) -> str:
    """Return the EIP-55 checksummed form; enforce the checksum when the input is mixed case."""
    if not _HEX_ADDRESS.fullmatch(text):
        raise AddressError("address_invalid", "address must be 0x followed by 40 hex digits")
    checksummed = to_checksum_address(text)
    body = text[2:]
    mixed_case = body != body.lower() and body != body.upper()
    if mixed_case and text != checksummed:
        raise AddressError(
            "address_checksum_mismatch",
            "address has mixed case but fails its EIP-55 checksum (a typo?)",
        )
    if checksummed == ZERO_ADDRESS:
        raise AddressError("address_zero", "the zero address cannot receive a withdrawal")
    return checksummed
