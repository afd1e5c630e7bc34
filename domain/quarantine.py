"""What the quarantine keeps of refused input, and which rows of one read conflict.

The quarantine is for an operator to see what was refused and why, not a copy of the
personal data: a refused record's text is kept as an *excerpt* of at most
:data:`EXCERPT_CHARS` characters in which email addresses and phone numbers are
replaced by ``<email>`` and ``<phone>`` (whole, not partly: the first letter and
domain of an address would still point to a person, and an operator gains nothing
from them; the record, field and reason columns say which row and why). Control
characters (a NUL byte among them, which PostgreSQL refuses in text) and bytes that
were not UTF-8 are written as escapes, so storing the excerpt cannot fail.

Two rows for one contact (or one account) in one read that say different things are a
*conflict*: neither is stored, both are quarantined with reason ``conflicting_rows``,
instead of the last one silently winning (that is how a second row could move a
referrer's payouts to another Stripe account). Rows identical in every field are one
row said twice, and are stored once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from domain.models import Account, Contact, Rejected

EXCERPT_CHARS = 500
# Masking reads at most this much of a refused record: linear time, bounded work.
_SCAN_CHARS = 65_536
CONFLICTING_ROWS = "conflicting_rows"
EMAIL_MASK = "<email>"
PHONE_MASK = "<phone>"

# An address is a run of address characters holding an "@" (written "@", "\u0040" or
# "%40"), however many: "a@b@c.com" is masked whole, not left as "<email>@c.com". A
# match may only start where a run starts (the lookbehind), so a long run without an
# "@" is scanned once, not again from every position (which would be quadratic).
_ADDRESS_CHAR = r"[^\s@\"'`<>(),;:\[\]{}]"
_AT = r"(?:@|\\u0040|%40)"
_EMAIL = re.compile(
    rf"(?<!{_ADDRESS_CHAR}){_ADDRESS_CHAR}*(?:{_AT}{_ADDRESS_CHAR}*)+",
    re.IGNORECASE,
)
# A phone candidate: an optional "+", then digits, spaces, dots, dashes and brackets.
# One flat character class, so a match never backtracks into itself; whether it *is*
# a phone number is decided on the match (see _phone_or_not).
_PHONE = re.compile(r"(?<![\w.+\-])\+?\(?\d[\d().\- ]*")
_TRAILING = " .-("
_SEPARATORS = " \t\r\n,;\"'"
_DECIMAL = re.compile(r"\d+[.,]\d{1,3}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MIN_PHONE_DIGITS = 9  # with a "+" or separators; a bare run needs 10
_MAX_PHONE_DIGITS = 15  # E.164


def mask_personal_data(text: str) -> str:
    """``text`` with every email address replaced by ``<email>`` and every phone number
    by ``<phone>``.

    A phone number is an optional ``+`` and 9 to 15 digits grouped by spaces, dots,
    dashes or brackets (``+33 6 12 34 56 78``, ``(555) 123-4567``), or a bare run of 10
    to 15 digits (``0612345678``): a bare id or amount that long is masked too. Dates,
    times, decimal amounts, shorter numbers and digits inside a word (``acct_1Q2w``,
    ``evt-123456789``) are left as they are.

    Args:
        text: any text; its emails go first, so an address's digits are never a phone.

    Returns:
        The masked text.
    """
    return _PHONE.sub(_phone_or_not, _EMAIL.sub(_email_or_not, text))


def _email_or_not(match: re.Match[str]) -> str:
    found = match.group(0)
    # "@" alone or "@@" is punctuation, not an address.
    return EMAIL_MASK if re.sub(_AT, "", found, flags=re.IGNORECASE) else found


def _phone_or_not(match: re.Match[str]) -> str:
    found = match.group(0)
    core = found.rstrip(_TRAILING)
    tail = found[len(core) :]
    end = match.start() + len(core)
    following = match.string[end : end + 1]
    digits = sum(ch.isdigit() for ch in core)
    bare = core.isdigit()
    if (
        following.isalnum()  # part of a word or an id
        or following in (":", "_")  # a time (2026-11-26 10:00) or an id
        or _DECIMAL.fullmatch(core)  # an amount: 1234567.50
        or not _MIN_PHONE_DIGITS + bare <= digits <= _MAX_PHONE_DIGITS
    ):
        return found
    return PHONE_MASK + tail


def quarantine_excerpt(raw: str, limit: int = EXCERPT_CHARS) -> str:
    """What the quarantine keeps of a refused record's text: personal data masked,
    control characters and stray bytes escaped, at most ``limit`` characters (a cut
    text ends with ``…``).

    Args:
        raw: the record as read (any length).
        limit: the longest excerpt kept.

    Returns:
        The excerpt, safe to store on SQLite and PostgreSQL alike.
    """
    scanned = raw[:_SCAN_CHARS]
    if len(raw) > _SCAN_CHARS:
        # The cut may fall inside an address: drop what follows the last separator
        # rather than keep half an address unmasked.
        scanned = scanned[: max(scanned.rfind(c) for c in _SEPARATORS) + 1]
    return storable(mask_personal_data(scanned), limit, cut=len(raw) > _SCAN_CHARS)


def storable(text: str, limit: int, cut: bool = False) -> str:
    """``text`` as any database stores it: bytes that were not UTF-8 (lone surrogates)
    and control characters but tab and newline written as escapes (``\\x00``), at
    most ``limit`` characters (a cut text ends with ``…``).

    Args:
        text: the text to store.
        limit: the column's length.
        cut: ``text`` is already a part of something longer (it ends with ``…``).

    Returns:
        The text to store.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: ascii(m.group(0))[1:-1], text)
    if len(text) <= limit and not cut:
        return text
    return text[: limit - 1] + "…"


# -- conflicting rows in one read -----------------------------------------------------

Row = TypeVar("Row", Account, Contact)


@dataclass(frozen=True, slots=True)
class Conflicts:
    """The rows of one read, sorted: kept (one per id) and refused (every row of an id
    whose rows disagree).

    Attributes:
        accounts: the accounts to store.
        contacts: the contacts to store.
        rejected: one quarantine entry per row of a conflicting id.
        duplicates: rows identical to another row of the same id, stored once.
    """

    accounts: tuple[Account, ...]
    contacts: tuple[Contact, ...]
    rejected: tuple[Rejected, ...]
    duplicates: int


def split_conflicts(
    source: str, accounts: Sequence[Account], contacts: Sequence[Contact]
) -> Conflicts:
    """Keep one row per account and contact id; refuse every row of an id whose rows
    disagree on any field, with reason ``conflicting_rows``.

    The quarantine entry of a refused row names the kind, the id and a fingerprint of
    the row's values as its record (so a later read with another conflict for the same
    id is quarantined too, and reading the same one again is not), the fields the rows
    disagree on as its field, and the row's values as its raw text (masked by the
    quarantine's writer).

    Args:
        source: the source the rows were read from.
        accounts: the accounts of the read, in order.
        contacts: the contacts of the read, in order.

    Returns:
        The rows to store, the entries to quarantine and how many rows were repeats.
    """
    kept_accounts, refused_accounts, repeated_accounts = _split(
        source, "account", accounts, lambda a: a.account_id
    )
    kept_contacts, refused_contacts, repeated_contacts = _split(
        source, "contact", contacts, lambda c: c.contact_id
    )
    return Conflicts(
        accounts=kept_accounts,
        contacts=kept_contacts,
        rejected=refused_accounts + refused_contacts,
        duplicates=repeated_accounts + repeated_contacts,
    )


def _split(
    source: str, kind: str, rows: Sequence[Row], key: Callable[[Row], Hashable]
) -> tuple[tuple[Row, ...], tuple[Rejected, ...], int]:
    groups: dict[Hashable, list[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    kept: list[Row] = []
    refused: list[Rejected] = []
    repeated = 0
    for row_id, group in groups.items():
        distinct = list(dict.fromkeys(group))
        repeated += len(group) - len(distinct)
        if len(distinct) == 1:
            kept.append(distinct[0])
            continue
        differing = ",".join(
            f.name for f in fields(distinct[0]) if len({getattr(r, f.name) for r in distinct}) > 1
        )
        refused += [
            Rejected(
                source=source,
                # The id cut so the fingerprint always fits the record column.
                record=f"{kind}:{str(row_id)[:400]}:{_fingerprint(row)}",
                field=differing[:128],
                reason=CONFLICTING_ROWS,
                raw=_describe(row),
            )
            for row in distinct
        ]
    return tuple(kept), tuple(refused), repeated


def _values(row: Any) -> list[tuple[str, Any]]:
    return [(f.name, getattr(row, f.name)) for f in fields(row)]


def _fingerprint(row: Account | Contact) -> str:
    return hashlib.sha256(repr(_values(row)).encode("utf-8", "backslashreplace")).hexdigest()[:16]


def _describe(row: Account | Contact) -> str:
    return " ".join(
        f"{name}={getattr(value, 'value', value)}"
        for name, value in _values(row)
        if value is not None
    )
