"""The file source: CSV or JSONL exports dropped in a folder, in the canonical schema.

This is how revenue ops feed the program from any CRM. Files are recognised by name:

* ``accounts*.csv|jsonl``: ``account_id, name, domain, customer_since``
* ``contacts*.csv|jsonl``: ``contact_id, account_id, name, email, referrer_type,
  opted_out, stripe_customer_id, stripe_account_id``
* ``events*.csv|jsonl``: ``event_id, type, occurred_at, account_id, contact_id, amount,
  currency, score, csat, priority, milestone, referral_code, deal_id, ticket_id,
  referee_email_domain``
* ``nps*.csv|jsonl``: ``response_id, contact_id, account_id, score, responded_at``
* ``registrations*.csv|jsonl``: ``partner_id, domain, contact, evidence,
  registered_at``: partner deal registrations, read by :meth:`FileSource.fetch_registrations`
  with a cursor of their own (the cycle registers them: first to register wins). The
  contact is a CRM contact id or an email address (kept only as a keyed hash);
  ``registered_at`` is when the partner made the claim, so reading the row again is the
  same registration.

The README documents every column. A file is read again only when its content changed
(the cursor keeps each file's SHA-256); events already stored are ignored by event id,
so re-reading a grown file is harmless. Every row becomes a record, a quarantined reject
naming file, line and field, or a reference row: nothing is dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from domain.errors import InputRejected, InvalidAmount
from domain.models import Account, Contact, EventType, ReferrerType, Rejected, SourceEvent
from domain.money import Money
from domain.ports import ClaimRow, ClaimsRead, SourceBatch

SOURCE = "files"
T = TypeVar("T")
KINDS = ("accounts", "contacts", "events", "nps")
REGISTRATIONS = "registrations"
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n", ""}


def _kind_of(path: Path) -> str | None:
    if path.suffix not in (".csv", ".jsonl"):
        return None
    return next((k for k in KINDS if path.name.startswith(k)), None)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line number, row, raw text) per record, read from disk as they are asked for;
    bytes that are not UTF-8 survive as surrogates so the row can be refused by name
    instead of failing the file."""
    # utf-8-sig drops a byte order mark; newline="" leaves line ends to the readers
    # (csv needs it for quoted newlines; JSONL lines end at \n, \r\n or \r only,
    # never inside a JSON string at a U+2028 the way str.splitlines() would cut it).
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        if path.suffix == ".jsonl":
            for number, ended in enumerate(handle, start=1):
                line = ended.rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, {"__error__": f"not valid JSON: {exc.msg}"}, line
                    continue
                if not isinstance(row, dict):
                    yield number, {"__error__": "a JSONL line must be an object"}, line
                    continue
                yield number, row, line
            return
        reader = csv.DictReader(handle)
        for row in reader:
            # The header is line 1; a record's line is where it ends (quoted newlines).
            raw = ",".join("" if v is None else str(v) for v in row.values())
            if None in row:
                yield reader.line_num, {"__error__": "more fields than the header names"}, raw
                continue
            yield reader.line_num, dict(row), raw


@dataclass
class _Page:
    """The rows of one page of a drop, as they are read."""

    accounts: list[Account] = dataclass_field(default_factory=list)
    contacts: list[Contact] = dataclass_field(default_factory=list)
    events: list[SourceEvent] = dataclass_field(default_factory=list)
    rejected: list[Rejected] = dataclass_field(default_factory=list)
    records_in: int = 0

    def batch(self, cursor: str | None) -> SourceBatch:
        return SourceBatch(
            source=SOURCE,
            accounts=self.accounts,
            contacts=self.contacts,
            events=self.events,
            rejected=self.rejected,
            records_in=self.records_in,
            reference_only=len(self.accounts) + len(self.contacts),
            cursor=cursor,
        )


def _digest(path: Path) -> str:
    """The file's SHA-256, read in blocks (a drop's event file can be GBs)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class FileSource:
    """Reads the canonical CSV/JSONL exports in ``folder``."""

    name = SOURCE

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fetch(self, cursor: str | None) -> SourceBatch:
        """Every row of the files new or changed since ``cursor``, in one batch."""
        pages = list(self.pages(cursor, page_records=0))
        return SourceBatch(
            source=SOURCE,
            accounts=[a for page in pages for a in page.accounts],
            contacts=[c for page in pages for c in page.contacts],
            events=[e for page in pages for e in page.events],
            rejected=[r for page in pages for r in page.rejected],
            records_in=sum(page.records_in for page in pages),
            reference_only=sum(page.reference_only for page in pages),
            cursor=pages[-1].cursor,
        )

    def pages(self, cursor: str | None, page_records: int) -> Iterator[SourceBatch]:
        """The rows of the files new or changed since ``cursor``, ``page_records`` at a
        time (all in one page when 0), read from disk as they are needed: a drop of a
        million customers is never in memory whole. The last page carries the cursor
        (each file's SHA-256)."""
        seen: dict[str, str] = json.loads(cursor) if cursor else {}
        page = _Page()
        # Across pages, so a second row of one event id is refused wherever it is.
        first_line: dict[str, str] = {}
        files = sorted(p for p in self.folder.glob("*") if p.is_file() and _kind_of(p))
        # Reference data first, so events of the same drop can name those contacts.
        files.sort(key=lambda p: KINDS.index(_kind_of(p) or "events"))
        for path in files:
            digest = _digest(path)
            if seen.get(path.name) == digest:
                continue
            kind = _kind_of(path)
            for line, row, raw in _rows(path):
                page.records_in += 1
                record = f"{path.name}:{line}"
                try:
                    if "__error__" in row:
                        raise InputRejected(record, None, row["__error__"])
                    _refuse_bad_bytes(record, row)
                    if kind == "accounts":
                        page.accounts.append(_account(record, row))
                    elif kind == "contacts":
                        page.contacts.append(_contact(record, row))
                    else:
                        event = _event(record, row) if kind == "events" else _nps(record, row)
                        earlier = first_line.get(event.event_id)
                        if earlier is not None:
                            raise InputRejected(
                                record, "event_id", f"duplicate of {earlier} in this drop"
                            )
                        first_line[event.event_id] = record
                        page.events.append(event)
                except InputRejected as exc:
                    page.rejected.append(
                        Rejected(SOURCE, exc.record, exc.field, exc.reason, _printable(raw))
                    )
                if page_records and page.records_in >= page_records:
                    yield page.batch(cursor=None)
                    page = _Page()
            seen[path.name] = digest
        yield page.batch(cursor=json.dumps(seen, sort_keys=True))

    def fetch_registrations(self, cursor: str | None) -> ClaimsRead:
        """The partner registrations of every ``registrations*`` file new or changed
        since ``cursor`` (each file's SHA-256, as :meth:`fetch` keeps). A row that
        cannot be a claim (not JSON, not UTF-8, no time zone on ``registered_at``) is
        refused naming file, line and field; its raw text is not kept (it may hold the
        lead's address). The fields themselves are checked when the claim is made."""
        seen: dict[str, str] = json.loads(cursor) if cursor else {}
        claims: list[ClaimRow] = []
        rejected: list[Rejected] = []
        files = sorted(
            p
            for p in self.folder.glob(f"{REGISTRATIONS}*")
            if p.is_file() and p.suffix in (".csv", ".jsonl")
        )
        for path in files:
            digest = _digest(path)
            if seen.get(path.name) == digest:
                continue
            for line, row, _raw in _rows(path):
                record = f"{path.name}:{line}"
                try:
                    if "__error__" in row:
                        raise InputRejected(record, None, row["__error__"])
                    _refuse_bad_bytes(record, row)
                    claims.append(_claim(record, row))
                except InputRejected as exc:
                    rejected.append(Rejected(SOURCE, exc.record, exc.field, exc.reason))
            seen[path.name] = digest
        return ClaimsRead(
            source=SOURCE,
            claims=claims,
            rejected=rejected,
            cursor=json.dumps(seen, sort_keys=True),
        )


def _claim(record: str, row: Mapping[str, Any]) -> ClaimRow:
    return ClaimRow(
        record=record,
        partner_id=_text(row, "partner_id"),
        domain=_text(row, "domain"),
        contact=_text(row, "contact"),
        evidence=_text(row, "evidence"),
        registered_at=_timestamp(record, row, "registered_at"),
    )


def _printable(raw: str) -> str:
    """Raw text safe to store: bytes that were not UTF-8 become ``\\xNN`` escapes."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _refuse_bad_bytes(record: str, row: Mapping[str, Any]) -> None:
    for field, value in row.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InputRejected(record, str(field), "not valid UTF-8") from None


def _text(row: Mapping[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(record: str, row: Mapping[str, Any], field: str) -> str:
    value = _text(row, field)
    if value is None:
        raise InputRejected(record, field, "missing")
    return value


def _parsed(
    record: str, row: Mapping[str, Any], field: str, parse: Callable[[str], T], what: str
) -> T | None:
    value = _text(row, field)
    if value is None:
        return None
    try:
        return parse(value)
    except (ValueError, TypeError):
        raise InputRejected(record, field, f"{value!r} is not {what}") from None


def _timestamp(record: str, row: Mapping[str, Any], field: str) -> datetime:
    value = _parsed(record, row, field, datetime.fromisoformat, "an ISO 8601 timestamp")
    if value is None:
        raise InputRejected(record, field, "missing")
    if value.tzinfo is None:
        raise InputRejected(record, field, "timestamp has no time zone (add Z or +01:00)")
    return value


def _int_in(record: str, row: Mapping[str, Any], field: str, low: int, high: int) -> int | None:
    value = _parsed(record, row, field, int, "a whole number")
    if value is not None and not low <= value <= high:
        raise InputRejected(record, field, f"{value} is outside {low}-{high}")
    return value


def _account(record: str, row: Mapping[str, Any]) -> Account:
    return Account(
        account_id=_required(record, row, "account_id"),
        name=_text(row, "name") or _required(record, row, "account_id"),
        domain=(_text(row, "domain") or "").lower() or None,
        customer_since=_parsed(record, row, "customer_since", date.fromisoformat, "a date"),
    )


def _contact(record: str, row: Mapping[str, Any]) -> Contact:
    email = _text(row, "email")
    if email is not None and ("@" not in email or " " in email):
        raise InputRejected(record, "email", "not an email address")
    kind = (_text(row, "referrer_type") or "customer").lower()
    if kind not in {t.value for t in ReferrerType}:
        raise InputRejected(record, "referrer_type", f"{kind!r} is not customer/partner/employee")
    opted = (_text(row, "opted_out") or "").lower()
    if opted not in _TRUE | _FALSE:
        raise InputRejected(record, "opted_out", f"{opted!r} is not true/false")
    return Contact(
        contact_id=_required(record, row, "contact_id"),
        account_id=_text(row, "account_id"),
        name=_text(row, "name") or "",
        email=email,
        referrer_type=ReferrerType(kind),
        opted_out=opted in _TRUE,
        stripe_customer_id=_text(row, "stripe_customer_id"),
        stripe_account_id=_text(row, "stripe_account_id"),
    )


def _event(record: str, row: Mapping[str, Any]) -> SourceEvent:
    event_id = _required(record, row, "event_id")
    type_text = _required(record, row, "type")
    try:
        type_ = EventType(type_text)
    except ValueError:
        raise InputRejected(record, "type", f"unknown event type {type_text!r}") from None
    amount = None
    amount_text = _text(row, "amount")
    if amount_text is not None:
        currency = _text(row, "currency")
        if currency is None:
            raise InputRejected(record, "currency", "missing (the amount needs one)")
        try:
            amount = Money.parse(amount_text, currency.upper())
        except InvalidAmount as exc:
            raise InputRejected(record, "amount", str(exc)) from None
        if amount.amount_minor < 0:
            raise InputRejected(record, "amount", "negative amount")
    score = _int_in(record, row, "score", 0, 10)
    if type_ is EventType.NPS_RESPONSE and score is None:
        raise InputRejected(record, "score", "missing (an NPS response needs a score)")
    return SourceEvent(
        source=SOURCE,
        event_id=event_id,
        type=type_,
        occurred_at=_timestamp(record, row, "occurred_at"),
        account_id=_text(row, "account_id"),
        contact_id=_text(row, "contact_id"),
        amount=amount,
        score=score,
        csat=_int_in(record, row, "csat", 1, 5),
        priority=(_text(row, "priority") or "").lower() or None,
        milestone=_text(row, "milestone"),
        referral_code=_text(row, "referral_code"),
        deal_id=_text(row, "deal_id"),
        ticket_id=_text(row, "ticket_id"),
        referee_email_domain=(_text(row, "referee_email_domain") or "").lower() or None,
    )


def _nps(record: str, row: Mapping[str, Any]) -> SourceEvent:
    score = _int_in(record, row, "score", 0, 10)
    if score is None:
        raise InputRejected(record, "score", "missing")
    return SourceEvent(
        source=SOURCE,
        event_id="nps-" + _required(record, row, "response_id"),
        type=EventType.NPS_RESPONSE,
        occurred_at=_timestamp(record, row, "responded_at"),
        account_id=_text(row, "account_id"),
        contact_id=_required(record, row, "contact_id"),
        score=score,
    )
