"""The file source reads a file of one-line records a block of lines at a time and
checks the plain rows of a block together: what it reads must be exactly what the
row-by-row reader reads, row for row, reject for reject, reason for reason."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from domain.ports import SourceBatch
from integrations.ledger.bulk import EventColumns
from integrations.sources import files
from integrations.sources.files import FileSource
from integrations.sources.sample import generate

NOW = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
EVENTS = "event_id,type,occurred_at,contact_id,score\n"

# Values a hostile or careless export puts where a plain one stands.
ODD_VALUES = [
    " padded",
    "padded ",
    "UPPER",
    "",
    "bell\x07",
    "Éclair",
    "x" * 300,
    "1e3",
    ".5",
    "12.345",
    "-0",
    "007",
    "2026-10-10T08:19:40+01:00",
    "2026-02-30T08:19:40Z",
    "2026-10-10",
    "1999-12-31",
    "2030-01-01T00:00:00Z",
    "2026-10-10T08:19:40.1234567Z",
    "2026-10-10T08:19:40.5Z",
    "Yes",
    "PARTNER",
    "a@b",
    "x y@z.example",
    "11",
    "eur",
    "JPY",
    "KWD",
    "\u00a0nbsp",
    "İstanbul",
]


def _hostile_drop(folder: Path, seed: int) -> None:
    """The sample company (small), with odd values, repeated and conflicting rows,
    blank lines, a byte order mark, line ends of both kinds, and files as JSONL."""
    rnd = random.Random(seed)
    plain = folder.parent / f"plain-{seed}"
    generate(plain, datetime(2026, 12, 6, 21, tzinfo=UTC), 40, seed)
    folder.mkdir()
    for path in sorted(plain.glob("*.csv")):
        if path.name.startswith("registrations"):
            continue
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        header, *body = list(csv.reader(io.StringIO(text, newline="")))
        rows: list[list[str]] = []
        for values in body:
            values = list(values)
            if rnd.random() < 0.15:
                values[rnd.randrange(len(values))] = rnd.choice(ODD_VALUES)
            rows.append(values)
            if rnd.random() < 0.05:
                rows.insert(rnd.randrange(len(rows)), list(values))
        if rnd.random() < 0.5:
            out = io.StringIO(newline="")
            csv.writer(out, lineterminator=rnd.choice(["\r\n", "\n"])).writerows([header, *rows])
            lines = out.getvalue().split("\n")
            lines.insert(rnd.randrange(1, len(lines)), "")
            bom = "\ufeff" if rnd.random() < 0.5 else ""
            data = bom + "\n".join(lines)
            (folder / path.name).write_bytes(data.encode("utf-8", "surrogateescape"))
        else:
            lines = []
            for values in rows:
                row: dict[str, Any] = dict(zip(header, values, strict=False))
                if rnd.random() < 0.05 and row.get("score", "").isdigit():
                    row["score"] = int(row["score"])  # a number, not text
                lines.append(json.dumps(row, ensure_ascii=rnd.random() < 0.5))
            lines.insert(rnd.randrange(len(lines)), "  ")
            lines.insert(rnd.randrange(len(lines)), "[1, 2]")
            (folder / (path.stem + ".jsonl")).write_text(
                "\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape"
            )


def _pages(folder: Path, page_records: int) -> list[SourceBatch]:
    return list(FileSource(folder, clock=lambda: NOW).pages(None, page_records))


def _as_read(batch: SourceBatch) -> tuple[Any, ...]:
    return (
        list(batch.accounts),
        list(batch.contacts),
        list(batch.events),
        [(r.record, r.field, r.reason, r.raw) for r in batch.rejected],
        batch.records_in,
        batch.reference_only,
        batch.cursor,
        dict(sorted(batch.origins.items())),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("page_records", [0, 97])
def test_a_hostile_drop_reads_the_same_in_blocks_as_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, page_records: int
) -> None:
    inbox = tmp_path / "inbox"
    _hostile_drop(inbox, seed)

    in_blocks = _pages(inbox, page_records)
    real_scan = files._scan
    monkeypatch.setattr(
        files, "_scan", lambda *args: (real_scan(*args)[0], False)
    )  # every file read row by row, as before blocks
    row_by_row = _pages(inbox, page_records)

    # The drop did go through blocks, and held what the checks refuse.
    assert any(isinstance(page.events, EventColumns) for page in in_blocks)
    assert sum(len(page.rejected) for page in row_by_row) > 10
    assert [_as_read(p) for p in in_blocks] == [_as_read(p) for p in row_by_row]


def test_an_event_id_repeated_pages_apart_is_refused_naming_where_it_was_first_read(
    tmp_path: Path,
) -> None:
    rows = ["E1", "E2", "E3", "E1", "E4", "E1", "E2"]
    (tmp_path / "events.csv").write_text(
        EVENTS + "".join(f"{i},nps_response,2026-10-01T10:00:00Z,C1,9\n" for i in rows)
    )

    pages = _pages(tmp_path, 2)

    assert [e.event_id for page in pages for e in page.events] == ["E1", "E2", "E3", "E4"]
    refused = [(r.record, r.field, r.reason) for page in pages for r in page.rejected]
    assert refused == [
        ("events.csv:5", "event_id", "duplicate of events.csv:2 in this drop"),
        ("events.csv:7", "event_id", "duplicate of events.csv:2 in this drop"),
        ("events.csv:8", "event_id", "duplicate of events.csv:3 in this drop"),
    ]
    assert sum(page.records_in for page in pages) == len(rows)


def test_an_event_id_repeated_in_one_page_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text(
        "".join(
            json.dumps({"event_id": i, "type": "signup", "occurred_at": "2026-10-01T10:00:00Z"})
            + "\n"
            for i in ("A", "B", "A")
        )
    )

    (page,) = _pages(tmp_path, 0)

    assert [e.event_id for e in page.events] == ["A", "B"]
    (refused,) = page.rejected
    assert (refused.record, refused.reason) == (
        "events.jsonl:3",
        "duplicate of events.jsonl:1 in this drop",
    )


def test_ids_of_one_hash_are_still_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every id hashed alike: only the ids themselves can tell a repeat from a collision.
    monkeypatch.setattr(
        files._SeenIds, "_hashes", staticmethod(lambda ids: np.zeros(len(ids), dtype=np.uint64))
    )
    seen = files._SeenIds()
    label = seen.label("events.csv")

    def check(*ids: str, first_line: int) -> dict[int, str]:
        lines = np.arange(first_line, first_line + len(ids), dtype=np.int64)
        return seen.check(pl.Series(ids), np.full(len(ids), label), lines)

    assert check("A", "B", first_line=2) == {}
    assert check("C", "B", first_line=4) == {1: "events.csv:3"}
    assert check("D", "A", "C", first_line=6) == {1: "events.csv:2", 2: "events.csv:4"}
