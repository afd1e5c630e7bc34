"""Recording a batch of ask decisions is set-based, on SQLite and (with
REFERRALS_TEST_POSTGRES_URL) Postgres.

``decide-asks`` once closed each decided moment with a statement of its own, which was
most of the stage's time at scale; these tests keep the statement count of a batch
independent of its size, and its outcome what the row-by-row updates gave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from domain.models import Ask, AskDecision, Moment, MomentType, SkipReason, derived_id
from domain.moments import detection_spec
from domain.program import Program
from integrations.ledger import asks as asks_store
from integrations.ledger.base import CHUNK
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import MomentRow
from tasks.asks import decide_asks
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import NOW, contact, people_batch
from tests.integration.test_detractor_asks import moment_event
from tests.integration.test_ledger_flow import events_batch, given_moments

OUTCOMES = (None, SkipReason.COOLDOWN, SkipReason.SUPPRESSED)


def mixed(moments: Sequence[Moment]) -> list[AskDecision]:
    """Asks and two kinds of skip, in turn."""
    return [AskDecision(m, OUTCOMES[i % len(OUTCOMES)]) for i, m in enumerate(moments)]


def record_counting(
    ledger: SqlLedger, decisions: Sequence[AskDecision], at: datetime
) -> tuple[list[Ask], int]:
    """What ``record_ask_decisions`` returns, and how many statements it sent."""
    statements = 0

    def seen(*_: Any) -> None:
        nonlocal statements
        statements += 1

    codes = {d.moment.contact_id: f"CODE-{d.moment.contact_id}" for d in decisions if d.ask}
    event.listen(ledger.engine, "before_cursor_execute", seen)
    try:
        asks = record_ask_decisions(ledger, decisions, codes, at, at)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", seen)
    return asks, statements


def closed(ledger: SqlLedger) -> dict[str, tuple[str, str | None, datetime | None]]:
    with ledger.engine.connect() as conn:
        return {
            r.moment_id: (r.status, r.skip_reason, r.decided_at)
            for r in conn.execute(
                select(
                    MomentRow.moment_id,
                    MomentRow.status,
                    MomentRow.skip_reason,
                    MomentRow.decided_at,
                )
            )
        }


def test_a_batch_of_400_decisions_takes_as_many_statements_as_one_of_40(
    ledger: SqlLedger, now: datetime
) -> None:
    moments = given_moments(ledger, now, [f"C{i:03d}" for i in range(440)])
    small, large = mixed(moments[:40]), mixed(moments[40:])

    small_asks, small_statements = record_counting(ledger, small, now)
    large_asks, large_statements = record_counting(ledger, large, now)

    assert (len(small_asks), len(large_asks)) == (14, 134)
    assert small_statements == large_statements
    assert ledger.asks.pending_moments(now, 10) == []


def test_a_batch_closes_each_moment_with_its_first_decision_and_no_moment_twice(
    ledger: SqlLedger, now: datetime
) -> None:
    # More asks than fit one IN (...) list, so closing them takes more than one chunk.
    moments = given_moments(ledger, now, [f"C{i:03d}" for i in range(CHUNK + 100)])
    earlier, rest = moments[:50], moments[50:]
    record_ask_decisions(
        ledger, [AskDecision(m, SkipReason.NO_EMAIL) for m in earlier], {}, now, now
    )
    later = now + timedelta(hours=1)
    decisions = [
        *(AskDecision(m) for m in rest),
        # Already closed by the earlier run: stays as that run left it.
        *(AskDecision(m, SkipReason.COOLDOWN) for m in earlier),
        # A second decision on a moment of this batch: the first one counts.
        AskDecision(rest[0], SkipReason.COOLDOWN),
    ]

    asks, _ = record_counting(ledger, decisions, later)

    assert [a.ask_id for a in asks] == [derived_id("ask", m.moment_id) for m in rest]
    assert closed(ledger) == {
        **{m.moment_id: ("skipped", "no_email", now) for m in earlier},
        **{m.moment_id: ("asked", None, later) for m in rest},
    }
    assert ledger.asks.pending_moments(later, 10) == []
    summary = ledger.metrics.summary()
    assert summary["asks"] == {"queued": len(rest)}
    assert summary["skipped"] == {"no_email": len(earlier)}


def test_each_outcome_of_a_mixed_batch_is_recorded_on_its_own_moments(
    ledger: SqlLedger, now: datetime
) -> None:
    moments = given_moments(ledger, now, [f"C{i:03d}" for i in range(30)])
    decisions = mixed(moments)

    asks, _ = record_counting(ledger, decisions, now)

    assert [a.moment_id for a in asks] == [d.moment.moment_id for d in decisions if d.ask]
    expected = {
        d.moment.moment_id: (
            "asked" if d.ask else "skipped",
            d.reason.value if d.reason else None,
            now,
        )
        for d in decisions
    }
    assert closed(ledger) == expected
    assert Counter(status for status, _, _ in expected.values()) == {"asked": 10, "skipped": 20}


def test_on_sqlite_closing_moments_looks_them_up_by_primary_key(
    sqlite_ledger: SqlLedger, now: datetime
) -> None:
    """Not by ix_moments_pending: without statistics SQLite may prefer it for an IN list,
    and then walks every pending moment for each chunk of each batch."""
    moments = given_moments(sqlite_ledger, now, [f"C{i:03d}" for i in range(20)])
    updates: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("UPDATE moments"):
            updates.append((statement, parameters))

    event.listen(sqlite_ledger.engine, "before_cursor_execute", seen)
    try:
        record_ask_decisions(
            sqlite_ledger,
            mixed(moments),
            {m.contact_id: f"CODE-{m.contact_id}" for m in moments},
            now,
            now,
        )
    finally:
        event.remove(sqlite_ledger.engine, "before_cursor_execute", seen)

    assert len(updates) == len(OUTCOMES)
    with sqlite_ledger.engine.connect() as conn:
        for statement, parameters in updates:
            plan = [
                row[-1]
                for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            # The wording of a plan varies between SQLite versions; the index used does
            # not. The ids come as one JSON parameter, read by a subquery of their own.
            on_moments = [step for step in plan if " moments " in f"{step} "]
            assert len(on_moments) == 1
            assert "(moment_id=?)" in on_moments[0]
            assert not any("ix_moments_pending" in step for step in plan)


@pytest.mark.parametrize("close_skipped_every", [1, 100])
def test_skipped_moments_closed_after_their_batch_leave_every_batch_and_decision_as_it_was(
    close_skipped_every: int, ledger: SqlLedger, program: Program
) -> None:
    """decide-asks closes skipped moments late (many at a time, see
    ``tasks.asks.CLOSE_SKIPPED_EVERY``) and pages on past them. With two moments a
    batch: the old moments fill the first batch and a half, the deal is asked in the
    second, and the renewal, alone in the third, meets the ask just queued (cooldown);
    had a batch read a skipped moment again, or the two moments of C3 come together,
    the outcomes would differ."""
    day = timedelta(days=1)
    old = [
        moment_event(c, MomentType.RENEWAL, NOW - (30 - i) * day)
        for i, c in enumerate(["C1", "C1", "C2"])
    ]
    deal = moment_event("C3", MomentType.DEAL_WON, NOW - 2 * day)
    renewal = moment_event("C3", MomentType.RENEWAL, NOW - day)
    people = ["C1", "C2", "C3"]
    ledger.sources.record_batch(people_batch(*(contact(c, f"A-{c}") for c in people)), NOW)
    ledger.sources.record_batch(events_batch(*old, deal, renewal), NOW)
    ledger.moments.detect_in_database(detection_spec(program), NOW)

    decided = decide_asks.fn(
        ledger, program, NOW, NOW, batch_size=2, close_skipped_every=close_skipped_every
    )

    assert decided.queued == 1
    assert decided.skipped == {"cooldown": 1, "moment_too_old": 3}
    assert {moment_id: status for moment_id, (status, _, _) in closed(ledger).items()} == {
        **{e.key: "skipped" for e in old},
        deal.key: "asked",
        renewal.key: "skipped",
    }
    assert {reason for _, reason, _ in closed(ledger).values()} == {
        "moment_too_old",
        None,
        "cooldown",
    }
    assert ledger.asks.pending_moments(NOW, 10) == []


def test_pending_moments_after_a_moment_are_those_later_in_time_then_id_order(
    ledger: SqlLedger, now: datetime
) -> None:
    moments = given_moments(ledger, now, ["C1", "C2", "C3", "C4"])
    ordered = sorted(moments, key=lambda m: (m.occurred_at, m.moment_id))

    first = ledger.asks.pending_moments(now, 2)
    rest = ledger.asks.pending_moments(now, 10, (first[-1].occurred_at, first[-1].moment_id))

    assert [m.moment_id for m in first + rest] == [m.moment_id for m in ordered]


def test_skip_moments_closes_the_moments_still_new_with_their_reason_and_no_other(
    ledger: SqlLedger, now: datetime
) -> None:
    first, second, third = given_moments(ledger, now, ["C1", "C2", "C3"])
    record_ask_decisions(ledger, [AskDecision(first)], {"C1": "CODE-1"}, now, now)
    later = now + timedelta(hours=1)

    ledger.asks.skip_moments(
        {
            SkipReason.COOLDOWN: [first.moment_id, second.moment_id],
            SkipReason.MOMENT_TOO_OLD: [third.moment_id],
        },
        later,
    )

    assert closed(ledger) == {
        # Asked before: stays as it was.
        first.moment_id: ("asked", None, now),
        second.moment_id: ("skipped", "cooldown", later),
        third.moment_id: ("skipped", "moment_too_old", later),
    }


def test_skip_moments_closes_every_moment_of_every_reason_whatever_the_chunk_size(
    ledger: SqlLedger, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asks_store, "CLOSE_CHUNK", 2)
    moments = given_moments(ledger, now, ["C1", "C2", "C3", "C4", "C5"])

    ledger.asks.skip_moments(
        {
            SkipReason.COOLDOWN: [m.moment_id for m in moments[:3]],
            SkipReason.MOMENT_TOO_OLD: [m.moment_id for m in moments[3:]],
        },
        now,
    )

    assert closed(ledger) == {
        **{m.moment_id: ("skipped", "cooldown", now) for m in moments[:3]},
        **{m.moment_id: ("skipped", "moment_too_old", now) for m in moments[3:]},
    }


def test_on_sqlite_pending_moments_are_read_in_order_from_the_index_of_pending_moments(
    sqlite_ledger: SqlLedger, now: datetime
) -> None:
    """ix_moments_pending holds only the moments still new, in the order a page
    wants them: no sort, and no walk through the moments decided before."""
    moments = given_moments(sqlite_ledger, now, ["C1", "C2", "C3"])
    selects: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT") and "FROM moments" in statement:
            selects.append((statement, parameters))

    event.listen(sqlite_ledger.engine, "before_cursor_execute", seen)
    try:
        first = sqlite_ledger.asks.pending_moments(now, 1)
        sqlite_ledger.asks.pending_moments(now, 1, (first[0].occurred_at, first[0].moment_id))
    finally:
        event.remove(sqlite_ledger.engine, "before_cursor_execute", seen)

    assert first[0].moment_id == moments[0].moment_id
    assert len(selects) == 2
    with sqlite_ledger.engine.connect() as conn:
        for statement, parameters in selects:
            plan = [
                row[-1]
                for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            assert len(plan) == 1
            assert "USING INDEX ix_moments_pending" in plan[0]
