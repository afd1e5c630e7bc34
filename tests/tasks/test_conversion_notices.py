"""The referrer hears of each step once: "referral received" for a new lead, "now a
qualified lead" with the reward they will earn, from the CRM and from Stripe alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from domain.models import EventType, ReferrerType, SourceEvent
from domain.program import Program
from domain.stripe_conversions import SUBSCRIPTION_CREATED
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from tasks.conversions import record_new_conversions, record_stripe_conversions, reward_to_come
from tasks.emails import send_notifications
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.integration.test_ledger_flow import events_batch
from tests.stripe_conversion_events import (
    CODE_A,
    CODE_B,
    PAYER_EMAIL,
    StripeLedger,
    event,
    given_referrers,
    subscription,
)


@pytest.fixture
def stripe_ledger(ledger: SqlLedger, now: datetime) -> StripeLedger:
    joined = StripeLedger(ledger.engine)
    given_referrers(joined, now, C1=CODE_A)
    return joined


def crm_step(type_: EventType, n: int, now: datetime, code: str = CODE_A) -> SourceEvent:
    return SourceEvent(
        source="test",
        event_id=f"ref-{type_.value}-{n}",
        type=type_,
        occurred_at=now + timedelta(hours=n),
        account_id="NEWCO",
        contact_id="RC1",
        referral_code=code,
    )


def notices(ledger: SqlLedger) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (kind, who.contact_id, data)
        for _, kind, who, data in ledger.emails.notifications_to_send("", 50)
    ]


def test_a_crm_lead_and_its_qualification_notify_the_referrer_once_each_with_the_reward(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    signup = crm_step(EventType.SIGNUP, 1, now)
    qualified = crm_step(EventType.DEAL_QUALIFIED, 2, now)
    stripe_ledger.sources.record_batch(events_batch(signup, qualified), now)

    first = record_new_conversions.fn(stripe_ledger, program, now)
    stripe_ledger.sources.record_batch(events_batch(signup, qualified), now)  # delivered again
    again = record_new_conversions.fn(stripe_ledger, program, now)

    line = "When they become a customer, you earn 200.00 EUR."
    assert sorted(notices(stripe_ledger), key=lambda n: n[0]) == [
        (
            "referral_qualified",
            "C1",
            {"milestone": "qualified", "code": CODE_A, "reward_line": line},
        ),
        ("referral_received", "C1", {"milestone": "lead", "code": CODE_A, "reward_line": line}),
    ]
    assert (first["notices"], again["notices"], again["examined"]) == (2, 0, 0)


def test_the_notices_are_sent_once_with_the_concrete_reward_in_words(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    steps = [crm_step(EventType.SIGNUP, 1, now), crm_step(EventType.DEAL_QUALIFIED, 2, now)]
    stripe_ledger.sources.record_batch(events_batch(*steps), now)
    record_new_conversions.fn(stripe_ledger, program, now)
    sender = RecordingEmailSender()

    send_notifications.fn(stripe_ledger, sender, program, now)
    send_notifications.fn(stripe_ledger, sender, program, now)

    by_kind = {m.kind: m for m in sender.sent}
    assert sorted(by_kind) == ["referral_qualified", "referral_received"]
    assert len(sender.sent) == 2
    qualified = by_kind["referral_qualified"]
    assert qualified.subject == "Your referral is now a qualified lead"
    assert "you earn 200.00 EUR" in qualified.data["text"]
    assert "Hi Person" in qualified.data["text"]
    assert by_kind["referral_received"].subject.startswith("Your referral has arrived")
    assert all(m.to_email == "c1@a-c1.example" for m in sender.sent)


def test_a_customer_conversion_sends_no_step_notice_its_reward_earned_notice_says_it(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    stripe_ledger.sources.record_batch(events_batch(crm_step(EventType.DEAL_WON, 1, now)), now)
    record_new_conversions.fn(stripe_ledger, program, now)
    assert notices(stripe_ledger) == []


def test_a_stripe_trial_tells_the_referrer_their_referral_arrived_once(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    trial = event("evt_sub", SUBSCRIPTION_CREATED, int(now.timestamp()), subscription())
    for _ in range(5):
        stripe_ledger.provider_events.store_stripe_event(trial, now)
        record_stripe_conversions.fn(stripe_ledger, program, now)

    ((kind, who, data),) = notices(stripe_ledger)
    assert (kind, who, data["code"]) == ("referral_received", "C1", CODE_A)
    assert PAYER_EMAIL not in str(data)


def test_a_partner_hears_of_their_share_of_the_deal_and_its_cap(program: Program) -> None:
    assert reward_to_come(program, ReferrerType.PARTNER) == (
        "When they become a customer, you earn 15% of their first-year value (up to 10,000.00 EUR)."
    )
    bare = program.model_copy(update={"rewards": ()})
    assert reward_to_come(bare, ReferrerType.CUSTOMER) == ""


def test_the_notices_are_queued_on_a_ledger_without_the_stripe_area_too(
    sqlite_ledger: SqlLedger, program: Program, now: datetime
) -> None:
    sqlite_ledger.sources.record_batch(
        people_batch(contact("P1", "A-P1", kind=ReferrerType.PARTNER)), now
    )
    record_ask_decisions(sqlite_ledger, [], {"P1": CODE_B}, now, now)
    step = crm_step(EventType.DEAL_QUALIFIED, 1, now, code=CODE_B)
    sqlite_ledger.sources.record_batch(events_batch(step), now)

    counts = record_new_conversions.fn(sqlite_ledger, program, now)

    ((kind, who, data),) = notices(sqlite_ledger)
    assert (kind, who, counts["notices"]) == ("referral_qualified", "P1", 1)
    assert "15% of their first-year value" in data["reward_line"]


def test_a_qualified_lead_notice_words_a_recurring_commission_and_the_caps_truly(
    sqlite_ledger: SqlLedger, program: Program, now: datetime
) -> None:
    recurring = Program.model_validate(
        {
            **program.model_dump(mode="json", by_alias=True),
            "reward_caps": [{"per": "referrer", "period": "year", "amount": "2000.00"}],
            "rewards": [
                {
                    "id": "partner-recurring",
                    "referrer_type": "partner",
                    "milestone": "customer",
                    "kind": "recurring",
                    "percent": "10",
                    "months": 12,
                    "cap": "300.00",
                }
            ],
        }
    )
    sqlite_ledger.sources.record_batch(
        people_batch(contact("P1", "A-P1", kind=ReferrerType.PARTNER)), now
    )
    record_ask_decisions(sqlite_ledger, [], {"P1": CODE_B}, now, now)
    step = crm_step(EventType.DEAL_QUALIFIED, 1, now, code=CODE_B)
    sqlite_ledger.sources.record_batch(events_batch(step), now)

    record_new_conversions.fn(sqlite_ledger, recurring, now)

    ((kind, _, data),) = notices(sqlite_ledger)
    assert kind == "referral_qualified"
    assert data["reward_line"] == (
        "When they become a customer, you earn 10% of every invoice they pay in their "
        "first 12 months (up to 300.00 EUR per invoice). Your rewards add up to at most "
        "2,000.00 EUR per calendar year."
    )
    assert "first-year" not in data["reward_line"]


def test_an_employees_new_lead_hears_of_the_qualified_and_the_customer_reward(
    sqlite_ledger: SqlLedger, program: Program, now: datetime
) -> None:
    sqlite_ledger.sources.record_batch(
        people_batch(contact("E1", "OURS", kind=ReferrerType.EMPLOYEE)), now
    )
    record_ask_decisions(sqlite_ledger, [], {"E1": CODE_B}, now, now)
    sqlite_ledger.sources.record_batch(
        events_batch(crm_step(EventType.SIGNUP, 1, now, code=CODE_B)), now
    )

    record_new_conversions.fn(sqlite_ledger, program, now)

    ((kind, _, data),) = notices(sqlite_ledger)
    assert (kind, data["reward_line"]) == (
        "referral_received",
        "When they become a qualified lead, you earn 100.00 EUR. "
        "When they become a customer, you earn 300.00 EUR.",
    )
