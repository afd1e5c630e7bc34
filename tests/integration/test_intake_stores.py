"""The intake stores and their in-memory fakes keep the same contract.

Each scenario runs on the SQL stores (SQLite, and PostgreSQL with
REFERRALS_TEST_POSTGRES_URL set) and on :class:`InMemoryLedger`, through the same
``ledger.<store>`` calls, and expects the same answers: what a tested use case learns
from the fake is what the database would have said.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from domain.detractors import HandoffResult
from domain.models import Conversion, EventType, Milestone, Rejected, SourceEvent
from domain.moments import detection_spec
from domain.money import Money
from domain.ports import SourceBatch
from domain.program import Program
from integrations.ledger.base import conversion_row
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ConversionRow, ReferralCodeRow
from tests.conftest import NOW, contact, people_batch


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SQL ledger on each database, then the in-memory one."""
    if request.param == "memory":
        yield InMemoryLedger()
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    yield SqlLedger(engine)
    engine.dispose()


def events(*items: SourceEvent, cursor: str | None = None) -> SourceBatch:
    return SourceBatch(source="test", events=items, records_in=len(items), cursor=cursor)


def an_event(event_id: str, type_: EventType = EventType.RENEWAL, **fields: Any) -> SourceEvent:
    fields.setdefault("contact_id", "C1")
    fields.setdefault("account_id", "A1")
    return SourceEvent(source="test", event_id=event_id, type=type_, occurred_at=NOW, **fields)


# -- sources --------------------------------------------------------------------------------


def test_a_read_stored_twice_counts_its_events_once_and_moves_the_cursor(ledger: Any) -> None:
    batch = events(an_event("e1"), an_event("e2"), an_event("e1"), cursor="after-e2")

    first = ledger.sources.record_batch(batch, NOW)
    again = ledger.sources.record_batch(replace(batch, cursor=None), NOW)

    assert (first.new_events, first.already_seen) == (2, 1)
    assert (again.new_events, again.already_seen) == (0, 3)
    assert ledger.sources.cursor("test") == "after-e2"
    assert ledger.sources.cursor("other") is None


def test_refused_input_is_kept_once_per_stage_and_purged_of_its_excerpt(ledger: Any) -> None:
    bad = Rejected("files", "a.csv:2", "amount", "not a number", "raw row")
    ledger.sources.record_batch(
        SourceBatch(source="files", rejected=[bad], records_in=1), NOW - timedelta(days=40)
    )

    assert ledger.sources.quarantine([bad], "ingest", NOW) == 0
    assert ledger.sources.quarantine([bad], "conversion", NOW) == 1
    assert ledger.sources.quarantined() == [
        {
            "stage": stage,
            "source": "files",
            "record": "a.csv:2",
            "field": "amount",
            "reason": "not a number",
        }
        for stage in ("ingest", "conversion")
    ]
    assert ledger.sources.purge_quarantine(NOW - timedelta(days=30), NOW) == 1
    assert ledger.sources.purge_quarantine(NOW - timedelta(days=30), NOW) == 0


# -- destinations ---------------------------------------------------------------------------


def test_a_new_payout_destination_is_one_change_until_a_person_approves(ledger: Any) -> None:
    ledger.sources.record_batch(people_batch(contact("C1", stripe_account_id="acct_1")), NOW)
    ledger.sources.record_batch(people_batch(contact("C1")), NOW)  # names none: no change
    later = NOW + timedelta(hours=1)
    ledger.sources.record_batch(people_batch(contact("C1", stripe_account_id="acct_2")), later)

    changes = ledger.destinations.destination_changes_of("C1")

    assert [(c["field"], c["old_value"], c["new_value"], c["seen_at"]) for c in changes] == [
        ("stripe_account_id", "acct_1", "acct_2", later)
    ]
    assert ledger.destinations.referrers_with_changed_destination(["C1", "C9"]) == {"C1"}


# -- moments --------------------------------------------------------------------------------


def test_detection_examines_each_stored_event_once(ledger: Any, program: Program) -> None:
    spec = detection_spec(program)
    ledger.sources.record_batch(
        events(
            an_event("r1"),
            an_event("r2", contact_id=None),
            an_event("n1", EventType.NPS_RESPONSE, score=2),
        ),
        NOW,
    )
    assert ledger.moments.events_to_detect() == 3

    first = ledger.moments.detect_in_database(spec, NOW, chunk_size=2)
    ledger.sources.record_batch(events(an_event("r3")), NOW)
    second = ledger.moments.detect_in_database(spec, NOW)

    assert (first.examined, first.moments, first.detractors, first.without_contact) == (
        3,
        1,
        1,
        1,
    )
    assert first.chunks == 2
    assert (second.examined, second.moments) == (1, 1)
    assert ledger.moments.events_to_detect() == 0
    assert ledger.moments.detection_watermark() > 0


# -- handoffs -------------------------------------------------------------------------------


def test_a_detractor_is_handed_on_once_per_channel(ledger: Any, program: Program) -> None:
    ledger.sources.record_batch(people_batch(contact("C1")), NOW)
    ledger.sources.record_batch(
        events(
            an_event("n1", EventType.NPS_RESPONSE, score=2),
            an_event("n2", EventType.NPS_RESPONSE, score=0, contact_id="C9"),
        ),
        NOW,
    )
    ledger.moments.detect_in_database(detection_spec(program), NOW)
    handoffs = ledger.handoffs
    assert handoffs.detractors_not_handed_on() == 2

    assert handoffs.open_handoffs(NOW, with_crm=False) == 2
    assert handoffs.open_handoffs(NOW, with_crm=True) == 0
    page = handoffs.handoffs_to_send("email", "", 10)
    first, second = page
    assert (first.source_event, first.contact_name, first.account_name, first.score) == (
        "test:n1",
        "Person C1",
        "Account A1",
        2,
    )
    assert (second.contact_id, second.contact_name) == ("C9", None)
    assert handoffs.handoffs_to_send("email", "test:n1", 10) == [second]
    assert handoffs.handoffs_to_send("crm", "", 10) == []

    assert handoffs.claim_handoffs("email", ["test:n1", "test:n2"], NOW) == ["test:n1", "test:n2"]
    assert handoffs.claim_handoffs("email", ["test:n1"], NOW) == []
    handoffs.record_handoff_results(
        "email", [HandoffResult("test:n1", "accepted", ref="msg-1")], NOW
    )
    assert handoffs.expire_handoff_claims("email", NOW + timedelta(hours=1)) == 1
    with pytest.raises(ValueError, match="not a email hand-off result"):
        handoffs.record_handoff_results("email", [HandoffResult("test:n2", "created")], NOW)

    assert handoffs.handoff_counts() == {"email": {"accepted": 1, "unknown": 1}, "crm": {}}
    assert handoffs.queued_handoffs("email") == 0
    assert handoffs.detractors_not_handed_on() == 0


# -- history --------------------------------------------------------------------------------


def _conversion(n: int) -> Conversion:
    return Conversion(
        conversion_id=f"conv-{n:02d}",
        source_event=f"test:signup-{n}",
        referral_code="CODE-C1",
        referrer_id="C1",
        referee_account_id=f"REF-{n}",
        referee_contact_id=None,
        milestone=Milestone.LEAD,
        occurred_at=NOW,
        amount=Money(100 * n, "EUR"),
        referee_email_domain=None,
    )


def _store_conversions(ledger: Any, conversions: list[Conversion]) -> None:
    """Conversions as the conversions stage leaves them (written here directly, so the
    history's contract does not hang on another area's writer)."""
    if isinstance(ledger, InMemoryLedger):
        ledger.history.conversions.update((c.conversion_id, c) for c in conversions)
        return
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(ReferralCodeRow), {"code": "CODE-C1", "contact_id": "C1", "created_at": NOW}
        )
        conn.execute(
            insert(ConversionRow),
            [conversion_row(c, NOW) for c in conversions],
        )


def test_the_history_pages_through_every_conversion_by_id(ledger: Any) -> None:
    conversions = [_conversion(n) for n in (3, 1, 5, 2, 4)]
    _store_conversions(ledger, conversions)

    pages = list(ledger.history.conversion_history(page_size=2))

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c for p in pages for c in p] == sorted(conversions, key=lambda c: c.conversion_id)


# -- the fakes record what they were asked ---------------------------------------------------


def test_the_fakes_record_every_call() -> None:
    memory = InMemoryLedger()
    memory.sources.cursor("crm")
    memory.moments.events_to_detect()
    memory.handoffs.queued_handoffs("email")

    assert memory.sources.calls == [("cursor", "crm")]
    assert memory.moments.calls == [("events_to_detect",)]
    assert memory.handoffs.calls == [("queued_handoffs", "email")]


def test_a_unit_of_work_on_the_fakes_undoes_an_intake_block_that_raises() -> None:
    memory = InMemoryLedger()

    def store_and_fail() -> None:
        with memory.transaction() as uow:
            uow.sources.record_batch(events(an_event("e1"), cursor="c1"), NOW)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store_and_fail()
    assert memory.sources.cursor("test") is None
    assert memory.moments.events_to_detect() == 0
