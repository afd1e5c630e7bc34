"""The inbox holds regular files only: a symbolic link, a FIFO or a directory is
quarantined as a file, never opened, and the rest of the drop is read."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain.ports import SourceBatch
from integrations.sources import files
from integrations.sources.files import FileSource

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
EVENTS = "event_id,type,occurred_at,contact_id,score\nE1,nps_response,2026-10-01T10:00:00Z,C1,9\n"


def _read(folder: Path, cursor: str | None = None) -> SourceBatch:
    return FileSource(folder, clock=lambda: NOW).fetch(cursor)


def _reasons(batch: SourceBatch) -> dict[str, str]:
    return {r.record: r.reason for r in batch.rejected}


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "events.csv").write_text(EVENTS)
    return folder


def test_a_symlink_to_a_file_outside_the_inbox_is_refused_and_never_read(
    inbox: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("contact_id,name\nroot,x:0:0:root:/root:/bin/bash\n")
    (inbox / "contacts_passwd.csv").symlink_to(secret)
    (inbox / "events_etc.csv").symlink_to("/etc/passwd")

    batch = _read(inbox)

    assert _reasons(batch) == {
        "contacts_passwd.csv": "file_is_symlink: a symbolic link; links are never followed",
        "events_etc.csv": "file_is_symlink: a symbolic link; links are never followed",
    }
    assert batch.contacts == []
    assert [e.event_id for e in batch.events] == ["E1"]
    assert all(r.raw == "" for r in batch.rejected)


def test_a_symlink_to_a_file_inside_the_inbox_is_refused_too(inbox: Path) -> None:
    (inbox / "events_again.csv").symlink_to(inbox / "events.csv")

    assert _reasons(_read(inbox)) == {
        "events_again.csv": "file_is_symlink: a symbolic link; links are never followed"
    }


def test_a_symlinked_or_plain_directory_named_like_an_export_is_not_entered(
    inbox: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "events.csv").write_text(EVENTS.replace("E1", "E9"))
    (inbox / "events_dir.csv").symlink_to(elsewhere, target_is_directory=True)
    (inbox / "events_folder.csv").mkdir()

    batch = _read(inbox)

    assert _reasons(batch) == {
        "events_dir.csv": "file_is_symlink: a symbolic link; links are never followed",
        "events_folder.csv": "file_not_regular: a directory, not a regular file",
    }
    assert [e.event_id for e in batch.events] == ["E1"]


def test_a_fifo_is_refused_without_being_opened(inbox: Path) -> None:
    # Opening a FIFO for reading would block until a writer came: the read finishing
    # at all shows it was never opened.
    os.mkfifo(inbox / "events_pipe.jsonl")

    batch = _read(inbox)

    assert _reasons(batch) == {"events_pipe.jsonl": "file_not_regular: a FIFO, not a regular file"}
    assert [e.event_id for e in batch.events] == ["E1"]


def test_a_refused_file_is_reported_once_and_read_once_it_is_a_regular_file(
    inbox: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.csv"
    target.write_text(EVENTS.replace("E1", "E2"))
    link = inbox / "events_late.csv"
    link.symlink_to(target)
    first = _read(inbox)

    second = _read(inbox, first.cursor)
    link.unlink()
    link.write_text(EVENTS.replace("E1", "E3"))
    third = _read(inbox, second.cursor)

    assert list(_reasons(first)) == ["events_late.csv"]
    assert (second.records_in, second.rejected) == (0, [])
    assert [e.event_id for e in third.events] == ["E3"]
    assert "events_late.csv" in json.loads(third.cursor or "{}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_file_that_cannot_be_opened_is_refused_as_a_file_and_read_again_later(
    inbox: Path,
) -> None:
    locked = inbox / "events_locked.csv"
    locked.write_text(EVENTS.replace("E1", "E4"))
    locked.chmod(0)
    try:
        first = _read(inbox)
        locked.chmod(0o600)
        second = _read(inbox, first.cursor)
    finally:
        locked.chmod(0o600)

    assert _reasons(first) == {"events_locked.csv": "file_unreadable: EACCES"}
    assert [e.event_id for e in second.events] == ["E4"]


def test_a_file_name_that_is_not_utf8_names_its_records_escaped(inbox: Path) -> None:
    name = os.fsencode(inbox) + b"/events_caf\xe9.csv"
    with open(name, "wb") as handle:
        handle.write(b"event_id,type,occurred_at,contact_id,score\nE5,nps_response,bad,C1,9\n")

    batch = _read(inbox)

    assert _reasons(batch) == {"events_caf\\udce9.csv:2": "'bad' is not an ISO 8601 timestamp"}


def test_a_file_whose_open_fails_is_refused_as_a_file_and_the_drop_goes_on(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inbox / "events_broken.csv").write_text(EVENTS.replace("E1", "E6"))
    real_open = os.open

    def failing_open(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith("events_broken.csv"):
            raise OSError(errno.EIO, "Input/output error")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", failing_open)

    batch = _read(inbox)

    assert _reasons(batch) == {"events_broken.csv": "file_unreadable: EIO"}
    assert [e.event_id for e in batch.events] == ["E1"]
    # Not marked read: the next read tries it again.
    assert "events_broken.csv" not in json.loads(batch.cursor or "{}")


def test_a_file_failing_midway_keeps_the_records_read_before_and_is_read_again(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rows, real_blocks = files._rows, files._blocks

    def failing_rows(handle: Any, name: str, bounds: Any) -> Iterator[Any]:
        rows = real_rows(handle, name, bounds)
        yield next(rows)
        raise OSError(errno.EIO, "Input/output error")

    def failing_blocks(handle: Any, name: str, bounds: Any, room: Any) -> Iterator[Any]:
        blocks = real_blocks(handle, name, bounds, lambda: 1)  # a block of one line
        yield next(blocks)
        raise OSError(errno.EIO, "Input/output error")

    # However the file is read: row by row, or in blocks of lines.
    monkeypatch.setattr(files, "_rows", failing_rows)
    monkeypatch.setattr(files, "_blocks", failing_blocks)
    (inbox / "events.csv").write_text(EVENTS + "E7,nps_response,2026-10-01T10:00:00Z,C1,9\n")

    batch = _read(inbox)

    assert [e.event_id for e in batch.events] == ["E1"]
    assert _reasons(batch) == {"events.csv": "file_unreadable: EIO"}
    assert batch.records_in == 2
    assert "events.csv" not in json.loads(batch.cursor or "{}")


def test_a_long_file_name_of_bytes_that_are_not_utf8_still_fits_the_record_column(
    inbox: Path,
) -> None:
    name = os.fsencode(inbox) + b"/events_" + b"\xe9" * 240 + b".csv"
    with open(name, "wb") as handle:
        handle.write(b"event_id,type,occurred_at,contact_id,score\nE5,nps_response,bad,C1,9\n")

    (refused,) = _read(inbox).rejected

    assert refused.record.startswith("events_\\udce9")
    assert len(refused.record) <= 200 + len(":2")
