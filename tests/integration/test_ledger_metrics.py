"""The metrics queries of the ledger, on SQLite and (when configured) PostgreSQL.

One small program history is built through the ledger's own write methods, then each
query is checked against what that history must give. ``given_program_history`` is
shared with the ``referrals report`` test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from domain.attribution import conversion_from_event
from domain.metrics import (
    ConversionRecord,
    CostRecord,
    LeadRecord,
    PaidRewardRecord,
    PeriodKind,
    ReferralRecord,
    periods_ending,
)
from domain.models import (
    Conversion,
    EventType,
    Milestone,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    ReferrerType,
    Reward,
    RewardStatus,
    SourceEvent,
)
from domain.money import Money
from domain.ports import SourceBatch
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import LedgerEntryRow
from tasks.metrics import compute_program_metrics
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import NOW, contact, people_batch

# NOW is 2026-11-02 09:00 UTC: the months below are September to November 2026.
CODES = {"C1": "R" + "C" * 20, "P1": "R" + "P" * 20, "E1": "R" + "E" * 20}


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def _event(
    event_id: str, type_: EventType, when: datetime, account: str, **extra: Any
) -> SourceEvent:
    return SourceEvent(
        source="test", event_id=event_id, type=type_, occurred_at=when, account_id=account, **extra
    )


def _eur(major: int) -> Money:
    return Money(major * 100, "EUR")


HISTORY = (
    # Referred by customer C1: signed up 3 Oct, won 13 Oct (10 days), 12,000 EUR.
    _event("r1-signup", EventType.SIGNUP, at(10, 3), "R1", referral_code=CODES["C1"]),
    _event(
        "r1-won",
        EventType.DEAL_WON,
        at(10, 13),
        "R1",
        referral_code=CODES["C1"],
        amount=_eur(12_000),
    ),
    # Referred by partner P1: signed up 5 Oct, not won yet.
    _event("r2-signup", EventType.SIGNUP, at(10, 5), "R2", referral_code=CODES["P1"]),
    # Other channels: one won on 20 Oct after a 40-day cycle, two not won (the win of
    # O3's account came before its signup: not a conversion of that lead).
    _event("o1-signup", EventType.SIGNUP, at(9, 10), "O1"),
    _event("o1-won", EventType.DEAL_WON, at(10, 20), "O1", amount=_eur(8_000)),
    _event("o2-signup", EventType.SIGNUP, at(10, 1), "O2"),
    _event("o3-won", EventType.DEAL_WON, at(8, 1), "O3", amount=_eur(5_000)),
    _event("o3-signup", EventType.SIGNUP, at(10, 2), "O3"),
    # A deal won by an existing customer is nobody's lead.
    _event("a1-won", EventType.DEAL_WON, at(10, 8), "A1", amount=_eur(30_000)),
)


def given_program_history(ledger: SqlLedger) -> Reward:
    """Contacts, codes, events, conversions and one reward paid 7 days after its deal.

    Returns the paid reward (200 EUR to C1, paid 20 Oct; 50 EUR of it recovered 1 Nov).
    """
    people = people_batch(
        contact("C1", "A1"),
        contact("C2", "A2"),
        contact("C3", "A3"),
        contact("P1", "PA", kind=ReferrerType.PARTNER),
        contact("E1", "INTERNAL", kind=ReferrerType.EMPLOYEE),
    )
    ledger.sources.record_batch(people, at(9, 1))
    record_ask_decisions(ledger, [], {c: code for c, code in CODES.items()}, at(9, 1), at(9, 1))
    ledger.sources.record_batch(
        SourceBatch(source="test", events=list(HISTORY), records_in=len(HISTORY)), at(10, 21)
    )
    owners = ledger.conversions.code_owners(CODES.values())
    conversions: list[Conversion] = []
    for event in HISTORY:
        found = conversion_from_event(event, owners, "EUR")
        if found is not None:
            conversions.append(found)
    ledger.conversions.record_conversions([], conversions, [], at(10, 21))
    won = next(c for c in conversions if c.milestone is Milestone.CUSTOMER)
    reward = Reward(
        reward_id=Reward.derive_id(won.conversion_id, "customer-closed-deal", "C1"),
        conversion_id=won.conversion_id,
        rule_id="customer-closed-deal",
        referrer_id="C1",
        amount=_eur(200),
        milestone=Milestone.CUSTOMER,
        attribution_model="last_touch",
        payable_at=at(10, 13),
        explanation="flat reward for a new customer",
    )
    ledger.rewards.record([won.conversion_id], [reward], [], at(10, 13))
    ledger.rewards.move(
        [reward.reward_id], [RewardStatus.HOLDING], RewardStatus.PAYABLE, at(10, 20)
    )
    paid_at = won.occurred_at + timedelta(days=7)
    [payout] = ledger.payouts.prepare(
        [(reward.reward_id, PayoutRailKind.LEDGER_ONLY, None)], paid_at
    )
    ledger.payouts.record_results(
        [PayoutResult(payout.payout_id, PayoutOutcome.SUCCEEDED)], paid_at
    )
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(LedgerEntryRow),
            {
                "reward_id": reward.reward_id,
                "kind": "reversed",
                "amount_minor": 5_000,
                "currency": "EUR",
                "ref": "tr_reversal_1",
                "created_at": at(11, 1),
            },
        )
    return reward


def test_contacts_are_counted_per_referrer_type(ledger: SqlLedger) -> None:
    given_program_history(ledger)

    counts = ledger.metrics.contact_counts()

    assert counts == {ReferrerType.CUSTOMER: 3, ReferrerType.PARTNER: 1, ReferrerType.EMPLOYEE: 1}


def test_a_lead_is_its_first_signup_with_its_first_win_after_it(ledger: SqlLedger) -> None:
    given_program_history(ledger)

    leads = ledger.metrics.leads(at(9, 1), NOW)

    assert leads == [
        LeadRecord("a:O1", at(9, 10), False, None, at(10, 20), _eur(8_000)),
        LeadRecord("a:O2", at(10, 1), False),
        LeadRecord("a:O3", at(10, 2), False),
        LeadRecord("a:R1", at(10, 3), True, ReferrerType.CUSTOMER, at(10, 13), _eur(12_000)),
        LeadRecord("a:R2", at(10, 5), True, ReferrerType.PARTNER),
    ]


def test_leads_signed_up_before_the_window_come_only_when_won_in_it(ledger: SqlLedger) -> None:
    given_program_history(ledger)
    metrics = ledger.metrics

    october = metrics.leads(at(10, 1, 0), NOW)
    until_signups = metrics.leads(at(9, 1), at(10, 4))

    assert [lead.lead_id for lead in october] == ["a:O1", "a:O2", "a:O3", "a:R1", "a:R2"]
    assert [lead.lead_id for lead in until_signups] == ["a:O1", "a:O2", "a:O3", "a:R1"]
    # Nothing at or after `until` is seen: neither R2's signup nor any win.
    assert all(lead.won_at is None for lead in until_signups)


def test_conversions_carry_their_referrer_type_and_referee(ledger: SqlLedger) -> None:
    given_program_history(ledger)

    conversions = ledger.metrics.conversions(at(9, 1), NOW)

    assert conversions == [
        ConversionRecord("C1", ReferrerType.CUSTOMER, "a:R1", Milestone.LEAD, at(10, 3)),
        ConversionRecord("P1", ReferrerType.PARTNER, "a:R2", Milestone.LEAD, at(10, 5)),
        ConversionRecord(
            "C1", ReferrerType.CUSTOMER, "a:R1", Milestone.CUSTOMER, at(10, 13), _eur(12_000)
        ),
    ]


def test_a_referral_is_dated_by_its_first_conversion_ever(ledger: SqlLedger) -> None:
    given_program_history(ledger)
    metrics = ledger.metrics

    everything = metrics.referrals(at(9, 1), NOW)
    after_r1_signed_up = metrics.referrals(at(10, 4), NOW)

    assert everything == [
        ReferralRecord("C1", ReferrerType.CUSTOMER, "a:R1", at(10, 3)),
        ReferralRecord("P1", ReferrerType.PARTNER, "a:R2", at(10, 5)),
    ]
    # R1 becoming a customer on 13 Oct is not a new referral.
    assert after_r1_signed_up == [ReferralRecord("P1", ReferrerType.PARTNER, "a:R2", at(10, 5))]


def test_a_paid_reward_comes_with_its_conversion_time_and_first_payout(ledger: SqlLedger) -> None:
    reward = given_program_history(ledger)

    paid = ledger.metrics.paid_rewards(at(9, 1), NOW)
    before_payout = ledger.metrics.paid_rewards(at(9, 1), at(10, 20))

    assert paid == [
        PaidRewardRecord(
            reward.reward_id, ReferrerType.CUSTOMER, Milestone.CUSTOMER, at(10, 13), at(10, 20)
        )
    ]
    assert before_payout == []


def test_cost_is_summed_per_period_and_source_paid_and_recovered(ledger: SqlLedger) -> None:
    given_program_history(ledger)
    periods = periods_ending(NOW, PeriodKind.MONTH, 3)

    costs = ledger.metrics.costs(periods, NOW, "EUR")
    other_currency = ledger.metrics.costs(periods, NOW, "USD")
    before_recovery = ledger.metrics.costs(periods, at(11, 1, 0), "EUR")

    assert costs == [
        CostRecord(at(10, 1, 0), ReferrerType.CUSTOMER, _eur(200), _eur(0)),
        CostRecord(at(11, 1, 0), ReferrerType.CUSTOMER, _eur(0), _eur(50)),
    ]
    assert other_currency == []
    assert before_recovery == costs[:1]


def test_the_metrics_task_computes_the_report_from_the_ledger(
    ledger: SqlLedger, program: Program
) -> None:
    given_program_history(ledger)

    metrics = compute_program_metrics.fn(ledger, program, PeriodKind.MONTH, NOW, 3)

    assert [p.period.label for p in metrics.periods] == ["2026-09", "2026-10", "2026-11"]
    october = metrics.periods[1]
    everyone = october.source("all")
    assert (everyone.referrers, everyone.contacts, everyone.referrals) == (2, 5, 2)
    assert everyone.leads.conversion_pct is not None
    assert (everyone.leads.leads, everyone.leads.converted) == (2, 1)
    assert (october.other.leads, october.other.converted, october.other.won) == (2, 0, 1)
    assert everyone.cost == _eur(200)
    assert everyone.revenue == _eur(12_000)
    assert everyone.time_to_reward.paid == 1
    assert everyone.time_to_reward.slow  # exactly 7 days is not under 7
    assert metrics.window.source("all").cost == _eur(150)
    assert metrics.window.source("partner").referrers == 1
