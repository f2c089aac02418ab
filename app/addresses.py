"""EVM addresses as the API accepts them."""

from __future__ import annotations

import re

from sha3 import keccak_256

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
ZERO_ADDRESS = "0x" + "0" * 40
_HEX = b"0123456789abcdef"
# Per hex digit, 0x20 (the bit between a lower and an upper case ASCII letter) where it counts:
# a digit of the hash from 8 up makes the address letter beside it upper case (EIP-55), and only
# letters have a case.
_HASH_UPPERS = bytes.maketrans(_HEX, b"\0" * 8 + b"\x20" * 8)
_LETTERS = bytes.maketrans(_HEX, b"\0" * 10 + b"\x20" * 6)


class AddressError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _checksummed(body: str) -> str:
    """The EIP-55 spelling of an address given as its 40 hex digits (any case).

    eth_utils' to_checksum_address does the same behind several layers of argument checks that
    cost about three times as much; the API runs this on every create, so the letters change case
    in one integer operation rather than one by one, and the hash is one C call."""
    lower = body.lower().encode("ascii")
    digits = keccak_256(lower).hexdigest()[:40].encode("ascii")
    flips = int.from_bytes(digits.translate(_HASH_UPPERS), "big") & int.from_bytes(lower.translate(_LETTERS), "big")
    return "0x" + (int.from_bytes(lower, "big") ^ flips).to_bytes(40, "big").decode("ascii")


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
