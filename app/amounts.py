"""Decimal strings in whole units <-> integers in base units. No floats (money rule 1)."""

from __future__ import annotations

import re

UINT256_MAX = 2**256 - 1
# Digits only: no sign, exponent, spaces or thousands separators. "12", "12.5", "0.000001".
DECIMAL_PATTERN = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")
MAX_AMOUNT_CHARS = 100


class AmountError(ValueError):
    """An amount string that is not a valid amount for the asset."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_units(text: str, decimals: int) -> int:
    """Parse "12.5" into base units (12_500_000 for 6 decimals); raise AmountError when invalid."""
    if len(text) > MAX_AMOUNT_CHARS:
        raise AmountError("amount_invalid", f"amount is longer than {MAX_AMOUNT_CHARS} characters")
    match = DECIMAL_PATTERN.fullmatch(text)
    if match is None:
        raise AmountError(
            "amount_invalid",
            'amount must be a plain decimal string such as "12.5" (digits, one optional point)',
        )
    whole, fraction = match.group(1), match.group(2) or ""
    fraction = fraction.rstrip("0")
    if len(fraction) > decimals:
        raise AmountError("amount_too_precise", f"amount has more than {decimals} decimal places for this asset")
    units = int(whole) * 10**decimals + (int(fraction.ljust(decimals, "0")) if fraction else 0)
    if units > UINT256_MAX:
        raise AmountError("amount_too_large", "amount does not fit in 256 bits of base units")
    return units


def format_units(units: int, decimals: int) -> str:
    """Format base units as the shortest decimal string: 12_500_000 with 6 decimals -> "12.5"."""
    if units < 0:
        raise ValueError("base units cannot be negative")
    whole, fraction = divmod(units, 10**decimals)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{str(fraction).rjust(decimals, '0').rstrip('0')}"
