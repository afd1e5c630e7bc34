"""Money: exact parsing, single-currency arithmetic, rounding, formatting, allocation."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import CurrencyMismatch, InvalidAmount
from domain.money import MAX_AMOUNT_CHARS, Money, allocate

# --- parsing ---------------------------------------------------------------------------


def test_a_major_unit_string_parses_to_exact_minor_units() -> None:
    assert Money.parse("500.00", "EUR") == Money(50000, "EUR")
    assert Money.parse("0.01", "EUR") == Money(1, "EUR")
    assert Money.parse("1250", "EUR") == Money(125000, "EUR")


def test_integers_and_decimals_parse_like_their_text() -> None:
    assert Money.parse(500, "EUR") == Money.parse("500", "EUR")
    assert Money.parse(Decimal("12.34"), "USD") == Money(1234, "USD")


def test_surrounding_whitespace_is_ignored_when_parsing() -> None:
    assert Money.parse("  42.10 ", "EUR") == Money(4210, "EUR")


def test_an_amount_with_more_decimals_than_the_currency_allows_is_refused() -> None:
    with pytest.raises(InvalidAmount, match="more decimals"):
        Money.parse("1.005", "EUR")


def test_an_amount_with_many_more_decimals_than_decimal_precision_is_still_refused() -> None:
    # 29 significant digits: a parser that rounds to the default 28-digit context would
    # silently turn this into 1.00 EUR instead of refusing it.
    with pytest.raises(InvalidAmount):
        Money.parse("1.0000000000000000000000000001", "EUR")


def test_trailing_zeros_beyond_the_minor_unit_do_not_change_the_amount() -> None:
    assert Money.parse("7.500", "EUR") == Money(750, "EUR")


@pytest.mark.parametrize("value", [0.1, 500.0, 1e3])
def test_floats_are_refused_even_when_they_look_exact(value: float) -> None:
    with pytest.raises(InvalidAmount, match="float"):
        Money.parse(value, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "abc", "12,50", "1.2.3", "NaN", "Infinity", "-inf"])
def test_text_that_is_not_a_finite_number_is_refused(value: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(value, "EUR")


def test_yen_has_no_minor_unit_so_whole_yen_parse_and_fractions_are_refused() -> None:
    assert Money.parse("1250", "JPY") == Money(1250, "JPY")
    with pytest.raises(InvalidAmount, match="more decimals"):
        Money.parse("1.5", "JPY")


def test_an_unknown_currency_is_refused_rather_than_guessed() -> None:
    with pytest.raises(InvalidAmount, match="unsupported currency"):
        Money.parse("1.00", "XYZ")
    with pytest.raises(InvalidAmount, match="unsupported currency"):
        Money(100, "BTC")


@pytest.mark.parametrize("value", [1.5, Decimal("1"), True, "100"])
def test_money_holds_only_integer_minor_units(value: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(value, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1E10000000", "1E100000000", "1e-100000000", "5E+999"])
def test_an_exponent_of_more_than_two_digits_is_refused_before_any_arithmetic(
    value: str,
) -> None:
    # Decimal would build a number of 10**8 digits first; the parser refuses the text.
    with pytest.raises(InvalidAmount, match="exponent of more than two digits"):
        Money.parse(value, "EUR")


def test_a_two_digit_exponent_is_still_an_amount() -> None:
    assert Money.parse("1.5e3", "EUR") == Money(150000, "EUR")
    assert Money.parse("1e30", "EUR") == Money(10**32, "EUR")


def test_amount_text_longer_than_the_bound_is_refused_whatever_it_holds() -> None:
    with pytest.raises(InvalidAmount, match=f"longer than {MAX_AMOUNT_CHARS} characters"):
        Money.parse("1" * (MAX_AMOUNT_CHARS + 1), "EUR")
    assert Money.parse("1" * (MAX_AMOUNT_CHARS - 3) + ".00", "EUR").amount_minor > 0


def test_numbers_with_more_digits_or_a_larger_exponent_than_the_bound_are_refused() -> None:
    with pytest.raises(InvalidAmount, match="more than 64 digits"):
        Money.parse(10**MAX_AMOUNT_CHARS, "EUR")
    with pytest.raises(InvalidAmount, match="more than 64 digits"):
        Money.parse(Decimal("1E+100000000"), "EUR")
    with pytest.raises(InvalidAmount, match="more than 64 digits"):
        Money.parse(Decimal("1" * 100), "EUR")


@pytest.mark.parametrize(
    "value", ["1_000", "\u0661\u0660\u0660", "\uff11\uff10", "1 000", "0x10", "1e", "e5", "."]
)
def test_only_plain_ascii_digits_are_an_amount(value: str) -> None:
    # Decimal() itself accepts "1_000" and Arabic-Indic or full-width digits.
    with pytest.raises(InvalidAmount, match="is not an amount"):
        Money.parse(value, "EUR")


def test_a_boolean_is_not_an_amount() -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(True, "EUR")


# --- arithmetic ------------------------------------------------------------------------


def test_amounts_of_one_currency_add_subtract_and_negate() -> None:
    a, b = Money(1050, "EUR"), Money(250, "EUR")
    assert a + b == Money(1300, "EUR")
    assert a - b == Money(800, "EUR")
    assert -b == Money(-250, "EUR")


def test_amounts_of_one_currency_compare_by_value() -> None:
    small, large = Money(100, "EUR"), Money(200, "EUR")
    assert small < large
    assert small <= Money(100, "EUR")
    assert large > small
    assert large >= Money(200, "EUR")
    assert small.min(large) == small
    assert large.min(small) == small


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
        lambda a, b: a.min(b),
    ],
    ids=["add", "sub", "lt", "le", "gt", "ge", "min"],
)
def test_arithmetic_and_comparison_refuse_mixed_currencies(operation: object) -> None:
    with pytest.raises(CurrencyMismatch, match="EUR and USD"):
        operation(Money(100, "EUR"), Money(100, "USD"))  # type: ignore[operator]


def test_equal_minor_units_in_different_currencies_are_not_equal() -> None:
    assert Money(100, "EUR") != Money(100, "USD")


def test_zero_is_zero_in_its_currency() -> None:
    zero = Money.zero("GBP")
    assert zero.is_zero
    assert zero.currency == "GBP"
    assert not Money(1, "GBP").is_zero


# --- percent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "rate", "expected"),
    [
        (250, "1", 2),  # 2.5 -> 2 (to even)
        (350, "1", 4),  # 3.5 -> 4 (to even)
        (-250, "1", -2),  # -2.5 -> -2 (to even)
        (251, "1", 3),  # 2.51 -> 3 (plain rounding above half)
        (100000, "15", 15000),  # exact
        (333, "33.3", 111),  # 110.889 -> 111
    ],
)
def test_percent_rounds_half_to_even_at_the_minor_unit(
    minor: int, rate: str, expected: int
) -> None:
    assert Money(minor, "EUR").percent(Decimal(rate)) == Money(expected, "EUR")


def test_percent_keeps_the_currency() -> None:
    assert Money(1000, "JPY").percent(Decimal("10")).currency == "JPY"


# --- format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(125000, "EUR"), "1,250.00 EUR"),
        (Money(5, "EUR"), "0.05 EUR"),
        (Money(-125000, "USD"), "-1,250.00 USD"),
        (Money(1250, "JPY"), "1,250 JPY"),
        (Money(0, "GBP"), "0.00 GBP"),
    ],
)
def test_format_shows_major_units_with_the_currency_code(money: Money, text: str) -> None:
    assert money.format() == text
    assert str(money) == text


def test_to_decimal_is_the_exact_major_unit_value() -> None:
    assert Money(12345, "EUR").to_decimal() == Decimal("123.45")
    assert Money(12345, "JPY").to_decimal() == Decimal("12345")


# --- allocate: examples ----------------------------------------------------------------


def test_allocate_gives_leftover_units_to_the_largest_remainders() -> None:
    # exact shares 3.333.., 3.333.., 3.333..: one unit left, earliest part wins the tie
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    # exact shares 1.5, 8.5 after 10 * (0.15, 0.85): a tie again goes to the earlier part
    assert allocate(10, [Decimal("0.15"), Decimal("0.85")]) == [2, 8]


def test_allocate_splits_negative_totals_symmetrically() -> None:
    assert allocate(-10, [1, 1, 1]) == [-4, -3, -3]


def test_allocate_gives_nothing_to_zero_weights() -> None:
    assert allocate(100, [0, 1, 0]) == [0, 100, 0]


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1]], ids=["none", "all-zero", "negative"])
def test_allocate_refuses_weights_it_cannot_split_by(weights: list[int]) -> None:
    with pytest.raises(InvalidAmount):
        allocate(100, weights)


def test_allocate_stays_exact_for_totals_beyond_decimal_precision() -> None:
    total = 10**30
    parts = allocate(total, [1, 1, 1])
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


# --- allocate: properties --------------------------------------------------------------

totals = st.integers(min_value=-(10**18), max_value=10**18)
int_weights = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12).filter(
    any
)
decimal_weights = st.lists(
    st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=12,
).filter(any)
weights_strategy = st.one_of(int_weights, decimal_weights)


@settings(max_examples=200, deadline=None)
@given(total=totals, weights=weights_strategy)
def test_allocated_parts_always_sum_to_the_total(total: int, weights: list[int | Decimal]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total


@settings(max_examples=200, deadline=None)
@given(total=totals, weights=weights_strategy)
def test_each_allocated_part_is_within_one_unit_of_its_exact_share(
    total: int, weights: list[int | Decimal]
) -> None:
    parts = allocate(total, weights)
    weight_sum = sum(Fraction(w) for w in weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total) * Fraction(weight) / weight_sum
        assert abs(part - exact) < 1
        if weight == 0:
            assert part == 0


@settings(max_examples=100, deadline=None)
@given(total=totals, weights=weights_strategy)
def test_allocation_is_deterministic(total: int, weights: list[int | Decimal]) -> None:
    assert allocate(total, weights) == allocate(total, list(weights))


@settings(max_examples=100, deadline=None)
@given(total=st.integers(min_value=1, max_value=10**18), weights=weights_strategy)
def test_a_negative_total_splits_as_the_mirror_of_the_positive_one(
    total: int, weights: list[int | Decimal]
) -> None:
    negative = allocate(-total, weights)
    assert negative == [-part for part in allocate(total, weights)]
    assert all(part <= 0 for part in negative)


@settings(max_examples=100, deadline=None)
@given(
    total=totals,
    weights=weights_strategy,
    currency=st.sampled_from(["EUR", "USD", "JPY", "GBP"]),
)
def test_money_allocate_parts_sum_to_the_whole_in_its_currency(
    total: int, weights: list[int | Decimal], currency: str
) -> None:
    whole = Money(total, currency)
    parts = whole.allocate(weights)
    assert all(part.currency == currency for part in parts)
    assert sum(part.amount_minor for part in parts) == total
    assert parts == [Money(p, currency) for p in allocate(total, weights)]
    assert parts == whole.allocate(list(weights))
