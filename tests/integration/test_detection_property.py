"""The database's detection is the domain's, on random specs and random event streams.

``domain.moments.detect`` is the reference; ``ledger.moments.detect_in_database`` runs
the same :class:`~domain.moments.DetectionSpec` as SQL. Where
``test_detection_sql.py`` draws specs from program files, this test draws the specs
themselves (every moment type on any event type, conditions at and around their
thresholds, a detractor rule that overlaps moment rules) and streams of events
delivered over several reads: duplicates within a read and across reads (the first
stored copy is the event), two sources sharing event ids, events sharing one instant
in different zones, events the row-by-row stage already marked, and detection run
between reads with any chunk size. SQLite always; PostgreSQL with
REFERRALS_TEST_POSTGRES_URL set.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, tuple_

from domain.models import EventType, Moment, MomentType, SourceEvent
from domain.moments import (
    Absent,
    AmountAtLeast,
    AtLeast,
    AtMost,
    Condition,
    Detail,
    DetectionSpec,
    EventField,
    EventRule,
    MomentRule,
    OneOf,
    detect,
)
from domain.money import Money
from domain.ports import SourceBatch
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_MOMENTS, T_SOURCE_EVENTS, FollowUpRow
from tests.conftest import NOW
from tests.moments_seed import record_detection

_names = itertools.count()

# -- specs ------------------------------------------------------------------------------------
# Well-typed specs only: numbers are compared with numbers (score, csat) and text is
# matched as text (milestone, referral code). A spec that compares text with a number
# has no meaning in either interpreter.

NUMBERS = [EventField.SCORE, EventField.CSAT]
TEXTS = [EventField.MILESTONE, EventField.REFERRAL_CODE]
WORDS = ["", "api_live", "ten_users", "R1", "Ünïcode ✓", "it's", "50%_off"]
THRESHOLDS = st.integers(min_value=-1, max_value=11)

conditions: st.SearchStrategy[Condition] = st.one_of(
    st.builds(AtLeast, st.sampled_from(NUMBERS), THRESHOLDS),
    st.builds(AtMost, st.sampled_from(NUMBERS), THRESHOLDS),
    st.builds(Absent, st.sampled_from(list(EventField))),
    st.builds(OneOf, st.sampled_from(TEXTS), st.frozensets(st.sampled_from(WORDS), max_size=3)),
    st.builds(
        AmountAtLeast,
        st.builds(
            Money,
            st.sampled_from([0, 1, 4_999, 5_000, 5_001, 100_000]),
            st.sampled_from(["EUR", "USD"]),
        ),
    ),
)

details = st.builds(
    Detail,
    st.sampled_from(["", "NPS ", "reached ", "«détail» "]),
    st.none() | st.sampled_from(list(EventField)),
)


@st.composite
def specs(draw: st.DrawFn) -> DetectionSpec:
    # Each rule on an event type of its own (the spec allows one per type), naming any
    # moment type: all five appear, on any event type.
    event_types = draw(st.lists(st.sampled_from(list(EventType)), unique=True, max_size=6))
    moments = tuple(
        MomentRule(
            draw(st.sampled_from(list(MomentType))),
            EventRule(event, tuple(draw(st.lists(conditions, max_size=3)))),
            draw(details),
        )
        for event in event_types
    )
    # The detractor rule always bounds the score from above, so a detractor has one
    # (a follow-up stores it); its event type may also have a moment rule.
    detractor_conditions = (
        AtMost(EventField.SCORE, draw(THRESHOLDS)),
        *draw(st.lists(conditions, max_size=2)),
    )
    detractors = EventRule(draw(st.sampled_from(list(EventType))), detractor_conditions)
    return DetectionSpec(moments, detractors)


# -- event streams ----------------------------------------------------------------------------

_INSTANT = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
# Ties in time: the same instant in other zones, a microsecond either side, a day later.
INSTANTS = [
    _INSTANT,
    _INSTANT.astimezone(timezone(timedelta(hours=2))),
    _INSTANT.astimezone(timezone(timedelta(hours=-5, minutes=-30))),
    _INSTANT + timedelta(microseconds=1),
    _INSTANT - timedelta(microseconds=1),
    _INSTANT + timedelta(days=1),
]

event_fields = st.fixed_dictionaries(
    {
        # Few ids, so the same id comes back in a read, in a later read and in the
        # other source; some ids hold the key separator.
        "event_id": st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6", "x:1", "1"]),
        "other_source": st.booleans(),
        "type": st.sampled_from(list(EventType)),
        "occurred_at": st.sampled_from(INSTANTS),
        "contact_id": st.sampled_from([None, "", "C1", "C2"]),
        "account_id": st.sampled_from([None, "", "A1"]),
        "amount": st.none()
        | st.builds(
            Money,
            st.sampled_from([-1, 0, 1, 4_999, 5_000, 5_001, 100_000]),
            st.sampled_from(["EUR", "USD"]),
        ),
        "score": st.none() | st.integers(min_value=0, max_value=10),
        "csat": st.none() | st.integers(min_value=0, max_value=6),
        "milestone": st.none() | st.sampled_from(WORDS),
        "referral_code": st.none() | st.sampled_from(WORDS),
    }
)


@dataclass(frozen=True)
class Read:
    """One source read, then what happens before detection runs."""

    events: list[dict[str, Any]]
    # Mark this many of the read's new events as the row-by-row stage would have.
    marked_by_old_stage: int
    chunk_size: int


reads = st.builds(
    Read,
    events=st.lists(event_fields, max_size=12),
    marked_by_old_stage=st.integers(min_value=0, max_value=2),
    chunk_size=st.integers(min_value=1, max_value=8),
)


# -- reading back -----------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _moment_rows(engine: Engine, sources: Iterable[str]) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                T_MOMENTS.c.moment_id,
                T_MOMENTS.c.type,
                T_MOMENTS.c.contact_id,
                T_MOMENTS.c.account_id,
                T_MOMENTS.c.occurred_at,
                T_MOMENTS.c.source_event,
                T_MOMENTS.c.detail,
                T_MOMENTS.c.status,
            ).where(T_MOMENTS.c.source_event.in_(_keys_of(engine, sources)))
        ).all()
    return {(*r[:4], _utc(r[4]), *r[5:]) for r in rows}


def _follow_up_rows(engine: Engine, sources: Iterable[str]) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                FollowUpRow.source_event,
                FollowUpRow.contact_id,
                FollowUpRow.account_id,
                FollowUpRow.score,
                FollowUpRow.occurred_at,
            ).where(FollowUpRow.source_event.in_(_keys_of(engine, sources)))
        ).all()
    return {(*r[:4], _utc(r[4])) for r in rows}


def _keys_of(engine: Engine, sources: Iterable[str]) -> list[str]:
    with engine.connect() as conn:
        return [
            f"{source}:{event_id}"
            for source, event_id in conn.execute(
                select(T_SOURCE_EVENTS.c.source, T_SOURCE_EVENTS.c.event_id).where(
                    T_SOURCE_EVENTS.c.source.in_(list(sources))
                )
            ).all()
        ]


def _ids_of(engine: Engine, events: Iterable[SourceEvent]) -> list[int]:
    wanted = [(e.source, e.event_id) for e in events]
    if not wanted:
        return []
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(T_SOURCE_EVENTS.c.id).where(
                    tuple_(T_SOURCE_EVENTS.c.source, T_SOURCE_EVENTS.c.event_id).in_(wanted)
                )
            ).scalars()
        )


def _expected_moment_row(m: Moment) -> tuple[Any, ...]:
    return (
        m.moment_id,
        m.type.value,
        m.contact_id,
        m.account_id,
        _utc(m.occurred_at),
        m.source_event,
        m.detail,
        "new",
    )


def _expected_follow_up_row(e: SourceEvent) -> tuple[Any, ...]:
    return (e.key, e.contact_id, e.account_id, e.score, _utc(e.occurred_at))


# -- the property -----------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    # Each example stores under sources of its own, and every run examines only what
    # came after the last one, so examples can share one ledger.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=specs(), stream=st.lists(reads, min_size=1, max_size=4))
def test_the_database_detects_what_the_domain_detects_read_after_read(
    ledger: SqlLedger, spec: DetectionSpec, stream: list[Read]
) -> None:
    n = next(_names)
    sources = {False: f"prop{n}", True: f"prop{n}b"}
    stored: set[str] = set()
    expected_moments: set[tuple[Any, ...]] = set()
    expected_follow_ups: set[tuple[Any, ...]] = set()

    for read in stream:
        events = [
            SourceEvent(source=sources[f["other_source"]], **_without(f, "other_source"))
            for f in read.events
        ]
        # The ledger keeps the first copy of each event (by source and id) it is given.
        new: list[SourceEvent] = []
        for e in events:
            if e.key not in stored:
                stored.add(e.key)
                new.append(e)
        for source in sources.values():
            mine = [e for e in events if e.source == source]
            ledger.sources.record_batch(
                SourceBatch(source=source, events=mine, records_in=len(mine)), NOW
            )
        marked = new[: read.marked_by_old_stage]
        record_detection(ledger.engine, _ids_of(ledger.engine, marked), [], [], NOW)
        examined = new[read.marked_by_old_stage :]
        reference = detect(examined, spec)

        counts = ledger.moments.detect_in_database(spec, NOW, read.chunk_size)

        assert (counts.examined, counts.moments, counts.detractors, counts.without_contact) == (
            len(examined),
            len(reference.moments),
            len(reference.detractors),
            reference.without_contact,
        )
        expected_moments |= {_expected_moment_row(m) for m in reference.moments}
        expected_follow_ups |= {_expected_follow_up_row(e) for e in reference.detractors}
        assert ledger.moments.events_to_detect() == 0

    assert _moment_rows(ledger.engine, sources.values()) == expected_moments
    assert _follow_up_rows(ledger.engine, sources.values()) == expected_follow_ups


def _without(fields: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != name}


def test_detection_refuses_to_run_inside_a_unit_of_work(ledger: SqlLedger) -> None:
    spec = DetectionSpec((), EventRule(EventType.NPS_RESPONSE, (AtMost(EventField.SCORE, 6),)))
    with pytest.raises(RuntimeError, match="outside a unit of work"), ledger.transaction() as uow:
        uow.moments.detect_in_database(spec, NOW)
    assert ledger.moments.detection_watermark() == 0
