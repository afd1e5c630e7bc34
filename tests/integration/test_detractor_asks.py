"""Detractors are never asked, through the path production takes, on SQLite and (with
REFERRALS_TEST_POSTGRES_URL) Postgres.

Events are stored, detected in the database and decided by ``decide-asks`` as the
cycle does (``decide_asks.fn``, without a Prefect run); the rule itself is the
domain's (``domain.eligibility.recent_detractor``). The ledger only gathers each
contact's NPS answers, and the property test at the end checks on random answers that
the decisions made on what it gathers are the domain's on every stored event.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from config.program import parse_program
from domain.eligibility import decide, nps_answer, nps_answers_since
from domain.models import (
    ContactHistory,
    EventType,
    Moment,
    MomentType,
    SkipReason,
    SourceEvent,
)
from domain.moments import detection_spec
from domain.money import Money
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import MomentRow
from tasks.asks import decide_asks
from tests.conftest import NOW, contact, people_batch
from tests.integration.test_ledger_flow import event as source_event
from tests.integration.test_ledger_flow import events_batch

DAY = timedelta(days=1)
_ids = itertools.count()


def moment_event(contact_id: str, type_: MomentType, at: datetime) -> SourceEvent:
    """An event the shipped rules detect as a moment of ``type_`` for ``contact_id``."""
    by_type: dict[MomentType, dict[str, Any]] = {
        MomentType.DEAL_WON: {"type_": EventType.DEAL_WON, "amount": Money(5_000_00, "EUR")},
        MomentType.RENEWAL: {"type_": EventType.RENEWAL, "amount": Money(1_000_00, "EUR")},
        MomentType.NPS_PROMOTER: {"type_": EventType.NPS_RESPONSE, "score": 10},
        MomentType.SUPPORT_RESOLVED: {
            "type_": EventType.TICKET_RESOLVED,
            "csat": 5,
            "ticket_id": f"T{next(_ids)}",
        },
        MomentType.USAGE_MILESTONE: {"type_": EventType.USAGE_MILESTONE, "milestone": "100 users"},
    }
    return source_event(
        f"m{next(_ids)}",
        at=at,
        contact_id=contact_id,
        account_id=f"A-{contact_id}",
        **by_type[type_],
    )


def nps(contact_id: str, score: int | None, at: datetime) -> SourceEvent:
    return source_event(
        f"nps{next(_ids)}",
        EventType.NPS_RESPONSE,
        at=at,
        contact_id=contact_id,
        account_id=f"A-{contact_id}",
        score=score,
    )


def run_decisions(
    ledger: SqlLedger,
    program: Program,
    events: Sequence[SourceEvent],
    as_of: datetime = NOW,
    batch_size: int = 1000,
) -> dict[str, set[str | None]]:
    """Store the contacts and ``events``, detect and decide as the cycle does; the skip
    reasons (None: asked) of each contact's moments from :func:`moment_event` (NPS
    answers of 9-10 are moments too, decided by their own age and priority)."""
    people = sorted({e.contact_id for e in events if e.contact_id})
    ledger.sources.record_batch(people_batch(*(contact(c, f"A-{c}") for c in people)), as_of)
    ledger.sources.record_batch(events_batch(*events), as_of)
    ledger.moments.detect_in_database(detection_spec(program), as_of)
    decide_asks.fn(ledger, program, as_of, as_of, batch_size=batch_size)
    outcomes: dict[str, set[str | None]] = {}
    with ledger.engine.connect() as conn:
        for contact_id, status, reason in conn.execute(
            select(MomentRow.contact_id, MomentRow.status, MomentRow.skip_reason).where(
                MomentRow.moment_id.startswith("test:m")
            )
        ):
            assert status in ("asked", "skipped")
            outcomes.setdefault(contact_id, set()).add(reason)
    return outcomes


ASKED: set[str | None] = {None}
KEPT_OUT: set[str | None] = {SkipReason.RECENT_DETRACTOR.value}


@pytest.mark.parametrize("type_", list(MomentType))
def test_a_contact_who_scored_3_is_asked_for_no_moment_of_any_type(
    type_: MomentType, ledger: SqlLedger, program: Program
) -> None:
    # The 3 comes after the moment, so that for an NPS promoter moment too it is the
    # latest answer; a second contact with the same moment and no answer is asked.
    events = [
        moment_event("DET", type_, NOW - 2 * DAY),
        nps("DET", 3, NOW - DAY),
        moment_event("FAN", type_, NOW - 2 * DAY),
    ]
    assert run_decisions(ledger, program, events) == {"DET": KEPT_OUT, "FAN": ASKED}
    assert ledger.metrics.summary()["skipped"] == {SkipReason.RECENT_DETRACTOR.value: 1}


def test_a_customer_who_scored_3_and_won_a_deal_the_next_day_is_not_congratulated(
    ledger: SqlLedger, program: Program
) -> None:
    events = [nps("C1", 3, NOW - 2 * DAY), moment_event("C1", MomentType.DEAL_WON, NOW - DAY)]
    assert run_decisions(ledger, program, events) == {"C1": KEPT_OUT}
    assert ledger.metrics.summary()["asks"] == {}


NOT_NPS = [t for t in MomentType if t is not MomentType.NPS_PROMOTER]


@pytest.mark.parametrize("type_", NOT_NPS)
def test_the_boundaries_of_score_and_window_hold_through_the_ledger(
    type_: MomentType, ledger: SqlLedger, program: Program
) -> None:
    assert program.eligibility.detractor_window_days == 90
    window = 90 * DAY
    answers = {
        "SCORE6": [(6, NOW - 3 * DAY)],
        "SCORE7": [(7, NOW - 3 * DAY)],
        "DAY90": [(0, NOW - window)],
        "DAY91": [(0, NOW - window - DAY)],
        "JUST-PAST-90": [(0, NOW - window - timedelta(microseconds=1))],
        "LATER-PROMOTER": [(2, NOW - 30 * DAY), (9, NOW - 20 * DAY)],
        "LATER-PASSIVE": [(2, NOW - 30 * DAY), (7, NOW - 20 * DAY)],
        "LATER-DETRACTOR": [(9, NOW - 30 * DAY), (2, NOW - 20 * DAY)],
        "SAME-TIME": [(9, NOW - 20 * DAY), (6, NOW - 20 * DAY)],
        "AFTER-AS-OF": [(1, NOW + DAY)],
    }
    events = [
        *(moment_event(c, type_, NOW - DAY) for c in answers),
        *(nps(c, score, at) for c, given in answers.items() for score, at in given),
    ]
    assert run_decisions(ledger, program, events) == {
        "SCORE6": KEPT_OUT,
        "SCORE7": ASKED,
        "DAY90": KEPT_OUT,
        "DAY91": ASKED,
        "JUST-PAST-90": ASKED,
        "LATER-PROMOTER": ASKED,
        "LATER-PASSIVE": ASKED,
        "LATER-DETRACTOR": KEPT_OUT,
        "SAME-TIME": KEPT_OUT,
        "AFTER-AS-OF": ASKED,
    }


def test_an_nps_promoter_moment_is_decided_by_the_answers_after_it(
    ledger: SqlLedger, program: Program
) -> None:
    """The promoter's 10 is an answer too: only a later one (or one at the same time)
    can make its contact a detractor."""
    moment_at = NOW - 3 * DAY
    answers = {
        "LATER-6": [(6, NOW - DAY)],
        "LATER-7": [(7, NOW - DAY)],
        "SAME-TIME-5": [(5, moment_at)],
        "EARLIER-2": [(2, NOW - 10 * DAY)],
        "AFTER-AS-OF-0": [(0, NOW + DAY)],
    }
    events = [
        *(moment_event(c, MomentType.NPS_PROMOTER, moment_at) for c in answers),
        *(nps(c, score, at) for c, given in answers.items() for score, at in given),
    ]
    assert run_decisions(ledger, program, events) == {
        "LATER-6": KEPT_OUT,
        "LATER-7": ASKED,
        "SAME-TIME-5": KEPT_OUT,
        "EARLIER-2": ASKED,
        "AFTER-AS-OF-0": ASKED,
    }


def test_a_detractor_is_kept_out_in_every_batch_of_the_run(
    ledger: SqlLedger, program: Program
) -> None:
    # Batches of 2 moments: each batch reads its own contacts' answers.
    contacts = [f"C{i}" for i in range(7)]
    events = [
        *(moment_event(c, MomentType.RENEWAL, NOW - DAY) for c in contacts),
        # 8: neither a detractor nor a promoter moment of its own.
        *(nps(c, 5 if i % 2 else 8, NOW - 2 * DAY) for i, c in enumerate(contacts)),
    ]
    outcomes = run_decisions(ledger, program, events, batch_size=2)
    assert outcomes == {c: KEPT_OUT if i % 2 else ASKED for i, c in enumerate(contacts)}


def test_an_nps_response_without_a_score_neither_keeps_out_nor_lets_in(
    ledger: SqlLedger, program: Program
) -> None:
    events = [
        moment_event("C1", MomentType.RENEWAL, NOW - DAY),
        nps("C1", 2, NOW - 3 * DAY),
        nps("C1", None, NOW - 2 * DAY),
        moment_event("C2", MomentType.RENEWAL, NOW - DAY),
        nps("C2", None, NOW - 2 * DAY),
    ]
    assert run_decisions(ledger, program, events) == {"C1": KEPT_OUT, "C2": ASKED}


def test_a_contacts_answers_are_read_through_the_nps_answers_index(
    ledger: SqlLedger, program: Program
) -> None:
    """Not by scanning every event: that was 0.6 s per batch of decisions at a million
    events on SQLite. The partial index serves the query only if it names the type as
    a literal; PostgreSQL is told not to scan, as a table this small would be."""
    reads: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "nps_response" in statement and statement.startswith("SELECT"):
            reads.append((statement, parameters))

    event.listen(ledger.engine, "before_cursor_execute", seen)
    try:
        ledger.asks.histories(["C1", "C2"], NOW, (), nps_answers_since(program, NOW))
    finally:
        event.remove(ledger.engine, "before_cursor_execute", seen)

    assert len(reads) == 1
    statement, parameters = reads[0]
    with ledger.engine.connect() as conn:
        if ledger.engine.dialect.name == "sqlite":
            explained = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [str(row[-1]) for row in explained]
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = [str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)]
    assert "ix_source_events_nps_answers" in plan[0]


# --- property: the ledger path decides as the domain does on every event -------------------

CONTACTS = ("P1", "P2", "P3")
WINDOW = 90 * DAY
# Ages (before as_of) at and around both ends of the window, so that boundaries and
# equal times come up often, and any hour in between.
_EDGES = [
    -DAY,
    -timedelta(microseconds=1),
    timedelta(0),
    DAY,
    WINDOW - timedelta(microseconds=1),
    WINDOW,
    WINDOW + timedelta(microseconds=1),
    WINDOW + DAY,
]
ages = st.one_of(
    st.sampled_from(_EDGES),
    st.integers(min_value=-48, max_value=95 * 24).map(lambda h: timedelta(hours=h)),
)
# NPS answers with and without a score, and other events that carry a score: only
# scored NPS responses are answers.
stored = st.lists(
    st.tuples(
        st.sampled_from(CONTACTS),
        st.sampled_from([EventType.NPS_RESPONSE] * 4 + [EventType.TICKET_RESOLVED]),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
        ages,
    ),
    max_size=8,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(specs=stored, window_days=st.sampled_from([1, 30, 90]))
def test_the_ledgers_answers_give_the_decisions_the_domain_gives_on_every_event(
    specs: list[tuple[str, EventType, int | None, timedelta]],
    window_days: int,
    ledger: SqlLedger,
) -> None:
    program = parse_program({"eligibility": {"detractor_window_days": window_days}})
    # Contacts of this example only: examples share the test's database.
    run = next(_ids)
    people = {c: contact(f"{c}-{run}", f"A-{c}-{run}") for c in CONTACTS}
    events = [
        source_event(
            f"p{next(_ids)}",
            type_,
            at=NOW - age,
            contact_id=people[c].contact_id,
            account_id=people[c].account_id,
            score=score,
        )
        for c, type_, score, age in specs
    ]
    if events:
        ledger.sources.record_batch(events_batch(*events), NOW)
    ids = [p.contact_id for p in people.values()]
    moments = [
        Moment(f"m-{c}", MomentType.RENEWAL, c, None, NOW - DAY, f"m-{c}", "renewed") for c in ids
    ]
    contacts = {p.contact_id: p for p in people.values()}
    tenured = (NOW - 400 * DAY).date()

    gathered = ledger.asks.histories(ids, NOW, (), nps_answers_since(program, NOW))
    from_ledger = {
        c: ContactHistory(customer_since=tenured, nps_answers=h.nps_answers)
        for c, h in gathered.items()
    }
    every_answer = {
        c: ContactHistory(
            customer_since=tenured,
            nps_answers=tuple(
                a for e in events if e.contact_id == c and (a := nps_answer(e)) is not None
            ),
        )
        for c in ids
    }

    by_ledger = decide(moments, contacts, from_ledger, program, NOW)
    by_domain = decide(moments, contacts, every_answer, program, NOW)
    assert [(d.moment.contact_id, d.reason) for d in by_ledger] == [
        (d.moment.contact_id, d.reason) for d in by_domain
    ]
