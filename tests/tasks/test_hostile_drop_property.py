"""Property: whatever mix of hostile and valid records a drop holds, in CSV and JSONL,
the ingest completes, and every record is stored or quarantined with its reason
(named by file and line): none lost, the counts add up."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.sources.files import FileSource
from tasks.ingest import ingest_sources
from tests.hostile_inputs import CLASSES, Case, Values, build, write
from tests.moments_seed import undetected_events

NOW = datetime.now(UTC)

# Text a valid record may hold: letters, digits, punctuation, symbols and spaces of any
# script; no control characters, no surrogates; at most a milestone column's length.
_TEXT = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=0, max_size=120)
_VALUES = st.builds(
    Values,
    amount_minor=st.integers(0, 1_000_000_000),
    score=st.integers(0, 10),
    text=_TEXT,
    days_ago=st.integers(0, 3_000),
)
_KINDS = st.sampled_from([(name, fmt) for name, (_, formats) in CLASSES.items() for fmt in formats])


@st.composite
def drops(draw: st.DrawFn) -> list[Case]:
    """A drop: valid records and every kind of malformed one, in random order."""
    picks = draw(st.lists(st.tuples(_KINDS, _VALUES), min_size=60, max_size=200))
    return [build(name, fmt, i, NOW, values) for i, ((name, fmt), values) in enumerate(picks)]


# 40 drops of 60 to 200 records: thousands of records a run, in about 15 s.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases=drops(), page_records=st.sampled_from([7, 64, 10_000]))
def test_every_record_of_a_hostile_drop_is_stored_or_quarantined_with_its_reason(
    sqlite_template: Path, cases: list[Case], page_records: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shutil.copy(sqlite_template, root / "ledger.db")
        (root / "inbox").mkdir()
        named = write(root / "inbox", cases)
        engine = make_engine(f"sqlite:///{root / 'ledger.db'}")
        try:
            ledger = SqlLedger(engine)
            (report,) = ingest_sources.fn(
                [FileSource(root / "inbox")], ledger, NOW, page_records=page_records
            )

            valid = [c for c in cases if c.expect is None]
            refused = {name: c for name, c in named.items() if c.expect is not None}
            assert report.records_in == len(cases)
            assert report.balanced
            assert report.quarantined == len(refused)
            events = {e.event_id for _, e in undetected_events(ledger.engine, 0, 10_000)}
            assert events == {c.key for c in valid if c.kind == "events"}
            contacts = set(ledger.asks.contacts(c.key for c in cases if c.kind == "contacts"))
            assert contacts == {c.key for c in valid if c.kind == "contacts"}
            quarantined = {q["record"]: q for q in ledger.sources.quarantined(limit=10_000)}
            assert set(quarantined) == set(refused)
            for name, case in refused.items():
                assert case.expect is not None
                assert quarantined[name]["reason"].startswith(case.expect), (case.name, name)
        finally:
            engine.dispose()
