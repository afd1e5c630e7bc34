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

import bisect
import csv
import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import polars as pl

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
from integrations.ledger.base import account_fields, contact_fields
from integrations.ledger.bulk import (
    EVENT_SCHEMA,
    AccountColumns,
    ContactColumns,
    EventColumns,
    event_values,
)
from integrations.sources import columnar
from integrations.sources.columnar import POS
from integrations.sources.http import mask_emails

logger = logging.getLogger(__name__)

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


# Bytes read at a time to hash a file and see whether every record is one line.
_SCAN_BYTES = 1 << 23
# Lines per block when a page has no bound (a drop read whole).
_BLOCK_LINES = 10_000
_BOM = b"\xef\xbb\xbf"
# A CSV line whose quotes all enclose whole fields: it is one record, and polars and
# the csv module read it into the same values.
_QUOTED_LINE = re.compile(rb'(?:[^",\n]*|"(?:[^"\n]|"")*")(?:,(?:[^",\n]*|"(?:[^"\n]|"")*"))*\r?')


def _scan(handle: IO[bytes], name: str, bounds: InputBounds) -> tuple[str, bool]:
    """The file's SHA-256, and whether each of its records is exactly one line: lines
    end in a line feed (a carriage return only just before it), no line is longer
    than a record may be, a CSV header of distinct names and no quote that could
    open a field spanning lines."""
    digest = hashlib.sha256()
    one_line = name.endswith((".csv", ".jsonl"))
    is_csv = name.endswith(".csv")
    limit = bounds.max_record_chars
    tail = b""
    first: bytes | None = None
    while chunk := handle.read(_SCAN_BYTES):
        digest.update(chunk)
        if not one_line:
            continue
        data = tail + chunk
        lines = data.split(b"\n")
        tail = lines.pop()
        body = data[: len(data) - len(tail)]
        if first is None and lines:
            first = lines[0]
        one_line = (
            body.count(b"\r") == body.count(b"\r\n")
            and len(tail) <= limit
            and (not lines or max(map(len, lines)) <= limit)
            and not (
                is_csv
                and b'"' in body
                and not all(_QUOTED_LINE.fullmatch(line) for line in lines if b'"' in line)
            )
        )
    if tail and one_line:
        first = tail if first is None else first
        one_line = not (
            b"\r" in tail[:-1]
            or len(tail) > limit
            or (is_csv and b'"' in tail and not _QUOTED_LINE.fullmatch(tail))
        )
    if one_line and is_csv:
        one_line = first is not None and _header(first) is not None
    return digest.hexdigest(), one_line


def _header(line: bytes) -> list[str] | None:
    """A CSV file's header line read as the csv module reads it, if it is plain:
    UTF-8, one or more names, no name twice."""
    try:
        text = line.removeprefix(_BOM).decode("utf-8")
        header = next(csv.reader([text]), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    return header if header and len(set(header)) == len(header) else None


class _LineFeed:
    """The lines of a binary file (without their line feed), ``take(k)`` at a time."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._lines: list[bytes] = []
        self._at = 0
        self._tail = b""
        self._done = False

    def take(self, count: int) -> list[bytes]:
        while len(self._lines) - self._at < count and not self._done:
            chunk = self._handle.read(_SCAN_BYTES)
            if not chunk:
                self._done = True
                if self._tail:
                    self._lines.append(self._tail)
                break
            lines = (self._tail + chunk).split(b"\n")
            self._tail = lines.pop()
            self._lines = self._lines[self._at :] + lines
            self._at = 0
        taken = self._lines[self._at : self._at + count]
        self._at += len(taken)
        return taken


def _jsonl_record(line: str, bounds: InputBounds) -> tuple[Any, str] | None:
    """One JSONL line as :func:`_jsonl_rows` reads it: the row or why it is none, and
    its text; ``None`` for a blank line."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if json_depth_exceeds(line, bounds.max_json_depth):
        reason = f"nested deeper than {bounds.max_json_depth} levels"
        return _Bad(refusal(Refusal.JSON_TOO_DEEP, reason)), line
    try:
        row = json.loads(
            line, parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_JsonNumber
        )
    except json.JSONDecodeError as exc:
        return _Bad(f"not valid JSON: {exc.msg}"), line
    if not isinstance(row, dict):
        return _Bad("a JSONL line must be an object"), line
    return row, line


@dataclass
class _Block:
    """Records of a file whose records are one line each: ``lines`` (blank lines
    left out), the line number of each (``numbers``), ``values`` each field's text by
    record (``None`` when absent), and ``alone`` the records the row-by-row reader must
    read (a JSONL line that is not a flat object of texts, a CSV line not UTF-8)."""

    lines: list[bytes]
    numbers: np.ndarray
    header: list[str] | None
    bounds: InputBounds
    values: pl.DataFrame
    alone: list[int]

    @property
    def count(self) -> int:
        return len(self.lines)

    def frame(self, fields: Mapping[str, int]) -> pl.DataFrame:
        """One text column per field of ``fields`` (null where absent)."""
        present = set(self.values.columns)
        return self.values.select(
            [pl.col(f) if f in present else pl.lit(None, pl.String).alias(f) for f in fields]
        )

    def record(self, index: int) -> tuple[Any, str]:
        """Record ``index`` as the row-by-row reader reads it: the row (or why it is
        none) and its raw text."""
        return _read_line(self.lines[index], self.header, self.bounds)

    def raw(self, line: int) -> str:
        """The raw text the row-by-row reader keeps of the record at ``line``."""
        return self.record(int(np.searchsorted(self.numbers, line)))[1]


def _read_line(line: bytes, header: list[str] | None, bounds: InputBounds) -> tuple[Any, str]:
    """One line that is not blank, read as the row-by-row reader reads it (CSV with
    ``header``, else JSONL): the row (or why it is none) and its raw text."""
    text = line.decode("utf-8", "surrogateescape")
    if header is None:
        read = _jsonl_record(text, bounds)
        assert read is not None  # not blank
        return read
    try:
        values = next(csv.reader([text]))
    except csv.Error as exc:
        name = (
            Refusal.CSV_FIELD_TOO_LARGE
            if "field larger than field limit" in str(exc)
            else Refusal.CSV_MALFORMED
        )
        return _Bad(refusal(name, str(exc))), ""
    raw = ",".join(values)
    if len(values) > len(header):
        return _Bad("more fields than the header names"), raw
    return dict(zip(header, values, strict=False)), raw


def _blocks(
    handle: IO[bytes], name: str, bounds: InputBounds, room: Callable[[], int]
) -> Iterator[tuple[int | None, Any, str] | _Block]:
    """The records of a file of one-line records (see :func:`_scan`), in blocks of
    ``room()`` lines; a block's records one by one where polars will not split it."""
    csv.field_size_limit(bounds.max_record_chars)
    feed = _LineFeed(handle)
    header: list[str] | None = None
    number = 0
    fields = FIELD_CHARS[_kind_of(name) or "events"]
    if name.endswith(".csv"):
        head = feed.take(1)
        if not head:
            return
        header = _header(head[0])
        assert header is not None  # _scan saw it
        number = 1
    while lines := feed.take(max(1, room())):
        first = number + 1
        number += len(lines)
        if first == 1:
            lines[0] = lines[0].removeprefix(_BOM)
        block = _block(lines, first, header, bounds, fields)
        if block is not None:
            yield block
            continue
        for offset, line in enumerate(lines):
            if line not in (b"", b"\r"):
                row, raw = _read_line(line, header, bounds)
                yield first + offset, row, raw


def _numbered(
    lines: list[bytes], first: int, blank: Callable[[bytes], bool]
) -> tuple[list[bytes], np.ndarray]:
    """``lines`` without the blank ones, and the line number of each kept."""
    kept = [i for i, line in enumerate(lines) if not blank(line)]
    return [lines[i] for i in kept], np.asarray(kept, dtype=np.int64) + first


def _block(
    lines: list[bytes],
    first: int,
    header: list[str] | None,
    bounds: InputBounds,
    fields: Mapping[str, int],
) -> _Block | None:
    """``lines`` (from line ``first``) as a block, or ``None`` when they must be read
    one by one."""
    if header is None:
        return _jsonl_block(lines, first, bounds, fields)
    data = b"\n".join(lines)
    if (
        b"\n\n" in data
        or b"\n\r\n" in data
        or lines[0] in (b"", b"\r")
        or lines[-1] in (b"", b"\r")
    ):
        # Blank lines are no records (the csv module skips them).
        lines, numbers = _numbered(lines, first, lambda line: line in (b"", b"\r"))
        data = b"\n".join(lines)
    else:
        numbers = np.arange(first, first + len(lines), dtype=np.int64)
    if not lines:
        return None
    alone: list[int] = []
    read = lines
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # The lines that are not UTF-8 are read alone (refused by the field that
        # holds the bytes); a row of one empty field stands in for them here.
        read = list(lines)
        for index, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                alone.append(index)
                read[index] = b'""'
        data = b"\n".join(read)
    try:
        names = [f"c{i}" for i in range(len(header))]
        frame = pl.read_csv(
            data + b"\n",
            has_header=False,
            schema=dict.fromkeys(names, pl.String),
            quote_char='"',
        )
    except Exception:
        return None
    if frame.height != len(lines):
        return None
    values = frame.select([pl.col(c).alias(h) for c, h in zip(names, header, strict=True)])
    return _Block(lines, numbers, header, bounds, values, alone)


def _jsonl_block(
    lines: list[bytes], first: int, bounds: InputBounds, fields: Mapping[str, int]
) -> _Block | None:
    numbers = np.arange(first, first + len(lines), dtype=np.int64)
    plain = _plain_objects(lines)
    if plain is not None:
        values = pl.from_dicts(plain, schema=dict.fromkeys(fields, pl.String))
        return _Block(lines, numbers, None, bounds, values, [])
    alone: list[int] = []
    blank: list[int] = []
    columns: dict[str, list[str | None]] = {f: [] for f in fields}
    appends = [(f, columns[f].append) for f in fields]
    empty: dict[str, Any] = {}
    for index, line in enumerate(lines):
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            if not line.decode("utf-8", "surrogateescape").strip():
                blank.append(index)  # no record (the row-by-row reader skips it)
                continue
            row = None
        # A flat object of texts and nulls only: a number keeps the text it was
        # written as only on the row-by-row reader, a nested value needs its checks.
        if type(row) is not dict or not all(type(v) is str or v is None for v in row.values()):
            alone.append(index - len(blank))
            row = empty
        for f, append in appends:
            append(row.get(f))
    if blank:
        skipped = set(blank)
        lines, numbers = _numbered(lines, first, lambda _line: False)
        keep = [i for i in range(len(lines)) if i not in skipped]
        lines, numbers = [lines[i] for i in keep], numbers[keep]
    if not lines:
        return None
    values = pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String))
    return _Block(lines, numbers, None, bounds, values, alone)


def _plain_objects(lines: list[bytes]) -> list[dict[str, str | None]] | None:
    """Every line read as JSON, when each is a flat object of texts and nulls (the
    block's usual case, read without a step per field); ``None`` when any is not."""
    loads = orjson.loads
    try:
        rows = [loads(line) for line in lines]
    except orjson.JSONDecodeError:
        return None
    if not all(type(row) is dict for row in rows):
        return None
    if not {type(v) for row in rows for v in row.values()} <= {str, type(None)}:
        return None
    return rows


@dataclass
class _Fast:
    """Rows of one block that passed every check at once (:mod:`columnar`): the
    frame (with ``_pos``, the record's place in its page, and ``_line``) and the
    block, to name and quote a row later refused (a repeated event id)."""

    frame: pl.DataFrame
    label: str
    block: _Block


@dataclass
class _Page:
    """The rows of one page of a drop, as they are read.

    Rows checked one by one are kept as objects, each with its place in the page;
    rows checked a block at a time as frames (``fast``). The page's events are
    checked for repeated ids when it is closed (:meth:`batch`), in the order read.
    """

    accounts: list[Account] = dataclass_field(default_factory=list)
    contacts: list[Contact] = dataclass_field(default_factory=list)
    events: list[SourceEvent] = dataclass_field(default_factory=list)
    rejected: list[Rejected] = dataclass_field(default_factory=list)
    # Where each row checked alone was read: (place in the page, origin key, record).
    origins: list[tuple[int, str, str]] = dataclass_field(default_factory=list)
    records_in: int = 0
    account_at: list[int] = dataclass_field(default_factory=list)
    contact_at: list[int] = dataclass_field(default_factory=list)
    event_at: list[int] = dataclass_field(default_factory=list)
    rejected_at: list[int] = dataclass_field(default_factory=list)
    # Each event checked one by one: its file's label, its line, its raw text.
    event_from: list[tuple[str, int | None, str]] = dataclass_field(default_factory=list)
    fast: dict[str, list[_Fast]] = dataclass_field(
        default_factory=lambda: {"accounts": [], "contacts": [], "events": []}
    )

    def reject(self, rejected: Rejected) -> None:
        self.rejected_at.append(self.records_in - 1)
        self.rejected.append(rejected)

    def batch(self, cursor: str | None, seen: _SeenIds) -> SourceBatch:
        events, dropped = self._events(seen)
        repeats = {place for place, _ in dropped}
        rejected = self.rejected
        if dropped:
            at = self.rejected_at + [d[0] for d in dropped]
            together = [*rejected, *(d[1] for d in dropped)]
            rejected = [together[i] for i in sorted(range(len(at)), key=at.__getitem__)]
        accounts = self._rows("accounts", self.accounts, self.account_at)
        contacts = self._rows("contacts", self.contacts, self.contact_at)
        return SourceBatch(
            source=SOURCE,
            accounts=accounts,
            contacts=contacts,
            events=events,
            rejected=rejected,
            records_in=self.records_in,
            reference_only=len(accounts) + len(contacts),
            cursor=cursor,
            origins=_Origins(self.origins, self.fast, repeats),
        )

    def _rows(self, kind: str, objects: list[Any], at: list[int]) -> Sequence[Any]:
        fast = self.fast[kind]
        if not fast:
            return objects
        columns = AccountColumns if kind == "accounts" else ContactColumns
        values = account_fields if kind == "accounts" else contact_fields
        frames = [f.frame.select([*columns.schema, POS]) for f in fast]
        if objects:
            frames.append(
                columns.of(objects, values).with_columns(pl.Series(POS, at, dtype=pl.Int64))
            )
        frame = pl.concat(frames, how="vertical_relaxed")
        if objects or len(frames) > 1:
            frame = frame.sort(POS)
        return columns(frame.drop(POS))

    def _events(self, seen: _SeenIds) -> tuple[Sequence[SourceEvent], list[tuple[int, Rejected]]]:
        """The page's events without repeats of an event id read before in this drop,
        and the repeats as rejects by their place in the page."""
        fast = self.fast["events"]
        ids: list[pl.Series] = [f.frame.get_column("event_id") for f in fast]
        at: list[pl.Series] = [f.frame.get_column(POS) for f in fast]
        labels: list[str] = []
        lines: list[pl.Series] = []
        for f in fast:
            labels.append(f.label)
            lines.append(f.frame.get_column("_line"))
        if self.events:
            ids.append(pl.Series([e.event_id for e in self.events], dtype=pl.String))
            at.append(pl.Series(self.event_at, dtype=pl.Int64))
        all_ids = pl.concat(ids) if ids else pl.Series([], dtype=pl.String)
        all_at = pl.concat(at) if at else pl.Series([], dtype=pl.Int64)
        # Where each event was read: (label index, line) for the repeats' reason.
        label_of = [seen.label(lb) for lb in labels]
        label_col = pl.concat(
            [
                pl.repeat(li, len(s), dtype=pl.Int64, eager=True)
                for li, s in zip(label_of, lines, strict=True)
            ]
            + [pl.Series([seen.label(lb) for lb, _, _ in self.event_from], dtype=pl.Int64)]
        )
        line_col = pl.concat(
            [s.cast(pl.Int64) for s in lines]
            + [pl.Series([ln for _, ln, _ in self.event_from], dtype=pl.Int64)]
        )
        order = all_at.arg_sort()
        ordered = all_ids.gather(order)
        earlier = seen.check(
            ordered, label_col.gather(order).to_numpy(), line_col.gather(order).to_numpy()
        )
        dropped: list[tuple[int, Rejected]] = []
        repeated: set[int] = set()
        if earlier:
            n_fast = sum(len(s) for s in lines)
            order_list = order.to_list()
            at_list = all_at.to_list()
            for k, first in earlier.items():
                index = order_list[k]
                place = at_list[index]
                if index < n_fast:
                    f, offset = _which(fast, index)
                    line = f.frame.get_column("_line")[offset]
                    record = f"{f.label}:{line}"
                    raw = f.block.raw(line)
                else:
                    label, line, raw = self.event_from[index - n_fast]
                    record = label if line is None else f"{label}:{line}"
                exc = InputRejected(record, "event_id", f"duplicate of {first} in this drop")
                dropped.append((place, _rejected(exc, raw)))
                repeated.add(place)
        if not fast:
            kept = [e for e, p in zip(self.events, self.event_at, strict=True) if p not in repeated]
            return kept, dropped
        frames = [f.frame.select([*EVENT_SCHEMA, POS]) for f in fast]
        if self.events:
            frames.append(
                EventColumns.of(self.events, event_values).with_columns(
                    pl.Series(POS, self.event_at, dtype=pl.Int64)
                )
            )
        frame = pl.concat(frames, how="vertical_relaxed")
        if self.events or len(frames) > 1:
            frame = frame.sort(POS)
        if repeated:
            frame = frame.filter(~pl.col(POS).is_in(list(repeated)))
        return EventColumns(frame.drop(POS), SOURCE), dropped


def _which(fast: list[_Fast], index: int) -> tuple[_Fast, int]:
    for f in fast:
        if index < f.frame.height:
            return f, index
        index -= f.frame.height
    raise IndexError(index)


class _Origins(Mapping[str, str]):
    """Where each row of a page was read, by :func:`origin_key`, worked out when first
    asked (only a page the ledger refuses asks): as the row-by-row reader kept them,
    the last row of an account or contact, the first of an event."""

    def __init__(
        self,
        alone: list[tuple[int, str, str]],
        fast: dict[str, list[_Fast]],
        repeats: set[int],
    ) -> None:
        self._alone = alone
        self._fast = fast
        self._repeats = repeats
        self._all: dict[str, str] | None = None

    def _built(self) -> dict[str, str]:
        if self._all is None:
            found = list(self._alone)
            for kind, prefix, key in (
                ("accounts", "account", "account_id"),
                ("contacts", "contact", "contact_id"),
                ("events", "event", "event_id"),
            ):
                for f in self._fast[kind]:
                    found += zip(
                        f.frame.get_column(POS).to_list(),
                        [f"{prefix}:{i}" for i in f.frame.get_column(key).to_list()],
                        [f"{f.label}:{n}" for n in f.frame.get_column("_line").to_list()],
                        strict=True,
                    )
            found.sort()
            built: dict[str, str] = {}
            for place, key, record in found:
                if place in self._repeats:
                    continue  # a repeated event id, refused
                if key.startswith("event:"):
                    built.setdefault(key, record)
                else:
                    built[key] = record
            self._all = built
        return self._all

    def __getitem__(self, key: str) -> str:
        return self._built()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


class _SeenIds:
    """The event ids read so far in one read of the drop, each with where it was first
    read, kept compactly: a 64-bit hash of each id in sorted arrays (merged as they
    grow), the ids themselves to tell two ids of one hash apart, and (file, line).
    About 40 bytes an id, where a dict of them took about 170."""

    def __init__(self) -> None:
        self._labels: list[str] = []
        self._label_index: dict[str, int] = {}
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []
        self._ids: list[pl.Series] = []
        self._files: list[np.ndarray] = []
        self._lines: list[np.ndarray] = []
        self._starts: list[int] = []
        self._count = 0

    def label(self, label: str) -> int:
        index = self._label_index.get(label)
        if index is None:
            index = self._label_index[label] = len(self._labels)
            self._labels.append(label)
        return index

    def _record(self, g: int) -> tuple[str, str]:
        chunk = bisect.bisect_right(self._starts, g) - 1
        offset = g - self._starts[chunk]
        label = self._labels[int(self._files[chunk][offset])]
        line = int(self._lines[chunk][offset])
        return self._ids[chunk][offset], f"{label}:{line}"

    def check(self, ids: pl.Series, files: np.ndarray, lines: np.ndarray) -> dict[int, str]:
        """Which of ``ids`` (in the order read) repeat one read before, and where that
        one was first read; the others are remembered.

        Returns:
            By index in ``ids``: the record (``events.csv:17``) the id was first read at.
        """
        if ids.len() == 0:
            return {}
        hashes = self._hashes(ids)
        first_here = ids.is_first_distinct().to_numpy()
        earlier: dict[int, str] = {}
        candidates = np.zeros(len(hashes), dtype=bool)
        for level_hashes, _ in self._levels:
            places = np.searchsorted(level_hashes, hashes)
            inside = places < len(level_hashes)
            hit = np.zeros(len(hashes), dtype=bool)
            hit[inside] = level_hashes[places[inside]] == hashes[inside]
            candidates |= hit
        id_list: list[str] | None = None
        for k in np.flatnonzero(candidates & first_here).tolist():
            id_list = id_list or ids.to_list()
            found = self._find(int(hashes[k]), id_list[k])
            if found is not None:
                earlier[k] = found
        if not first_here.all():
            id_list = id_list or ids.to_list()
            first_at: dict[str, int] = {}
            for k, row_id in enumerate(id_list):
                if row_id not in first_at:
                    first_at[row_id] = k
                    continue
                f = first_at[row_id]
                earlier[k] = earlier.get(f) or (f"{self._labels[int(files[f])]}:{int(lines[f])}")
        new = first_here.copy()
        if earlier:
            new[list(earlier)] = False
        self._remember(ids.filter(pl.Series(new)), hashes[new], files[new], lines[new])
        return earlier

    @staticmethod
    def _hashes(ids: pl.Series) -> np.ndarray:
        return ids.hash(seed=0).to_numpy()

    def _find(self, hashed: int, row_id: str) -> str | None:
        """The first record of ``row_id`` remembered (under its hash), if any."""
        best: tuple[int, str] | None = None
        for level_hashes, level_at in self._levels:
            place = int(np.searchsorted(level_hashes, np.uint64(hashed)))
            while place < len(level_hashes) and int(level_hashes[place]) == hashed:
                g = int(level_at[place])
                stored, record = self._record(g)
                if stored == row_id and (best is None or g < best[0]):
                    best = (g, record)
                place += 1
        return None if best is None else best[1]

    def _remember(
        self, ids: pl.Series, hashes: np.ndarray, files: np.ndarray, lines: np.ndarray
    ) -> None:
        if not len(hashes):
            return
        self._starts.append(self._count)
        self._ids.append(ids)
        self._files.append(files.astype(np.uint32))
        self._lines.append(lines.astype(np.int64))
        at = np.arange(self._count, self._count + len(hashes), dtype=np.int64)
        self._count += len(hashes)
        order = np.argsort(hashes, kind="stable")
        self._levels.append((hashes[order], at[order]))
        # Merge the newest levels while they are of a size, so a lookup searches a few
        # arrays, and each id is merged about log2(ids / page) times in all.
        while len(self._levels) > 1 and len(self._levels[-2][0]) <= 2 * len(self._levels[-1][0]):
            (h1, a1), (h2, a2) = self._levels[-2], self._levels[-1]
            h, a = np.concatenate([h1, h2]), np.concatenate([a1, a2])
            order = np.argsort(h, kind="stable")
            self._levels[-2:] = [(h[order], a[order])]


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
        (each file's SHA-256).

        A file whose every record is one line (no carriage return, no quoted line
        break, no line over the bound) is read a block of lines at a time, and the
        rows of a block are checked together (:mod:`integrations.sources.columnar`);
        a row those checks do not pass is checked alone, as every row of any other
        file is, with the same outcome and reason as ever.
        """
        seen: dict[str, str] = json.loads(cursor) if cursor else {}
        window = self.bounds.date_window(self.clock())
        page = _Page()
        # Across pages, so a second row of one event id is refused wherever it is.
        ids = _SeenIds()
        files = _listed(self.folder, lambda name: _kind_of(name) is not None)
        # Reference data first, so events of the same drop can name those contacts.
        files.sort(key=lambda p: KINDS.index(_kind_of(p.name) or "events"))

        def room() -> int:
            return page_records - page.records_in if page_records else _BLOCK_LINES

        for path in files:
            kind = _kind_of(path.name) or "events"
            label = _label(path.name)
            for item in self._records(path, seen, room):
                if isinstance(item, _Block):
                    self._take_block(page, kind, label, item, window)
                else:
                    line, row, raw = item
                    page.records_in += 1
                    self._take(page, kind, label, line, row, raw, window)
                if page_records and page.records_in >= page_records:
                    yield page.batch(None, ids)
                    page = _Page()
        yield page.batch(json.dumps(seen, sort_keys=True), ids)

    def _take(
        self,
        page: _Page,
        kind: str,
        label: str,
        line: int | None,
        row: Any,
        raw: str,
        window: tuple[datetime, datetime],
    ) -> None:
        """Check one record alone and add it to ``page`` (counted already)."""
        record = label if line is None else f"{label}:{line}"
        at = page.records_in - 1
        try:
            if isinstance(row, _Bad):
                raise InputRejected(record, row.field, row.reason)
            fields = _fields(record, row, kind)
            if kind == "accounts":
                account = _account(record, fields, self.bounds, window)
                page.accounts.append(account)
                page.account_at.append(at)
                page.origins.append((at, origin_key(account), record))
            elif kind == "contacts":
                contact = _contact(record, fields)
                page.contacts.append(contact)
                page.contact_at.append(at)
                page.origins.append((at, origin_key(contact), record))
            else:
                event = (
                    _event(record, fields, self.bounds, window)
                    if kind == "events"
                    else _nps(record, fields, window)
                )
                # A repeated event id is refused when the page closes (_Page.batch).
                page.events.append(event)
                page.event_at.append(at)
                page.event_from.append((label, line, raw))
                page.origins.append((at, origin_key(event), record))
        except InputRejected as exc:
            page.reject(_rejected(exc, raw))
        except Exception as exc:
            # Whatever no check foresaw: still this record's failure alone.
            page.reject(_unforeseen(record, exc, raw))

    def _take_block(
        self,
        page: _Page,
        kind: str,
        label: str,
        block: _Block,
        window: tuple[datetime, datetime],
    ) -> None:
        """Check a block of one-line records together; those the block checks do not
        pass are checked alone (:meth:`_take`), in their place."""
        base = page.records_in
        fields = FIELD_CHARS[kind]
        raw = block.frame(fields)
        raw = raw.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias(POS))
        try:
            clean, rest = columnar.split(kind, raw, fields, self.bounds, window)
        except Exception as exc:
            # Whatever no block check foresaw: every row of the block is checked alone.
            logger.warning(
                "file source: checking a block of %s at once failed (%s); checking its rows "
                "one by one",
                label,
                type(exc).__name__,
            )
            clean, rest = raw.clear(), list(range(block.count))
        if block.alone:
            clean = clean.filter(~pl.col(POS).is_in(block.alone))
            rest = sorted({*rest, *block.alone})
        numbers = pl.Series("_line", block.numbers)
        clean = clean.with_columns(
            numbers.gather(clean.get_column(POS)), (pl.col(POS) + base).alias(POS)
        )
        target = "events" if kind in ("events", "nps") else kind
        if clean.height:
            page.fast[target].append(_Fast(clean, label, block))
        for index in rest:
            page.records_in = base + index + 1
            row, text = block.record(index)
            self._take(page, kind, label, int(block.numbers[index]), row, text, window)
        page.records_in = base + block.count

    def _records(
        self,
        path: Path,
        seen: dict[str, str],
        room: Callable[[], int] | None = None,
    ) -> Iterator[tuple[int | None, Any, str] | _Block]:
        """The records of one inbox file not read before, or the file's own refusal
        (line ``None``). ``seen`` learns the file once it was read to its end, or
        refused for what it is (a link, a device).

        With ``room`` (how many records the page has room for), a file of one-line
        records comes as blocks of lines (:class:`_Block`), ``room()`` lines each.
        """
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
                digest, one_line = _scan(handle, path.name, self.bounds)
                if seen.get(path.name) == digest:
                    return
                handle.seek(0)
                if room is not None and one_line:
                    yield from _blocks(handle, path.name, self.bounds, room)
                else:
                    # Closing the text closes the file too (the outer with is for a
                    # refusal before it exists).
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
            for item in self._records(path, seen):
                if isinstance(item, _Block):
                    continue  # never: blocks come only with a page's room to fill
                line, row, _raw = item
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
