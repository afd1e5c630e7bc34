"""Money as integer minor units plus an ISO 4217 currency code.

Floats never hold money here: every amount is an ``int`` of the currency's minor unit
(cents for EUR), and every split goes through :func:`allocate`, which hands out the
remainder by the largest-remainder method so the parts always add up to the whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from domain.errors import CurrencyMismatch, InvalidAmount

# The longest amount text parsed, and the most digits or the largest exponent of an
# amount given as a number: far above any real amount, far below what costs time.
MAX_AMOUNT_CHARS = 64
# Plain ASCII digits (re.ASCII: no other script's digits), an optional sign and point,
# and an exponent of at most two digits. No "_", no "NaN", no "Infinity".
_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?", re.ASCII)
_LONG_EXPONENT = re.compile(r"[0-9.][eE][+-]?[0-9]{3}")

# Minor-unit exponents for the currencies a program may run in. A currency missing
# here is refused rather than guessed: paying 100x too much is the failure to avoid.
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CAD": 2,
    "AUD": 2,
    "MYR": 2,
    "SGD": 2,
    "JPY": 0,
    "KRW": 0,
}


def exponent(currency: str) -> int:
    """Return the number of decimal places of ``currency``'s minor unit."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise InvalidAmount(f"unsupported currency {currency!r}") from None


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount in integer minor units of one currency."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise InvalidAmount(f"amount_minor must be an int, got {self.amount_minor!r}")
        exponent(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, value: str | int | Decimal, currency: str) -> Money:
        """Parse a major-unit amount such as ``"500.00"`` or ``500`` exactly.

        Text is plain ASCII digits with an optional sign, decimal point and an
        exponent of at most two digits (``"1.5e3"``), at most
        :data:`MAX_AMOUNT_CHARS` characters: it is checked before any arithmetic, so
        the work is linear in its length (``"1E10000000"`` is refused at once instead
        of building a ten-million-digit number), and ``"1_000"`` or other scripts'
        digits, which ``Decimal`` would accept, are refused.

        Raises:
            InvalidAmount: the value is not a number in that form, is too long or its
                exponent too large, or has more decimals than the currency's minor
                unit (``"1.005"`` EUR would need rounding).
        """
        if isinstance(value, float):
            raise InvalidAmount("amounts are never floats; write them as strings")
        if isinstance(value, bool):
            raise InvalidAmount(f"{value!r} is not an amount")
        if isinstance(value, int):
            if abs(value) >= 10**MAX_AMOUNT_CHARS:
                raise InvalidAmount(f"amount has more than {MAX_AMOUNT_CHARS} digits")
            value = str(value)
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise InvalidAmount(f"{value!r} is not a finite amount")
            _, digit_tuple, power = value.as_tuple()
            assert isinstance(power, int)  # finite, checked above
            if len(digit_tuple) > MAX_AMOUNT_CHARS or abs(power) > MAX_AMOUNT_CHARS:
                raise InvalidAmount(f"amount has more than {MAX_AMOUNT_CHARS} digits")
            major = value
        else:
            text = value.strip()
            if len(text) > MAX_AMOUNT_CHARS:
                raise InvalidAmount(f"amount is longer than {MAX_AMOUNT_CHARS} characters")
            if _AMOUNT.fullmatch(text) is None:
                if _LONG_EXPONENT.search(text):
                    raise InvalidAmount("amount has an exponent of more than two digits")
                shown = text if len(text) <= 24 else text[:24] + "..."
                raise InvalidAmount(f"{shown!r} is not an amount")
            major = Decimal(text)
        # Integer arithmetic on the decimal's digits: Decimal operations would round
        # silently past 28 significant digits and accept what must be refused.
        sign, digits, power = major.as_tuple()
        assert isinstance(power, int)  # finite, checked above
        coefficient = int("".join(map(str, digits)) or "0")
        shift = power + exponent(currency)
        if shift >= 0:
            minor = coefficient * 10**shift
        else:
            minor, rest = divmod(coefficient, 10**-shift)
            if rest:
                raise InvalidAmount(
                    f"{major} has more decimals than {currency} allows ({exponent(currency)})"
                )
        return cls(-minor if sign else minor, currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency} cannot be combined")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor >= other.amount_minor

    @property
    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def percent(self, rate: Decimal) -> Money:
        """``rate`` percent of this amount, rounded half-even to the minor unit."""
        # round() of a Fraction is exact and rounds half to even.
        return Money(round(Fraction(self.amount_minor) * Fraction(rate) / 100), self.currency)

    def allocate(self, weights: Sequence[int | Decimal]) -> list[Money]:
        """Split into parts proportional to ``weights``; the parts sum to ``self``."""
        return [Money(part, self.currency) for part in allocate(self.amount_minor, weights)]

    def min(self, other: Money) -> Money:
        return self if self <= other else other

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-exponent(self.currency))

    def format(self) -> str:
        """Human form, e.g. ``"1,250.00 EUR"``; for messages, never for arithmetic."""
        places = exponent(self.currency)
        return f"{self.to_decimal():,.{places}f} {self.currency}"

    def __str__(self) -> str:
        return self.format()


def allocate(total: int, weights: Sequence[int | Decimal]) -> list[int]:
    """Split integer ``total`` by ``weights`` using the largest-remainder method.

    Each part first gets the floor of its exact share; the units left over go one by
    one to the parts with the largest fractional remainders (earlier parts win ties,
    so the result is deterministic). The parts always sum to ``total``.

    Raises:
        InvalidAmount: no weights, a negative weight, or all weights zero.
    """
    if not weights:
        raise InvalidAmount("cannot allocate over no weights")
    exact = [Fraction(w) for w in weights]
    if any(w < 0 for w in exact):
        raise InvalidAmount("allocation weights must not be negative")
    weight_sum = sum(exact, Fraction(0))
    if weight_sum == 0:
        raise InvalidAmount("allocation weights must not all be zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    # Fractions keep every share exact whatever the size of the total.
    shares = [magnitude * w / weight_sum for w in exact]
    floors = [s.numerator // s.denominator for s in shares]
    leftover = magnitude - sum(floors)
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in by_remainder[:leftover]:
        floors[i] += 1
    return [sign * part for part in floors]
