"""Decimal strings <-> base units: exact round trips, the uint256 bound, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.amounts import MAX_AMOUNT_CHARS, UINT256_MAX, AmountError, format_units, parse_units

decimals_st = st.integers(min_value=0, max_value=36)
units_st = st.integers(min_value=0, max_value=UINT256_MAX)


@st.composite
def decimal_strings(draw: st.DrawFn) -> tuple[str, int, str]:
    """(text, decimals, canonical form) for a valid amount that fits the asset's decimals."""
    decimals = draw(decimals_st)
    whole = draw(st.integers(min_value=0, max_value=10**40))
    fraction = draw(st.text(alphabet="0123456789", max_size=decimals))
    trailing = draw(st.text(alphabet="0", max_size=5))  # zeros past the last place are harmless
    fraction += trailing
    text = f"{whole}.{fraction}" if fraction else str(whole)
    significant = fraction.rstrip("0")
    canonical = f"{whole}.{significant}" if significant else str(whole)
    return text, decimals, canonical


@given(decimal_strings())
def test_format_of_parse_is_the_canonical_form(case: tuple[str, int, str]) -> None:
    text, decimals, canonical = case
    assert format_units(parse_units(text, decimals), decimals) == canonical


@given(decimal_strings())
def test_parse_is_exact(case: tuple[str, int, str]) -> None:
    text, decimals, _ = case
    whole, _, fraction = text.partition(".")
    expected = int(whole) * 10**decimals + int((fraction + "0" * 41)[:decimals] or "0")
    assert parse_units(text, decimals) == expected


@given(units_st, decimals_st)
def test_parse_of_format_is_the_identity(units: int, decimals: int) -> None:
    text = format_units(units, decimals)
    assert len(text) <= MAX_AMOUNT_CHARS
    assert parse_units(text, decimals) == units


@given(st.text(max_size=30), decimals_st)
def test_any_text_is_a_number_or_an_amount_error(text: str, decimals: int) -> None:
    try:
        units = parse_units(text, decimals)
    except AmountError as exc:
        assert exc.code in {"amount_invalid", "amount_too_precise", "amount_too_large"}
    else:
        assert text.isascii() and text.replace(".", "", 1).isdigit()
        assert 0 <= units <= UINT256_MAX


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        ("0", 6, 0),
        ("12.5", 6, 12_500_000),
        ("0.000001", 6, 1),
        ("1.0000000", 6, 1_000_000),
        ("1", 18, 10**18),
        ("7", 0, 7),
        ("7.000", 0, 7),
    ],
)
def test_known_values(text: str, decimals: int, units: int) -> None:
    assert parse_units(text, decimals) == units


def test_format_known_values() -> None:
    assert format_units(12_500_000, 6) == "12.5"
    assert format_units(1, 6) == "0.000001"
    assert format_units(10**18, 18) == "1"
    assert format_units(0, 18) == "0"
    assert format_units(UINT256_MAX, 0) == str(UINT256_MAX)


def test_format_refuses_negative_units() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_units(-1, 6)


def test_largest_uint256_parses_and_one_more_overflows() -> None:
    assert parse_units(str(UINT256_MAX), 0) == UINT256_MAX
    with pytest.raises(AmountError) as exc:
        parse_units(str(2**256), 0)
    assert exc.value.code == "amount_too_large"


@given(decimals_st)
def test_overflow_is_detected_at_every_precision(decimals: int) -> None:
    top = format_units(UINT256_MAX, decimals)
    assert parse_units(top, decimals) == UINT256_MAX
    one_unit_more = format_units(UINT256_MAX + 1, decimals)
    with pytest.raises(AmountError) as exc:
        parse_units(one_unit_more, decimals)
    assert exc.value.code == "amount_too_large"


@pytest.mark.parametrize(
    ("text", "decimals"),
    [("0.0000001", 6), ("1.5", 0), ("0.1234567890123456789", 18), ("1.10", 0)],
)
def test_more_places_than_the_asset_has_are_too_precise(text: str, decimals: int) -> None:
    with pytest.raises(AmountError) as exc:
        parse_units(text, decimals)
    assert exc.value.code == "amount_too_precise"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1e5",
        "1E5",
        " 1",
        "1 ",
        "1\n",
        "1.",
        ".5",
        "01",
        "00.5",
        "1,000",
        "1_000",
        "1.2.3",
        "0x10",
        "NaN",
        "Infinity",
        "١",  # ARABIC-INDIC DIGIT ONE: int() would take it, money must not
        "１",  # FULLWIDTH DIGIT ONE
        "²",
        "1" * (MAX_AMOUNT_CHARS + 1),
    ],
)
def test_refused_spellings(text: str) -> None:
    with pytest.raises(AmountError) as exc:
        parse_units(text, 6)
    assert exc.value.code == "amount_invalid"
