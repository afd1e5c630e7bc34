"""The metrics task on the in-memory metrics store: which windows it reads, and
figures computed from seeded records without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.metrics import (
    ACTIVE_DAYS,
    ALL,
    CostRecord,
    PeriodKind,
    ReferralRecord,
    periods_ending,
)
from domain.models import ReferrerType
from domain.money import Money
from domain.program import Program
from integrations.ledger.memory import InMemoryLedger
from tasks.metrics import compute_program_metrics

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_metrics_read_conversions_from_the_active_window_before_the_first_period(
    program: Program,
) -> None:
    ledger = InMemoryLedger()

    compute_program_metrics.fn(ledger, program, PeriodKind.MONTH, AS_OF, 3)

    start = periods_ending(AS_OF, PeriodKind.MONTH, 3)[0].start
    reads = {call[0]: call[1:] for call in ledger.metrics.calls}
    assert reads["leads"] == (start, AS_OF)
    assert reads["conversions"] == (start - timedelta(days=ACTIVE_DAYS), AS_OF)
    assert reads["referrals"] == (start, AS_OF)
    assert reads["costs"][-1] == program.currency


def test_referrals_and_costs_seeded_in_memory_land_in_their_periods(program: Program) -> None:
    ledger = InMemoryLedger()
    november = datetime(2026, 11, 1, tzinfo=UTC)
    ledger.metrics.contacts = {ReferrerType.CUSTOMER: 10}
    ledger.metrics.referral_records = [
        ReferralRecord("C1", ReferrerType.CUSTOMER, "a:NEW-1", november + timedelta(days=2)),
        ReferralRecord("C2", ReferrerType.CUSTOMER, "a:NEW-2", november + timedelta(days=9)),
        # Before the window: not a referral of these periods.
        ReferralRecord("C3", ReferrerType.CUSTOMER, "a:NEW-3", datetime(2026, 1, 5, tzinfo=UTC)),
    ]
    ledger.metrics.cost_records = [
        CostRecord(november, ReferrerType.CUSTOMER, Money(30_000, "EUR"), Money(0, "EUR")),
        CostRecord(november, ReferrerType.CUSTOMER, Money(99_999, "USD"), Money(0, "USD")),
    ]

    metrics = compute_program_metrics.fn(ledger, program, PeriodKind.MONTH, AS_OF, 2)

    last = metrics.periods[-1].source(ALL)
    assert [p.source(ALL).referrals for p in metrics.periods] == [0, 2]
    assert last.cost == Money(30_000, "EUR")
