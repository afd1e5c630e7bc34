"""Hostile input for the file source: every malformation class of issue 13, mixed with
valid rows, written as CSV or JSONL lines.

Each :class:`Case` is one record on one line, so a test knows the file and line the
source must name, and whether the record must be stored or quarantined (and with
which reason). Used by the property test (Hypothesis draws the mix) and by the corpus
that runs through the whole cycle.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

EVENT_FIELDS = (
    "event_id",
    "type",
    "occurred_at",
    "account_id",
    "contact_id",
    "amount",
    "currency",
    "score",
    "milestone",
    "referral_code",
)
CONTACT_FIELDS = (
    "contact_id",
    "account_id",
    "name",
    "email",
    "referrer_type",
    "opted_out",
    "stripe_account_id",
)
FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class Case:
    """One record: where it goes, what it holds, what must become of it.

    Attributes:
        kind: ``events`` or ``contacts`` (the file it is written to).
        fmt: ``csv`` or ``jsonl``.
        name: the malformation class (``valid`` for none).
        key: the event or contact id a stored record is found by.
        row: the record's fields (JSON values: a boolean or an object may be one).
        expect: how the quarantine's reason starts, or ``None``: the record is stored.
        line: the exact bytes of the line, for what ``row`` cannot say.
    """

    kind: str
    fmt: str
    name: str
    key: str
    row: dict[str, Any]
    expect: str | None
    line: bytes | None = None


@dataclass(frozen=True)
class Values:
    """The valid values a case is built around (drawn by Hypothesis, or fixed)."""

    amount_minor: int = 125_000
    score: int = 9
    text: str = "first 100 seats"
    days_ago: int = 3


def _event(i: int, now: datetime, v: Values, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": f"h{i}",
        "type": "deal_won" if i % 2 else "nps_response",
        "occurred_at": (now - timedelta(days=v.days_ago)).isoformat(),
        "account_id": f"A{i % 7}",
        "contact_id": f"C{i % 11}",
        "amount": f"{v.amount_minor // 100}.{v.amount_minor % 100:02d}" if i % 2 else None,
        "currency": "EUR" if i % 2 else None,
        "score": str(v.score),
        "milestone": v.text,
        "referral_code": None,
    }
    row.update(changes)
    return row


def _contact(i: int, v: Values, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "contact_id": f"HC{i}",
        "account_id": f"A{i % 7}",
        "name": v.text,
        "email": f"person{i}@example.com",
        "referrer_type": "customer",
        "opted_out": "false",
        "stripe_account_id": None,
    }
    row.update(changes)
    return row


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


Builder = Callable[[int, str, datetime, Values], Case]


def _events(name: str, expect: str | None, **changes: Any) -> Builder:
    def build(i: int, fmt: str, now: datetime, v: Values) -> Case:
        return Case("events", fmt, name, f"h{i}", _event(i, now, v, **changes), expect)

    return build


def _contacts(name: str, expect: str | None, **changes: Any) -> Builder:
    def build(i: int, fmt: str, now: datetime, v: Values) -> Case:
        return Case("contacts", fmt, name, f"HC{i}", _contact(i, v, **changes), expect)

    return build


def _huge_line(i: int, fmt: str, now: datetime, v: Values) -> Case:
    if fmt == "jsonl":
        # 100 KB of nesting: refused for its size before any parser sees it.
        line = b'{"event_id": "h%d", "milestone": ' % i + b"[" * 50_000 + b"]" * 50_000 + b"}\n"
        return Case("events", fmt, "huge_line", f"h{i}", {}, "record_too_large", line)
    row = _event(i, now, v, milestone="x" * 140_000)
    return Case("events", fmt, "huge_line", f"h{i}", row, "record_too_large")


def _not_json(i: int, fmt: str, now: datetime, v: Values) -> Case:
    line = b'{"event_id": "h%d", "type": deal_won\n' % i
    return Case("events", fmt, "not_json", f"h{i}", {}, "not valid JSON", line)


def _extra_fields(i: int, fmt: str, now: datetime, v: Values) -> Case:
    row = _event(i, now, v)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([*_cells(row, EVENT_FIELDS), "surplus"])
    line = out.getvalue().encode("utf-8")
    return Case("events", fmt, "extra_fields", f"h{i}", row, "more fields than the header", line)


# Every class: its builder, and the formats it applies to.
CLASSES: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "valid": (_events("valid", None), FORMATS),
    "valid_contact": (_contacts("valid_contact", None), FORMATS),
    "huge_line": (_huge_line, FORMATS),
    "deep_json": (_events("deep_json", "json_too_deep", milestone=_nested(40)), ("jsonl",)),
    "object_value": (
        _events("object_value", "not_a_scalar", contact_id={"id": "C1"}),
        ("jsonl",),
    ),
    "not_json": (_not_json, ("jsonl",)),
    "extra_fields": (_extra_fields, ("csv",)),
    "amount_1e30": (
        _events("amount_1e30", "amount_too_large", type="deal_won", amount="1e30", currency="EUR"),
        FORMATS,
    ),
    "amount_huge_exponent": (
        _events(
            "amount_huge_exponent",
            "amount_invalid",
            type="deal_won",
            amount="1E10000000",
            currency="EUR",
        ),
        FORMATS,
    ),
    "amount_underscore": (
        _events(
            "amount_underscore", "amount_invalid", type="deal_won", amount="1_000", currency="EUR"
        ),
        FORMATS,
    ),
    "amount_arabic_digits": (
        _events(
            "amount_arabic_digits",
            "amount_invalid",
            type="deal_won",
            amount="\u0661\u0660\u0660",
            currency="EUR",
        ),
        FORMATS,
    ),
    "score_underscore": (_events("score_underscore", "not_digits", score="1_0"), FORMATS),
    "score_arabic_digits": (_events("score_arabic_digits", "not_digits", score="\u0669"), FORMATS),
    "year_0001": (
        _events("year_0001", "date_out_of_range", occurred_at="0001-01-01T00:00:00+00:00"),
        FORMATS,
    ),
    "year_2099": (
        _events("year_2099", "date_out_of_range", occurred_at="2099-06-01T00:00:00+00:00"),
        FORMATS,
    ),
    "nul_byte": (_events("nul_byte", "control_character", contact_id="C\x001"), FORMATS),
    "bell_character": (_events("bell_character", "control_character", milestone="a\x07b"), FORMATS),
    "too_long_value": (
        _events("too_long_value", "field_too_long", referral_code="R" * 65),
        FORMATS,
    ),
    "not_utf8": (_events("not_utf8", "not_utf8", milestone="caf\udce9"), FORMATS),
    "bool_id": (_events("bool_id", "not_text", contact_id=True), ("jsonl",)),
    "email_two_ats": (_contacts("email_two_ats", "not_an_email", email="a@b@c.com"), FORMATS),
    "email_without_dot": (
        _contacts("email_without_dot", "not_an_email", email="root@localhost"),
        FORMATS,
    ),
    "email_with_space": (
        _contacts("email_with_space", "not_an_email", email="jane doe@example.com"),
        FORMATS,
    ),
    "contact_bool_id": (_contacts("contact_bool_id", "not_text", contact_id=True), ("jsonl",)),
    "stripe_id_too_long": (
        _contacts("stripe_id_too_long", "field_too_long", stripe_account_id="acct_" + "x" * 60),
        FORMATS,
    ),
}


def build(name: str, fmt: str, i: int, now: datetime, values: Values | None = None) -> Case:
    """Case number ``i`` of class ``name`` in format ``fmt``."""
    builder, formats = CLASSES[name]
    if fmt not in formats:
        raise ValueError(f"{name} is not written as {fmt}")
    return builder(i, fmt, now, values or Values())


def _cells(row: dict[str, Any], fields: Sequence[str]) -> list[str]:
    return ["" if row.get(f) is None else str(row[f]) for f in fields]


def _encoded(case: Case) -> bytes:
    if case.line is not None:
        return case.line
    if case.fmt == "jsonl":
        text = json.dumps(case.row, ensure_ascii=False) + "\n"
    else:
        out = io.StringIO()
        fields = EVENT_FIELDS if case.kind == "events" else CONTACT_FIELDS
        csv.writer(out, lineterminator="\n").writerow(_cells(case.row, fields))
        text = out.getvalue()
    # surrogateescape: a "\udce9" in a value is written as the byte 0xE9 (not UTF-8).
    return text.encode("utf-8", "surrogateescape")


def write(folder: Path, cases: Iterable[Case], suffix: str = "h") -> dict[str, Case]:
    """Write ``cases`` into ``folder`` (one file per kind and format); return each
    case by the record name the file source gives it (``events_h.csv:7``)."""
    by_file: dict[str, list[Case]] = {}
    for case in cases:
        by_file.setdefault(f"{case.kind}_{suffix}.{case.fmt}", []).append(case)
    named: dict[str, Case] = {}
    for file, file_cases in by_file.items():
        lines: list[bytes] = []
        first = 1
        if file.endswith(".csv"):
            fields = EVENT_FIELDS if file.startswith("events") else CONTACT_FIELDS
            lines.append((",".join(fields) + "\n").encode())
            first = 2
        for number, case in enumerate(file_cases, start=first):
            lines.append(_encoded(case))
            named[f"{file}:{number}"] = case
        (folder / file).write_bytes(b"".join(lines))
    return named
