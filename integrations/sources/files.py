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

Nothing in the inbox is trusted (README, "Bounds on input"). Only regular files are
opened, never through a symbolic link (``O_NOFOLLOW``, and the opened file must be the
one listed); a symlink, device, FIFO or directory is quarantined as a file, unread.
Every record is checked against :class:`domain.inputs.InputBounds` before it is
parsed further: its size, JSON nesting, each field's length against its ledger
column, control characters, plain digits, amounts, dates and addresses. Whatever goes
wrong with one record, even an exception nobody foresaw, refuses that record alone;
a file that cannot be read is refused as a file and the rest of the drop goes on.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from domain.errors import InputRejected, InvalidAmount
from domain.inputs import (
    RAW_EXCERPT_CHARS,
    InputBounds,
    Refusal,
    control_character,
    excerpt,
    is_email,
    json_depth_exceeds,
    plain_digits,
    refusal,
)
from domain.models import Account, Contact, EventType, ReferrerType, Rejected, SourceEvent
from domain.money import Money
from domain.ports import ClaimRow, ClaimsRead, SourceBatch, origin_key
from domain.registration import MAX_EVIDENCE_CHARS
from integrations.sources.http import mask_emails

SOURCE = "files"
KINDS = ("accounts", "contacts", "events", "nps")
REGISTRATIONS = "registrations"
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n", ""}
# A file name as it appears in a record's name: escaped, and short enough for the
# quarantine's record column (512) with the line number after it.
_NAME_CHARS = 200

# Each kind's fields and the longest value each may hold: the length of the ledger
# column it is stored in (tests/unit/test_file_source_bounds.py holds them to the
# schema), or for text parsed into something else, far more than a valid value needs.
# Fields not named here are never read.
FIELD_CHARS: dict[str, dict[str, int]] = {
    "accounts": {"account_id": 128, "name": 256, "domain": 256, "customer_since": 32},
    "contacts": {
        "contact_id": 128,
        "account_id": 128,
        "name": 256,
        "email": 320,
        "referrer_type": 16,
        "opted_out": 8,
        "stripe_customer_id": 64,
        "stripe_account_id": 64,
    },
    "events": {
        "event_id": 256,
        "type": 32,
        "occurred_at": 64,
        "account_id": 128,
        "contact_id": 128,
        "amount": 64,
        "currency": 3,
        "score": 8,
        "csat": 8,
        "priority": 16,
        "milestone": 128,
        "referral_code": 64,
        "deal_id": 128,
        "ticket_id": 128,
        "referee_email_domain": 256,
    },
    # The event id is "nps-" + response_id, in a 256-character column.
    "nps": {
        "response_id": 252,
        "contact_id": 128,
        "account_id": 128,
        "score": 8,
        "responded_at": 64,
    },
    # The contact is an id (128) or an address (320); evidence is checked, spaces
    # collapsed, by domain.registration (at most MAX_EVIDENCE_CHARS).
    REGISTRATIONS: {
        "partner_id": 128,
        "domain": 253,
        "contact": 320,
        "evidence": 4 * MAX_EVIDENCE_CHARS,
        "registered_at": 64,
    },
}
# Fields a JSON true/false may fill; anywhere else a boolean is not the value.
_BOOLEANS = frozenset({"opted_out"})
# Free text, where tabs and line breaks are allowed (other control characters never).
_PROSE = frozenset({"evidence"})


class _JsonNumber(str):
    """A JSON number kept as the text it was written as: parsed later by the field's
    own rules (Money.parse, plain digits), never by int() or float() (a 5,000-digit
    integer would raise, 1e400 would become infinity)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _Bad:
    """A record that could not even be read as a row: why, and which field if known."""

    reason: str
    field: str | None = None


def _kind_of(name: str) -> str | None:
    if not name.endswith((".csv", ".jsonl")):
        return None
    return next((k for k in KINDS if name.startswith(k)), None)


def _is_registrations(name: str) -> bool:
    return name.startswith(REGISTRATIONS) and name.endswith((".csv", ".jsonl"))


def _label(name: str) -> str:
    """A file name fit to name a record: escaped, then capped (an escape is longer
    than the byte it stands for)."""
    return excerpt(name, _NAME_CHARS)[:_NAME_CHARS]


class _FileRefused(Exception):
    """A file in the inbox that is not opened: the refusal, and the cursor's note of
    the file as it was (so it is refused once, not on every read) when one applies."""

    def __init__(self, reason: str, marker: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.marker = marker


def _marker(info: os.stat_result) -> str:
    return f"refused:{info.st_dev}:{info.st_ino}:{info.st_mtime_ns}:{info.st_mode}"


def _file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file in the inbox itself.

    A symbolic link is never followed (``lstat``, then ``O_NOFOLLOW``), so a link to
    ``/etc/passwd`` or to a folder elsewhere is never read; a device, FIFO or socket is
    never opened (a FIFO would block the read). The opened file must be the one listed:
    a file swapped for a link in between is refused too.

    Raises:
        _FileRefused: the file is not read, and why.
    """
    try:
        listed = os.lstat(path)
    except OSError as exc:
        raise _FileRefused(_unreadable(exc), None) from None
    if stat.S_ISLNK(listed.st_mode):
        raise _FileRefused(
            refusal(Refusal.FILE_IS_SYMLINK, "a symbolic link; links are never followed"),
            _marker(listed),
        )
    if not stat.S_ISREG(listed.st_mode):
        kind = _file_type(listed.st_mode)
        raise _FileRefused(
            refusal(Refusal.FILE_NOT_REGULAR, f"a {kind}, not a regular file"), _marker(listed)
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _FileRefused(
                refusal(Refusal.FILE_IS_SYMLINK, "became a symbolic link while listed"), None
            ) from None
        raise _FileRefused(_unreadable(exc), None) from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
        listed.st_dev,
        listed.st_ino,
    ):
        os.close(fd)
        raise _FileRefused(refusal(Refusal.FILE_NOT_REGULAR, "replaced while being opened"), None)
    return os.fdopen(fd, "rb")


def _unreadable(exc: BaseException) -> str:
    # The errno's name or the exception's class: never its message, which may quote
    # a path or content.
    code = getattr(exc, "errno", None)
    what = errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
    return refusal(Refusal.FILE_UNREADABLE, what)


def _listed(folder: Path, wanted: Callable[[str], bool]) -> list[Path]:
    """The entries of ``folder`` whose names ``wanted`` reads, by name; nothing below."""
    with os.scandir(folder) as entries:
        return [folder / name for name in sorted(e.name for e in entries if wanted(e.name))]


def _bounded_lines(handle: IO[str], limit: int) -> Iterator[tuple[str, bool]]:
    """The lines of ``handle`` with their ends, each marked too long or not; a line
    over ``limit`` characters is never held whole (its first part is returned, the
    rest read past), so one line of a GB costs no more memory than one of 64 KB."""
    while True:
        chunk = handle.readline(limit + 1)
        if not chunk:
            return
        if len(chunk) > limit and not chunk.endswith(("\n", "\r")):
            rest = chunk
            while rest and not rest.endswith(("\n", "\r")):
                rest = handle.readline(limit + 1)
            yield chunk[:RAW_EXCERPT_CHARS], True
            continue
        yield chunk, False


def _too_large(bounds: InputBounds) -> _Bad:
    return _Bad(
        refusal(Refusal.RECORD_TOO_LARGE, f"longer than {bounds.max_record_chars:,} characters")
    )


def _jsonl_rows(handle: IO[str], bounds: InputBounds) -> Iterator[tuple[int, Any, str]]:
    for number, (line, too_long) in enumerate(
        _bounded_lines(handle, bounds.max_record_chars), start=1
    ):
        if too_long:
            yield number, _too_large(bounds), line
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if json_depth_exceeds(line, bounds.max_json_depth):
            reason = f"nested deeper than {bounds.max_json_depth} levels"
            yield number, _Bad(refusal(Refusal.JSON_TOO_DEEP, reason)), line
            continue
        try:
            row = json.loads(
                line,
                parse_int=_JsonNumber,
                parse_float=_JsonNumber,
                parse_constant=_JsonNumber,
            )
        except json.JSONDecodeError as exc:
            yield number, _Bad(f"not valid JSON: {exc.msg}"), line
            continue
        if not isinstance(row, dict):
            yield number, _Bad("a JSONL line must be an object"), line
            continue
        yield number, row, line


def _csv_rows(handle: IO[str], bounds: InputBounds) -> Iterator[tuple[int, Any, str]]:
    too_long: list[tuple[int, str]] = []

    def lines() -> Iterator[str]:
        for number, (line, over) in enumerate(
            _bounded_lines(handle, bounds.max_record_chars), start=1
        ):
            if over:
                # The csv reader gets a blank line in its place (it skips it), and
                # the record is refused by its line number.
                too_long.append((number, line))
                yield "\n"
            else:
                yield line

    # Module-wide, but no other reader in this program wants more: a field is never
    # longer than its record.
    csv.field_size_limit(bounds.max_record_chars)
    reader = csv.reader(lines())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise _FileRefused(refusal(Refusal.FILE_UNREADABLE, f"header: {exc}"), None) from None
    if too_long:
        raise _FileRefused(refusal(Refusal.FILE_UNREADABLE, "header line too long"), None)
    while True:
        values: list[str] | None = None
        done = False
        try:
            values = next(reader)
        except StopIteration:
            done = True
        except csv.Error as exc:
            name = (
                Refusal.CSV_FIELD_TOO_LARGE
                if "field larger than field limit" in str(exc)
                else Refusal.CSV_MALFORMED
            )
            yield reader.line_num, _Bad(refusal(name, str(exc))), ""
        while too_long:
            number, start = too_long.pop(0)
            yield number, _too_large(bounds), start
        if done:
            return
        if not values:
            continue
        # The header is line 1; a record's line is where it ends (quoted newlines).
        raw = ",".join(values)
        if len(values) > len(header):
            yield reader.line_num, _Bad("more fields than the header names"), raw
            continue
        yield reader.line_num, dict(zip(header, values, strict=False)), raw


def _rows(handle: IO[str], name: str, bounds: InputBounds) -> Iterator[tuple[int, Any, str]]:
    """(line number, row or why it is no row, raw text) per record, read as asked for."""
    if name.endswith(".jsonl"):
        return _jsonl_rows(handle, bounds)
    return _csv_rows(handle, bounds)


def _text_of(handle: io.BufferedReader) -> IO[str]:
    # utf-8-sig drops a byte order mark; bytes that are not UTF-8 survive as
    # surrogates so the row can be refused by name instead of failing the file;
    # newline="" leaves line ends to the readers (csv needs it for quoted newlines;
    # JSONL lines end at \n, \r\n or \r only, never inside a JSON string at a
    # U+2028 the way str.splitlines() would cut it).
    return io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")


@dataclass
class _Page:
    """The rows of one page of a drop, as they are read."""

    accounts: list[Account] = dataclass_field(default_factory=list)
    contacts: list[Contact] = dataclass_field(default_factory=list)
    events: list[SourceEvent] = dataclass_field(default_factory=list)
    rejected: list[Rejected] = dataclass_field(default_factory=list)
    origins: dict[str, str] = dataclass_field(default_factory=dict)
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
            origins=self.origins,
        )


class FileSource:
    """Reads the canonical CSV/JSONL exports in ``folder``.

    Args:
        folder: the inbox.
        bounds: what a record may hold (README, "Bounds on input").
        clock: the time of reading; dates later than it by more than the bounds allow
            are refused.
    """

    name = SOURCE

    def __init__(
        self,
        folder: Path,
        bounds: InputBounds | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.folder = folder
        self.bounds = bounds or InputBounds()
        self.clock = clock or (lambda: datetime.now(UTC))

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
            origins={k: v for page in pages for k, v in page.origins.items()},
        )

    def pages(self, cursor: str | None, page_records: int) -> Iterator[SourceBatch]:
        """The rows of the files new or changed since ``cursor``, ``page_records`` at a
        time (all in one page when 0), read from disk as they are needed: a drop of a
        million customers is never in memory whole. The last page carries the cursor
        (each file's SHA-256)."""
        seen: dict[str, str] = json.loads(cursor) if cursor else {}
        window = self.bounds.date_window(self.clock())
        page = _Page()
        # Across pages, so a second row of one event id is refused wherever it is.
        first_line: dict[str, str] = {}
        files = _listed(self.folder, lambda name: _kind_of(name) is not None)
        # Reference data first, so events of the same drop can name those contacts.
        files.sort(key=lambda p: KINDS.index(_kind_of(p.name) or "events"))
        for path in files:
            kind = _kind_of(path.name) or "events"
            label = _label(path.name)
            for line, row, raw in self._records(path, seen):
                page.records_in += 1
                record = label if line is None else f"{label}:{line}"
                try:
                    if isinstance(row, _Bad):
                        raise InputRejected(record, row.field, row.reason)
                    fields = _fields(record, row, kind)
                    if kind == "accounts":
                        account = _account(record, fields, self.bounds, window)
                        page.accounts.append(account)
                        page.origins[origin_key(account)] = record
                    elif kind == "contacts":
                        contact = _contact(record, fields)
                        page.contacts.append(contact)
                        page.origins[origin_key(contact)] = record
                    else:
                        event = (
                            _event(record, fields, self.bounds, window)
                            if kind == "events"
                            else _nps(record, fields, window)
                        )
                        earlier = first_line.get(event.event_id)
                        if earlier is not None:
                            raise InputRejected(
                                record, "event_id", f"duplicate of {earlier} in this drop"
                            )
                        first_line[event.event_id] = record
                        page.events.append(event)
                        page.origins[origin_key(event)] = record
                except InputRejected as exc:
                    page.rejected.append(_rejected(exc, raw))
                except Exception as exc:
                    # Whatever no check foresaw: still this record's failure alone.
                    page.rejected.append(_unforeseen(record, exc, raw))
                if page_records and page.records_in >= page_records:
                    yield page.batch(cursor=None)
                    page = _Page()
        yield page.batch(cursor=json.dumps(seen, sort_keys=True))

    def _records(self, path: Path, seen: dict[str, str]) -> Iterator[tuple[int | None, Any, str]]:
        """The records of one inbox file not read before, or the file's own refusal
        (line ``None``). ``seen`` learns the file once it was read to its end, or
        refused for what it is (a link, a device)."""
        try:
            handle = _open_regular(path)
        except _FileRefused as refused:
            if refused.marker is None or seen.get(path.name) != refused.marker:
                yield None, _Bad(refused.reason), ""
            if refused.marker is not None:
                seen[path.name] = refused.marker
            return
        with handle:
            try:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
                if seen.get(path.name) == digest:
                    return
                handle.seek(0)
                # Closing the text closes the file too (the outer with is for a refusal
                # before it exists).
                with _text_of(handle) as text:
                    yield from _rows(text, path.name, self.bounds)
            except _FileRefused as refused:
                yield None, _Bad(refused.reason), ""
                return
            except Exception as exc:
                # The rest of the drop goes on. Rows read before stay read; the file
                # is read again next time.
                yield None, _Bad(_unreadable(exc)), ""
                return
        seen[path.name] = digest

    def fetch_registrations(self, cursor: str | None) -> ClaimsRead:
        """The partner registrations of every ``registrations*`` file new or changed
        since ``cursor`` (each file's SHA-256, as :meth:`fetch` keeps). A row that
        cannot be a claim (not JSON, not UTF-8, no time zone on ``registered_at``) is
        refused naming file, line and field; its raw text is not kept (it may hold the
        lead's address). The fields themselves are checked when the claim is made."""
        seen: dict[str, str] = json.loads(cursor) if cursor else {}
        window = self.bounds.date_window(self.clock())
        claims: list[ClaimRow] = []
        rejected: list[Rejected] = []
        for path in _listed(self.folder, _is_registrations):
            label = _label(path.name)
            for line, row, _raw in self._records(path, seen):
                record = label if line is None else f"{label}:{line}"
                try:
                    if isinstance(row, _Bad):
                        raise InputRejected(record, row.field, row.reason)
                    claims.append(_claim(record, _fields(record, row, REGISTRATIONS), window))
                except InputRejected as exc:
                    rejected.append(_rejected(exc, ""))
                except Exception as exc:
                    # Whatever no check foresaw: still this record's failure alone.
                    rejected.append(_unforeseen(record, exc, ""))
        return ClaimsRead(
            source=SOURCE,
            claims=claims,
            rejected=rejected,
            cursor=json.dumps(seen, sort_keys=True),
        )


def _rejected(exc: InputRejected, raw: str) -> Rejected:
    """The refusal as the ledger keeps it. A reason may quote the value it refused
    (a timestamp field holding an address): addresses in it are masked, since reasons
    are shown in artifacts and the CLI."""
    return Rejected(SOURCE, exc.record, exc.field, mask_emails(exc.reason), excerpt(raw))


def _unforeseen(record: str, exc: Exception, raw: str) -> Rejected:
    """A record whose check raised what no check foresaw: refused by the exception's
    class (its message may quote the record), so the drop goes on."""
    reason = refusal(Refusal.UNEXPECTED_ERROR, type(exc).__name__)
    return Rejected(SOURCE, record, None, reason, excerpt(raw))


def _fields(record: str, row: Mapping[Any, Any], kind: str) -> dict[str, str | None]:
    """The fields ``kind`` reads, each checked as text and stripped (``None`` when
    absent or blank); other fields are never looked at.

    Raises:
        InputRejected: a field is an object or array, a boolean where it cannot be,
            not UTF-8, holds a control character, or is longer than its column.
    """
    clean: dict[str, str | None] = {}
    for field, limit in FIELD_CHARS[kind].items():
        value = row.get(field)
        if value is None:
            clean[field] = None
            continue
        if isinstance(value, bool):
            if field not in _BOOLEANS:
                raise InputRejected(
                    record,
                    field,
                    refusal(Refusal.NOT_TEXT, "true/false where text or a number belongs"),
                )
            value = "true" if value else "false"
        if not isinstance(value, str):
            raise InputRejected(
                record, field, refusal(Refusal.NOT_A_SCALAR, "an object or array, not a value")
            )
        text = value.strip()
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InputRejected(
                    record, field, refusal(Refusal.NOT_UTF8, "not valid UTF-8")
                ) from None
        at = control_character(text, prose=field in _PROSE)
        if at is not None:
            raise InputRejected(
                record,
                field,
                refusal(
                    Refusal.CONTROL_CHARACTER,
                    f"U+{ord(text[at]):04X} at character {at + 1}",
                ),
            )
        if len(text) > limit:
            raise InputRejected(
                record,
                field,
                refusal(Refusal.FIELD_TOO_LONG, f"{len(text):,} characters, at most {limit}"),
            )
        clean[field] = text or None
    return clean


def _claim(
    record: str, fields: Mapping[str, str | None], window: tuple[datetime, datetime]
) -> ClaimRow:
    return ClaimRow(
        record=record,
        partner_id=fields["partner_id"],
        domain=fields["domain"],
        contact=fields["contact"],
        evidence=fields["evidence"],
        registered_at=_timestamp(record, fields, "registered_at", window),
    )


def _required(record: str, fields: Mapping[str, str | None], field: str) -> str:
    value = fields[field]
    if value is None:
        raise InputRejected(record, field, "missing")
    return value


def _shown(value: str) -> str:
    """A value quoted in a reason: short (the reason column holds 512 characters)."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _timestamp(
    record: str,
    fields: Mapping[str, str | None],
    field: str,
    window: tuple[datetime, datetime],
) -> datetime:
    value = fields[field]
    if value is None:
        raise InputRejected(record, field, "missing")
    try:
        if not value.isascii():
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputRejected(
            record, field, f"{_shown(value)} is not an ISO 8601 timestamp"
        ) from None
    if parsed.tzinfo is None:
        raise InputRejected(record, field, "timestamp has no time zone (add Z or +01:00)")
    earliest, latest = window
    if not earliest <= parsed <= latest:
        raise InputRejected(
            record,
            field,
            refusal(
                Refusal.DATE_OUT_OF_RANGE,
                f"{parsed.isoformat()} is outside {earliest.date()} .. {latest.isoformat()}",
            ),
        )
    return parsed


def _date(
    record: str,
    fields: Mapping[str, str | None],
    field: str,
    window: tuple[datetime, datetime],
) -> date | None:
    value = fields[field]
    if value is None:
        return None
    try:
        if not value.isascii():
            raise ValueError(value)
        parsed = date.fromisoformat(value)
    except ValueError:
        raise InputRejected(record, field, f"{_shown(value)} is not a date") from None
    earliest, latest = window
    if not earliest.date() <= parsed <= latest.date():
        raise InputRejected(
            record,
            field,
            refusal(
                Refusal.DATE_OUT_OF_RANGE,
                f"{parsed} is outside {earliest.date()} .. {latest.date()}",
            ),
        )
    return parsed


def _int_in(
    record: str, fields: Mapping[str, str | None], field: str, low: int, high: int
) -> int | None:
    value = fields[field]
    if value is None:
        return None
    if not plain_digits(value):
        raise InputRejected(
            record,
            field,
            refusal(Refusal.NOT_DIGITS, f"{_shown(value)} is not a whole number in digits 0-9"),
        )
    number = int(value)
    if not low <= number <= high:
        raise InputRejected(record, field, f"{number} is outside {low}-{high}")
    return number


def _account(
    record: str,
    fields: Mapping[str, str | None],
    bounds: InputBounds,
    window: tuple[datetime, datetime],
) -> Account:
    account_id = _required(record, fields, "account_id")
    return Account(
        account_id=account_id,
        name=fields["name"] or account_id,
        domain=(fields["domain"] or "").lower() or None,
        customer_since=_date(record, fields, "customer_since", window),
    )


def _contact(record: str, fields: Mapping[str, str | None]) -> Contact:
    email = fields["email"]
    if email is not None and not is_email(email):
        raise InputRejected(
            record,
            "email",
            refusal(
                Refusal.NOT_AN_EMAIL,
                "not an email address (exactly one at-sign, a domain with a dot, no spaces)",
            ),
        )
    kind = (fields["referrer_type"] or "customer").lower()
    if kind not in {t.value for t in ReferrerType}:
        raise InputRejected(
            record, "referrer_type", f"{_shown(kind)} is not customer/partner/employee"
        )
    opted = (fields["opted_out"] or "").lower()
    if opted not in _TRUE | _FALSE:
        raise InputRejected(record, "opted_out", f"{_shown(opted)} is not true/false")
    return Contact(
        contact_id=_required(record, fields, "contact_id"),
        account_id=fields["account_id"],
        name=fields["name"] or "",
        email=email,
        referrer_type=ReferrerType(kind),
        opted_out=opted in _TRUE,
        stripe_customer_id=fields["stripe_customer_id"],
        stripe_account_id=fields["stripe_account_id"],
    )


def _amount(record: str, fields: Mapping[str, str | None], bounds: InputBounds) -> Money | None:
    amount_text = fields["amount"]
    if amount_text is None:
        return None
    currency = fields["currency"]
    if currency is None:
        raise InputRejected(record, "currency", "missing (the amount needs one)")
    try:
        amount = Money.parse(amount_text, currency.upper())
    except InvalidAmount as exc:
        raise InputRejected(record, "amount", refusal(Refusal.AMOUNT_INVALID, str(exc))) from None
    if amount.amount_minor < 0:
        raise InputRejected(record, "amount", "negative amount")
    if amount.amount_minor > bounds.max_amount_minor:
        raise InputRejected(
            record,
            "amount",
            refusal(
                Refusal.AMOUNT_TOO_LARGE,
                f"above the largest amount accepted ({bounds.max_amount_minor:,} minor units)",
            ),
        )
    return amount


def _event(
    record: str,
    fields: Mapping[str, str | None],
    bounds: InputBounds,
    window: tuple[datetime, datetime],
) -> SourceEvent:
    event_id = _required(record, fields, "event_id")
    type_text = _required(record, fields, "type")
    try:
        type_ = EventType(type_text)
    except ValueError:
        raise InputRejected(record, "type", f"unknown event type {_shown(type_text)}") from None
    amount = _amount(record, fields, bounds)
    score = _int_in(record, fields, "score", 0, 10)
    if type_ is EventType.NPS_RESPONSE and score is None:
        raise InputRejected(record, "score", "missing (an NPS response needs a score)")
    return SourceEvent(
        source=SOURCE,
        event_id=event_id,
        type=type_,
        occurred_at=_timestamp(record, fields, "occurred_at", window),
        account_id=fields["account_id"],
        contact_id=fields["contact_id"],
        amount=amount,
        score=score,
        csat=_int_in(record, fields, "csat", 1, 5),
        priority=(fields["priority"] or "").lower() or None,
        milestone=fields["milestone"],
        referral_code=fields["referral_code"],
        deal_id=fields["deal_id"],
        ticket_id=fields["ticket_id"],
        referee_email_domain=(fields["referee_email_domain"] or "").lower() or None,
    )


def _nps(
    record: str, fields: Mapping[str, str | None], window: tuple[datetime, datetime]
) -> SourceEvent:
    score = _int_in(record, fields, "score", 0, 10)
    if score is None:
        raise InputRejected(record, "score", "missing")
    return SourceEvent(
        source=SOURCE,
        event_id="nps-" + _required(record, fields, "response_id"),
        type=EventType.NPS_RESPONSE,
        occurred_at=_timestamp(record, fields, "responded_at", window),
        account_id=fields["account_id"],
        contact_id=_required(record, fields, "contact_id"),
        score=score,
    )
