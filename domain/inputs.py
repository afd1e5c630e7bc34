"""Bounds on input records, and the named reasons a record is refused for breaking one.

A source refuses a record that breaks a bound with a reason that starts with the
bound's name (``field_too_long: 300 characters, at most 128``), so an operator can
count the quarantine by reason and the README can list them. Everything here is pure:
the sources apply these checks, the settings choose the configurable values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

# A record (a JSONL line, a CSV line) longer than this is refused unread: no row of
# the canonical schema comes near it, and it bounds what one record can cost.
DEFAULT_MAX_RECORD_CHARS = 65_536
# A JSONL record is one object of scalars (depth 1); a little room, never recursion.
DEFAULT_MAX_JSON_DEPTH = 8
# 10,000,000.00 in a two-decimal currency: above any deal the program rewards, far
# below what the ledger's 64-bit integer columns hold.
DEFAULT_MAX_AMOUNT_MINOR = 1_000_000_000
DEFAULT_EARLIEST_DATE = date(2000, 1, 1)
DEFAULT_MAX_FUTURE = timedelta(days=1)
# Whole numbers the schema asks for (scores) are a few digits; more is not a score.
MAX_NUMBER_DIGITS = 6
# What a refused record keeps of its raw text for the operator.
RAW_EXCERPT_CHARS = 1_000

# C0 and C1 control characters (NUL included), and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Control characters other than tab, line feed and carriage return (free text).
_CONTROL_IN_PROSE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_NUMBER_DIGITS}}}")
_SPACE = re.compile(r"\s")


class Refusal(StrEnum):
    """The name every bound's refusal reason starts with."""

    RECORD_TOO_LARGE = "record_too_large"
    JSON_TOO_DEEP = "json_too_deep"
    CSV_FIELD_TOO_LARGE = "csv_field_too_large"
    CSV_MALFORMED = "csv_malformed"
    NOT_A_SCALAR = "not_a_scalar"
    NOT_TEXT = "not_text"
    NOT_UTF8 = "not_utf8"
    CONTROL_CHARACTER = "control_character"
    FIELD_TOO_LONG = "field_too_long"
    NOT_DIGITS = "not_digits"
    AMOUNT_INVALID = "amount_invalid"
    AMOUNT_TOO_LARGE = "amount_too_large"
    DATE_OUT_OF_RANGE = "date_out_of_range"
    NOT_AN_EMAIL = "not_an_email"
    FILE_IS_SYMLINK = "file_is_symlink"
    FILE_NOT_REGULAR = "file_not_regular"
    FILE_UNREADABLE = "file_unreadable"
    UNEXPECTED_ERROR = "unexpected_error"
    NOT_STORABLE = "not_storable"


def refusal(name: Refusal, detail: str) -> str:
    """The reason text of a refusal: its name, then what an operator needs to know."""
    return f"{name.value}: {detail}"


@dataclass(frozen=True, slots=True)
class InputBounds:
    """The configurable bounds a source checks every record against.

    Attributes:
        max_record_chars: longest record (JSONL line, CSV line or field) read.
        max_json_depth: deepest nesting of arrays and objects in a JSONL record.
        max_amount_minor: largest amount, in minor units of its currency.
        earliest_date: the earliest date or timestamp accepted.
        max_future: how far past the time of reading a date may lie.
    """

    max_record_chars: int = DEFAULT_MAX_RECORD_CHARS
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_amount_minor: int = DEFAULT_MAX_AMOUNT_MINOR
    earliest_date: date = DEFAULT_EARLIEST_DATE
    max_future: timedelta = DEFAULT_MAX_FUTURE

    def __post_init__(self) -> None:
        if self.max_record_chars < 1 or self.max_json_depth < 1 or self.max_amount_minor < 1:
            raise ValueError("input bounds must be positive")

    def date_window(self, now: datetime) -> tuple[datetime, datetime]:
        """The earliest and latest timestamps accepted when reading at ``now``."""
        earliest = datetime(
            self.earliest_date.year, self.earliest_date.month, self.earliest_date.day, tzinfo=UTC
        )
        return earliest, now + self.max_future


def control_character(text: str, prose: bool = False) -> int | None:
    """The position of the first control character in ``text`` (NUL included), if any.

    Args:
        text: the value to check.
        prose: free text, where tab and line breaks are allowed.
    """
    found = (_CONTROL_IN_PROSE if prose else _CONTROL).search(text)
    return None if found is None else found.start()


def plain_digits(text: str) -> bool:
    """Whether ``text`` is a few ASCII digits: no sign, no ``_``, no other script's
    digits, no spaces (``int()`` accepts all of those)."""
    return _DIGITS.fullmatch(text) is not None


def is_email(text: str) -> bool:
    """Whether ``text`` looks like one deliverable address: exactly one ``@``, a
    non-empty local part, a domain with a dot and no empty label, no whitespace."""
    if _SPACE.search(text) or control_character(text) is not None or text.count("@") != 1:
        return False
    local, domain = text.split("@")
    labels = domain.split(".")
    return bool(local) and len(labels) >= 2 and all(labels)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than ``limit``.

    Linear in the text and never recursive, so it runs before any parser does: a
    deeply nested line is refused without costing a ``RecursionError``. Brackets inside
    strings do not count.
    """
    # Most records have a bracket or two: when all of them together cannot exceed the
    # limit, there is nothing to scan.
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def excerpt(text: str, limit: int = RAW_EXCERPT_CHARS) -> str:
    """``text`` safe to keep beside a refusal: characters that are not UTF-8 and control
    characters become escapes (a NUL cannot reach a PostgreSQL text column), at most
    ``limit`` characters of it."""
    # Any surrogate (a byte that was not UTF-8, or a lone JSON "\ud800") becomes an escape.
    printable = text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", printable)
