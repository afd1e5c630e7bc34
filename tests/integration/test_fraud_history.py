"""Fraud flags computed from what the ledger knows: earlier conversions, Stripe payments,
referee contacts and the referrer graph (SQLite, and Postgres when configured)."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.fraud import (
    REFERRAL_CYCLE,
    SAME_CARD,
    SAME_EMAIL,
    SAME_STRIPE_CUSTOMER,
    FraudHistory,
    velocity_flag,
)
from domain.models import Contact, Conversion, Milestone, derived_id
from domain.money import Money
from domain.ports import SourceBatch
from domain.program import Fraud, Program
from domain.stripe_conversions import StripeConversion
from integrations.ledger.sql import SqlLedger
from tasks.rewards import compute_new_rewards
from tasks.use_cases import conversions as use_cases
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch

CAP = Fraud(max_conversions_per_window=2, window_hours=24)


def given_people(ledger: SqlLedger, now: datetime, *people: Contact) -> dict[str, str]:
    """Contacts on their accounts, each holding a code; contact id -> code."""
    ledger.sources.record_batch(people_batch(*people), now)
    codes = {p.contact_id: f"R{p.contact_id:A<20}"[:21] for p in people}
    record_ask_decisions(ledger, [], codes, now, now)
    return codes


def referral(
    key: str,
    code: str,
    referrer: str,
    at: datetime,
    *,
    referee_account: str | None = None,
    referee_contact: str | None = None,
    card: str | None = None,
) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=f"test:{key}",
        referral_code=code,
        referrer_id=referrer,
        referee_account_id=referee_account,
        referee_contact_id=referee_contact,
        milestone=Milestone.CUSTOMER,
        occurred_at=at,
        amount=Money(100_000, "EUR"),
        card_fingerprint=card,
    )


def flags_by_conversion(ledger: SqlLedger, now: datetime) -> dict[str, tuple[str, ...]]:
    views = ledger.rewards.to_route(now + timedelta(days=365), "", 1000)
    return {v.reward.conversion_id: v.reward.flags for v in views}


def test_a_cycle_through_conversions_rewarded_earlier_is_flagged(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    a, b, c = contact("A", "ACC-A"), contact("B", "ACC-B"), contact("C", "ACC-C")
    codes = given_people(ledger, now, a, b, c)
    ab = referral("ab", codes["A"], "A", now, referee_account="ACC-B")
    bc = referral("bc", codes["B"], "B", now, referee_account="ACC-C")
    ledger.conversions.record_conversions([], [ab, bc], [], now)
    compute_new_rewards.fn(ledger, program, now)
    # Later C refers A: the chain A -> B -> C is only in the ledger now.
    ca = referral("ca", codes["C"], "C", now, referee_contact="A")
    ledger.conversions.record_conversions([], [ca], [], now)
    compute_new_rewards.fn(ledger, program, now)

    flags = flags_by_conversion(ledger, now)
    assert flags[ca.conversion_id] == (REFERRAL_CYCLE,)
    assert flags[ab.conversion_id] == flags[bc.conversion_id] == ()


def test_the_velocity_cap_counts_conversions_already_rewarded(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    capped = program.model_copy(update={"fraud": CAP})
    codes = given_people(ledger, now, contact("V", "ACC-V"))
    first = [
        referral(f"v{i}", codes["V"], "V", now + timedelta(hours=i), referee_account=f"N{i}")
        for i in range(2)
    ]
    ledger.conversions.record_conversions([], first, [], now)
    compute_new_rewards.fn(ledger, capped, now)
    third = referral("v2", codes["V"], "V", now + timedelta(hours=5), referee_account="N2")
    a_day_later = referral("v3", codes["V"], "V", now + timedelta(hours=30), referee_account="N3")
    ledger.conversions.record_conversions([], [third, a_day_later], [], now)
    compute_new_rewards.fn(ledger, capped, now)

    flags = flags_by_conversion(ledger, now)
    assert [flags[c.conversion_id] for c in first] == [(), ()]
    assert flags[third.conversion_id] == (velocity_flag(CAP),)
    # 30 h: the two first have left the window; v2 and v3 are two, at the cap.
    assert flags[a_day_later.conversion_id] == ()


def record_stripe(ledger: SqlLedger, conv: Conversion, customer: str, now: datetime) -> None:
    assert conv.amount is not None  # a paid conversion
    paid = StripeConversion(
        f"evt_{conv.source_event}", conv, customer, (f"in_{conv.source_event}",), conv.amount, True
    )
    assert use_cases.record_stripe_conversions(ledger, [], [paid], [], {}, now).new == (
        conv.conversion_id,
    )


def test_a_referee_paying_with_a_card_the_referrer_paid_with_is_flagged(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    referrer = contact("R", "ACC-R", stripe_customer_id="cus_referrer")
    codes = given_people(ledger, now, referrer, contact("X", "ACC-X"))
    # The referrer was once referred by X and paid with card fpREF.
    own = referral("own", codes["X"], "X", now, referee_contact="R", card="fpREF")
    record_stripe(ledger, own, "cus_referrer", now)
    # Now "a friend" of R pays, as another Stripe customer, with the same card.
    friend = referral("friend", codes["R"], "R", now, referee_account="ACC-F", card="fpREF")
    record_stripe(ledger, friend, "cus_friend", now)
    compute_new_rewards.fn(ledger, program, now)

    flags = flags_by_conversion(ledger, now)
    assert flags[friend.conversion_id] == (SAME_CARD,)
    assert flags[own.conversion_id] == ()


def test_a_referee_paying_as_the_referrers_stripe_customer_is_flagged(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    codes = given_people(ledger, now, contact("S", "ACC-S", stripe_customer_id="cus_s"))
    friend = referral("friend-s", codes["S"], "S", now, referee_account="ACC-G")
    record_stripe(ledger, friend, "cus_s", now)
    compute_new_rewards.fn(ledger, program, now)

    assert flags_by_conversion(ledger, now)[friend.conversion_id] == (SAME_STRIPE_CUSTOMER,)


def test_a_referee_contact_with_the_referrers_own_mailbox_is_flagged_without_the_address(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    referrer = contact("M", "ACC-M", email="mia.jones@gmail.com")
    codes = given_people(ledger, now, referrer)
    alias = contact("M2", "ACC-NEW", email="MiaJones+deal@googlemail.com")
    ledger.sources.record_batch(
        SourceBatch(source="test", contacts=[alias], records_in=1, reference_only=1), now
    )
    conv = referral("alias", codes["M"], "M", now, referee_contact="M2", referee_account="ACC-NEW")
    ledger.conversions.record_conversions([], [conv], [], now)
    compute_new_rewards.fn(ledger, program, now)

    flags = flags_by_conversion(ledger, now)[conv.conversion_id]
    assert flags == (SAME_EMAIL,)
    assert not any("mia" in f.lower() or "@" in f for f in flags)


def test_the_history_of_an_empty_batch_is_empty(ledger: SqlLedger, program: Program) -> None:
    assert ledger.fraud.fraud_history([], {}, program.fraud) == FraudHistory()
