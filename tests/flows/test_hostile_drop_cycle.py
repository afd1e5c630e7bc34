"""A hostile drop through the whole cycle, on SQLite and on PostgreSQL: a sample
company's exports beside several hundred malformed rows of every class (both
formats), a symlink to /etc/passwd, a FIFO and a directory. The run completes; each
malformed record and file is quarantined by name with its reason; the company is
still asked and rewarded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from domain.program import Program
from flows.bootstrap import App, use_app
from flows.cycle import referral_cycle
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import SourceEventRow
from integrations.sources.sample import generate
from tests.flows.conftest import make_app
from tests.hostile_inputs import CLASSES, Case, Values, build, write

# Every class in every format it applies to, this many times each.
ROUNDS = 10


def corpus(now: datetime) -> list[Case]:
    """Several hundred records: each malformation class, and valid ones between."""
    cases: list[Case] = []
    for round_ in range(ROUNDS):
        for name, (_, formats) in CLASSES.items():
            for fmt in formats:
                values = Values(amount_minor=1_000 * (round_ + 1), score=round_, days_ago=round_)
                cases.append(build(name, fmt, len(cases), now, values))
    return cases


@pytest.fixture
def hostile_app(ledger: SqlLedger, program: Program, inbox: Path) -> Iterator[App]:
    with use_app(make_app(ledger, program, inbox)) as app:
        yield app


def test_a_hostile_drop_runs_through_the_cycle_and_every_bad_record_is_quarantined(
    hostile_app: App, inbox: Path
) -> None:
    now = datetime.now(UTC)
    generate(inbox, now, accounts=15, seed=5)
    cases = corpus(now)
    named = write(inbox, cases)
    (inbox / "events_passwd.csv").symlink_to("/etc/passwd")
    (inbox / "contacts_folder.jsonl").mkdir()
    os.mkfifo(inbox / "nps_pipe.csv")
    assert len(cases) >= 400

    summary = referral_cycle(as_of=now)

    ingest = summary["stages"]["detect moments"]["ingest"][0]
    assert ingest["records_in"] == (
        ingest["new_events"]
        + ingest["already_seen"]
        + ingest["quarantined"]
        + ingest["reference_rows"]
    )
    quarantined = {q["record"]: q["reason"] for q in hostile_app.ledger.sources.quarantined(10_000)}
    for name, case in named.items():
        if case.expect is not None:
            assert quarantined[name].startswith(case.expect), (name, case.name)
    assert quarantined["events_passwd.csv"].startswith("file_is_symlink: ")
    assert quarantined["contacts_folder.jsonl"].startswith("file_not_regular: a directory")
    assert quarantined["nps_pipe.csv"].startswith("file_not_regular: a FIFO")
    with hostile_app.ledger.engine.connect() as conn:
        stored = set(
            conn.execute(
                select(SourceEventRow.event_id).where(SourceEventRow.event_id.like("h%"))
            ).scalars()
        )
    assert stored == {c.key for c in cases if c.kind == "events" and c.expect is None}
    contacts = hostile_app.ledger.asks.contacts(c.key for c in cases if c.kind == "contacts")
    assert set(contacts) == {c.key for c in cases if c.kind == "contacts" and c.expect is None}
    # The sample company went through the cycle as usual despite all of it.
    assert hostile_app.ledger.asks.asked_contacts(until=now)
