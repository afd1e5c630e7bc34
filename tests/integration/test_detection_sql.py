"""Set-based detection in the database finds exactly what ``domain.moments.detect`` finds.

Both interpret the same ``DetectionSpec``. These tests run the SQL path on SQLite and, with
REFERRALS_TEST_POSTGRES_URL set, on PostgreSQL, and compare it with the Python reference
over generated events and rule variations. They also cover what the watermark must
guarantee: nothing is examined twice, and nothing stored late or concurrently is lost.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError

from config.program import parse_program
from domain.models import AskDecision, EventType, Moment, MomentType, SourceEvent, derived_id
from domain.moments import EventField, detect, detection_spec
from domain.money import Money
from domain.ports import SourceBatch
from domain.program import Program
from integrations.ledger import detection
from integrations.ledger.base import (
    event_row,
)
from integrations.ledger.detection import (
    WATERMARK,
    DetectionCounts,
    condition_sql,
)
from integrations.ledger.engine import SQLITE_CACHE_KIB, make_engine
from integrations.ledger.migrate import alembic_config, upgrade
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    T_SOURCE_EVENTS,
    FollowUpRow,
    SourceCursorRow,
)
from tasks.moments import DetectionReport, detect_new_moments
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import NOW, POSTGRES_URL, contact, people_batch
from tests.moments_seed import record_detection, undetected_events

NOTHING = DetectionCounts()
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
TIMEOUT = 30


@pytest.fixture
def detector(engine: Engine) -> SqlLedger:
    return SqlLedger(engine)


_sources = itertools.count()


def fresh_source() -> str:
    """A source name no other example used, so examples can share one ledger."""
    return f"src{next(_sources)}"


def store(ledger: SqlLedger, *events: SourceEvent, source: str = "test") -> None:
    ledger.sources.record_batch(
        SourceBatch(source=source, events=events, records_in=len(events)), NOW
    )


def an_event(
    event_id: str, type_: EventType = EventType.RENEWAL, source: str = "test", **fields: Any
) -> SourceEvent:
    fields.setdefault("contact_id", "C1")
    fields.setdefault("account_id", "A1")
    return SourceEvent(source=source, event_id=event_id, type=type_, occurred_at=NOW, **fields)


def stored_moments(ledger: SqlLedger, source: str) -> list[Moment]:
    """The new moments of ``source``'s events, read back through the ledger."""
    moments = ledger.asks.pending_moments(FAR_FUTURE, 1_000_000)
    return sorted(
        (m for m in moments if m.source_event.startswith(f"{source}:")),
        key=lambda m: m.moment_id,
    )


def stored_follow_ups(engine: Engine, source: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(FollowUpRow.source_event).where(
                    FollowUpRow.source_event.startswith(f"{source}:")
                )
            ).scalars()
        )


# -- the same moments as detect() ------------------------------------------------------------

MILESTONES = ["", "first_export", "ten_users", "api_live"]

programs = st.builds(
    lambda currency, nps, deal, renewal, support, usage: parse_program(
        {
            "currency": currency,
            "moments": {
                "nps_promoter": nps,
                "deal_won": deal,
                "renewal": renewal,
                "support_resolved": support,
                "usage_milestone": usage,
            },
        }
    ),
    currency=st.sampled_from(["EUR", "USD"]),
    nps=st.fixed_dictionaries({"enabled": st.booleans(), "min_score": st.sampled_from([9, 10])}),
    deal=st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "min_amount": st.sampled_from(["0", "0.00", "0.01", "49.99", "1000.00"]),
        }
    ),
    renewal=st.fixed_dictionaries({"enabled": st.booleans()}),
    support=st.fixed_dictionaries(
        {"enabled": st.booleans(), "min_csat": st.integers(min_value=1, max_value=5)}
    ),
    usage=st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "milestones": st.lists(st.sampled_from(MILESTONES), max_size=3, unique=True),
        }
    ),
)

event_fields = st.fixed_dictionaries(
    {
        "type": st.sampled_from(list(EventType)),
        # Hypothesis takes naive bounds; timezones= makes every value aware.
        "occurred_at": st.datetimes(
            min_value=datetime(2020, 1, 1),  # noqa: DTZ001
            max_value=datetime(2030, 1, 1),  # noqa: DTZ001
            timezones=st.just(UTC),
        ),
        "contact_id": st.sampled_from([None, "", "C1", "C2"]),
        "account_id": st.sampled_from([None, "A1"]),
        "amount": st.none()
        | st.builds(
            Money, st.integers(min_value=0, max_value=2_000_00), st.sampled_from(["EUR", "USD"])
        ),
        "score": st.none() | st.integers(min_value=0, max_value=10),
        "csat": st.none() | st.integers(min_value=0, max_value=6),
        "milestone": st.none() | st.sampled_from([*MILESTONES, "other"]),
        "referral_code": st.sampled_from([None, "", "R1"]),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    # Each example stores events under a source of its own and detection only ever
    # examines what came after the last run, so examples can share one ledger.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    program=programs,
    fields=st.lists(event_fields, max_size=40),
    chunk_size=st.integers(min_value=1, max_value=50),
)
def test_the_database_finds_exactly_the_moments_detect_finds(
    detector: SqlLedger, program: Program, fields: list[dict[str, Any]], chunk_size: int
) -> None:
    source = fresh_source()
    events = [SourceEvent(source=source, event_id=f"e{i}", **f) for i, f in enumerate(fields)]
    store(detector, *events, source=source)
    expected = detect(events, program)

    counts = detector.moments.detect_in_database(detection_spec(program), NOW, chunk_size)

    assert stored_moments(detector, source) == sorted(expected.moments, key=lambda m: m.moment_id)
    assert stored_follow_ups(detector.engine, source) == {e.key for e in expected.detractors}
    assert (counts.examined, counts.moments, counts.detractors, counts.without_contact) == (
        len(events),
        len(expected.moments),
        len(expected.detractors),
        expected.without_contact,
    )
    assert detector.moments.detect_in_database(detection_spec(program), NOW, chunk_size) == NOTHING


def test_a_second_run_examines_nothing_and_stores_nothing_twice(
    detector: SqlLedger, program: Program
) -> None:
    store(detector, an_event("r1"), an_event("n1", EventType.NPS_RESPONSE, score=2))
    spec = detection_spec(program)

    first = detector.moments.detect_in_database(spec, NOW)
    second = detector.moments.detect_in_database(spec, NOW)

    assert (first.examined, first.moments, first.detractors) == (2, 1, 1)
    assert second == NOTHING
    assert detector.metrics.summary()["moments"] == {"renewal": 1}
    assert detector.metrics.summary()["follow_ups"] == 1


def test_events_stored_after_a_run_are_found_by_the_next_run(
    detector: SqlLedger, program: Program
) -> None:
    spec = detection_spec(program)
    store(detector, an_event("r1"))
    detector.moments.detect_in_database(spec, NOW)

    store(detector, an_event("r2"), an_event("r3", contact_id=None))
    later = detector.moments.detect_in_database(spec, NOW)

    assert (later.examined, later.moments, later.without_contact) == (2, 1, 1)
    assert [m.moment_id for m in stored_moments(detector, "test")] == ["test:r1", "test:r2"]
    assert detector.moments.events_to_detect() == 0


def test_each_chunk_of_ids_is_a_transaction_that_moves_the_watermark(
    detector: SqlLedger, program: Program
) -> None:
    store(detector, *(an_event(f"r{i}") for i in range(7)))
    with detector.engine.connect() as conn:
        top = (
            conn.execute(select(T_SOURCE_EVENTS.c.id).order_by(T_SOURCE_EVENTS.c.id.desc()))
            .scalars()
            .first()
        )

    counts = detector.moments.detect_in_database(detection_spec(program), NOW, chunk_size=3)

    assert (counts.examined, counts.moments, counts.chunks) == (7, 7, 3)
    assert detector.moments.detection_watermark() == top
    assert detector.moments.events_to_detect() == 0


def test_events_the_row_by_row_stage_marked_are_not_examined_again(
    detector: SqlLedger, program: Program
) -> None:
    store(detector, an_event("old"), an_event("new"))
    old_id = undetected_events(detector.engine, 0, 1)[0][0]
    record_detection(detector.engine, [old_id], [], [], NOW)

    counts = detector.moments.detect_in_database(detection_spec(program), NOW)

    assert (counts.examined, counts.moments) == (1, 1)
    assert [m.source_event for m in stored_moments(detector, "test")] == ["test:new"]


def test_the_longest_event_key_fits_as_a_moment_id(detector: SqlLedger, program: Program) -> None:
    # source is String(64) and event_id String(256): the key is 321 characters.
    longest = an_event("e" * 256, source="s" * 64)
    store(detector, longest, source="s" * 64)

    assert detector.moments.detect_in_database(detection_spec(program), NOW).moments == 1
    assert [m.moment_id for m in stored_moments(detector, "s" * 64)] == [longest.key]


def test_a_run_with_every_moment_disabled_still_lists_detractors(detector: SqlLedger) -> None:
    off = {"enabled": False}
    program = parse_program(
        {
            "moments": {
                name: off
                for name in (
                    "nps_promoter",
                    "deal_won",
                    "renewal",
                    "support_resolved",
                    "usage_milestone",
                )
            }
        }
    )
    store(detector, an_event("r1"), an_event("n1", EventType.NPS_RESPONSE, score=0))

    counts = detector.moments.detect_in_database(detection_spec(program), NOW)

    assert (counts.examined, counts.moments, counts.detractors) == (2, 0, 1)


def test_a_chunk_that_fails_leaves_nothing_behind_for_the_next_run(
    detector: SqlLedger, program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(detector, an_event("r1"), an_event("n1", EventType.NPS_RESPONSE, score=2))
    spec = detection_spec(program)
    build = detection._Statements.build

    def failing_follow_ups(spec: Any, insert: Any) -> Any:
        return dataclasses.replace(build(spec, insert), follow_ups=text("SELECT * FROM nowhere"))

    monkeypatch.setattr(detection._Statements, "build", failing_follow_ups)
    with pytest.raises(DBAPIError):
        detector.moments.detect_in_database(spec, NOW)
    monkeypatch.undo()

    # The failed chunk's scratch table went with its transaction, so the next run (on the
    # same pooled connection) creates it again and does the whole chunk.
    counts = detector.moments.detect_in_database(spec, NOW)

    assert (counts.examined, counts.moments, counts.detractors) == (2, 1, 1)
    assert [m.moment_id for m in stored_moments(detector, "test")] == ["test:r1"]
    assert stored_follow_ups(detector.engine, "test") == {"test:n1"}


# -- concurrency -----------------------------------------------------------------------------


@pytest.fixture
def engines(ledger_url: str) -> Iterator[list[Engine]]:
    """Three engines of their own on the test ledger, as separate processes would have."""
    made = [make_engine(ledger_url) for _ in range(3)]
    yield made
    for engine in made:
        engine.dispose()


def in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # handed to the test thread, which asserts on it
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_an_event_that_commits_late_under_a_later_committed_one_is_not_lost(
    engines: list[Engine], program: Program
) -> None:
    ingest_engine, other_engine, detect_engine = engines
    late = an_event("late")
    early = an_event("early")
    postgres = ingest_engine.dialect.name == "postgresql"
    if not postgres:
        # SQLite has one writer at a time: nothing can commit while "late" is open.
        store(SqlLedger(other_engine), early)
    with ingest_engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(
            insert(T_SOURCE_EVENTS), event_row(late, NOW)
        )  # its id is drawn, not committed
        if postgres:
            store(SqlLedger(other_engine), early)  # a higher id, committed first
        thread, out = in_thread(
            lambda: SqlLedger(detect_engine).moments.detect_in_database(
                detection_spec(program), NOW
            )
        )
        time.sleep(0.5)  # the run starts while "late" is still open
        transaction.commit()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    (during,) = out
    assert isinstance(during, DetectionCounts)
    detector = SqlLedger(detect_engine)
    after = detector.moments.detect_in_database(detection_spec(program), NOW)

    # Whichever run saw it, each event was examined once, and none was skipped.
    assert during.examined + after.examined == 2
    assert during.moments + after.moments == 2
    assert {m.moment_id for m in stored_moments(detector, "test")} == {late.key, early.key}
    assert detector.moments.events_to_detect() == 0


def test_two_runs_at_once_examine_each_event_exactly_once(
    engines: list[Engine], program: Program
) -> None:
    first, second, _ = engines
    events = [an_event(f"r{i}") for i in range(40)]
    store(SqlLedger(first), *events)
    spec = detection_spec(program)
    barrier = threading.Barrier(2)

    def run(engine: Engine) -> DetectionCounts:
        barrier.wait(TIMEOUT)
        return SqlLedger(engine).moments.detect_in_database(spec, NOW, chunk_size=7)

    threads = [in_thread(lambda e=engine: run(e)) for engine in (first, second)]
    for thread, _ in threads:
        thread.join(TIMEOUT)
    results = [out[0] for _, out in threads]

    assert all(isinstance(r, DetectionCounts) for r in results), results
    assert sum(r.examined for r in results) == 40
    assert sum(r.moments for r in results) == 40
    assert len(stored_moments(SqlLedger(first), "test")) == 40


# -- the task and the connection --------------------------------------------------------------


def test_the_task_reports_what_the_database_found(ledger: SqlLedger, program: Program) -> None:
    store(
        ledger,
        an_event("r1"),
        an_event("r2", contact_id=None),
        an_event("n1", EventType.NPS_RESPONSE, score=3),
        an_event("n2", EventType.NPS_RESPONSE, score=10),
        an_event("t1", EventType.TICKET_OPENED),
    )

    report = detect_new_moments.fn(ledger, program, NOW, chunk_size=1000)
    again = detect_new_moments.fn(ledger, program, NOW, chunk_size=1000)

    assert report == DetectionReport(examined=5, moments=2, detractors=1, without_contact=1)
    assert again == DetectionReport(examined=0, moments=0, detractors=0, without_contact=0)
    assert ledger.metrics.summary()["moments"] == {"nps_promoter": 1, "renewal": 1}


def page_cache(engine: Engine) -> tuple[int, int]:
    """(which driver connection, its cache_size) of the connection the pool hands out."""
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        return id(driver), driver.execute("PRAGMA cache_size").fetchone()[0]


def test_every_sqlite_ledger_connection_detects_with_the_larger_page_cache(
    sqlite_ledger: SqlLedger, program: Program
) -> None:
    engine = sqlite_ledger.engine
    store(sqlite_ledger, an_event("r1"))
    before = page_cache(engine)
    # SQLite's default is 2 MiB (-2000); the engine gives each connection 64 MiB.
    assert before[1] == -SQLITE_CACHE_KIB

    assert SqlLedger(engine).moments.detect_in_database(detection_spec(program), NOW).moments == 1

    # Used one at a time, the pool hands the same connection out again, as it was.
    assert page_cache(engine) == before


# -- migration 0007 ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def bare_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (SQLite file, or a Postgres schema of its own), not migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("REFERRALS_TEST_POSTGRES_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def migrate(engine: Engine, direction: str, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, direction)(config, revision)


def moment_id_length(engine: Engine, table: str) -> int | None:
    column = next(c for c in inspect(engine).get_columns(table) if c["name"] == "moment_id")
    return getattr(column["type"], "length", None)


def assert_asks_still_reference_moments(engine: Engine) -> None:
    foreign_keys = inspect(engine).get_foreign_keys("asks")
    assert {"moments": ["moment_id"]}.items() <= {
        fk["referred_table"]: fk["referred_columns"] for fk in foreign_keys
    }.items()
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def asked(ledger: SqlLedger, moment: Moment) -> None:
    record_ask_decisions(ledger, [AskDecision(moment)], {"C1": "CODE-C1"}, NOW, NOW)


def ask_links(engine: Engine) -> dict[str, str]:
    """source_event -> the moment id its ask points at (joined, so the link holds)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.source_event, a.moment_id FROM asks a"
                " JOIN moments m ON m.moment_id = a.moment_id"
            )
        ).all()
    return {source_event: moment_id for source_event, moment_id in rows}


def test_migration_0007_widens_moment_ids_and_its_downgrade_restores_uuid_ids(
    bare_url: str, program: Program
) -> None:
    engine = make_engine(bare_url)
    try:
        upgrade(engine, "0006")
        ledger = SqlLedger(engine)
        ledger.sources.record_batch(people_batch(contact("C1")), NOW)
        # Before 0007: a moment with a derived UUID, asked, its event marked examined.
        old_event = an_event("old")
        store(ledger, old_event, an_event("new", EventType.RENEWAL))
        old_id = undetected_events(ledger.engine, 0, 1)[0][0]
        old = Moment(
            derived_id("moment", old_event.key),
            MomentType.RENEWAL,
            "C1",
            "A1",
            NOW,
            old_event.key,
            "renewed",
        )
        record_detection(ledger.engine, [old_id], [old], [], NOW)
        asked(ledger, old)

        migrate(engine, "upgrade", "0007")

        assert moment_id_length(engine, "moments") == moment_id_length(engine, "asks") == 330
        assert_asks_still_reference_moments(engine)
        assert ask_links(engine) == {"test:old": old.moment_id}
        counts = SqlLedger(engine).moments.detect_in_database(detection_spec(program), NOW)
        assert (counts.examined, counts.moments) == (1, 1)
        (new,) = [m for m in stored_moments(ledger, "test") if m.source_event == "test:new"]
        assert new.moment_id == "test:new"
        asked(ledger, new)

        migrate(engine, "downgrade", "0006")

        assert moment_id_length(engine, "moments") == moment_id_length(engine, "asks") == 36
        assert_asks_still_reference_moments(engine)
        assert ask_links(engine) == {
            "test:old": old.moment_id,
            "test:new": derived_id("moment", "test:new"),
        }
        with engine.connect() as conn:
            assert (
                conn.execute(
                    select(SourceCursorRow.cursor).where(SourceCursorRow.source == WATERMARK)
                ).all()
                == []
            )
            unmarked = conn.execute(
                select(T_SOURCE_EVENTS.c.event_id).where(T_SOURCE_EVENTS.c.detected_at.is_(None))
            ).all()
        # The old stage would not examine either event again.
        assert unmarked == []

        upgrade(engine)
    finally:
        engine.dispose()


def test_the_sql_compiler_refuses_a_condition_kind_it_does_not_know() -> None:
    @dataclass(frozen=True)
    class Between:
        field: EventField
        low: int
        high: int

    with pytest.raises(AssertionError):
        condition_sql(Between(EventField.SCORE, 9, 10))  # type: ignore[arg-type]
