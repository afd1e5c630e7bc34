"""``learn_card_fingerprints`` over the real ledger, with the recording card reader.

The referrer R once paid, as Stripe customer ``cus_R``, for a referral of X's; now a
"friend" R referred pays with the same card. Neither event carries the card: R's
invoice names its charge by id, the friend's Checkout Session an expanded payment
intent naming its latest charge by id. The charges are read before the rewards.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from domain.errors import RetryableIntegrationError
from domain.fraud import SAME_CARD
from domain.ports import PaymentCards
from domain.program import Program
from domain.stripe_conversions import CHECKOUT_COMPLETED, INVOICE_PAID
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ConversionRow
from integrations.payments.fake_cards import RecordingCards
from tasks.cards import learn_card_fingerprints
from tasks.conversions import link_stripe_payments, record_stripe_conversions
from tasks.rewards import compute_new_rewards
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.stripe_conversion_events import CODE_A, CODE_B, event, invoice, session

SHARED = "fpSharedCard01"


def given_a_referrer_who_paid_with_the_card_a_friend_pays_with(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    """R (customer ``cus_R``, code A) paid ``ch_R`` on X's code B; the friend of R pays
    through ``pi_F``, whose latest charge is ``ch_F``. Both conversions are recorded."""
    people = [contact("R", "ACC-R", stripe_customer_id="cus_R"), contact("X", "ACC-X")]
    ledger.sources.record_batch(people_batch(*people), now)
    record_ask_decisions(ledger, [], {"R": CODE_A, "X": CODE_B}, now, now)
    own = invoice("in_R", customer="cus_R", code=CODE_B, legacy=True, charge="ch_R")
    own["payment_intent"] = "pi_R"
    friend = session(
        "cs_F", customer="cus_F", code=CODE_A, mode="payment", invoice=None, subscription=None
    )
    friend["payment_intent"] = {"id": "pi_F", "object": "payment_intent", "latest_charge": "ch_F"}
    created = int((now - timedelta(days=2)).timestamp())
    for evt in (
        event("evt_own", INVOICE_PAID, created, own),
        event("evt_friend", CHECKOUT_COMPLETED, created + 3600, friend),
    ):
        ledger.provider_events.store_stripe_event(evt, now)
    assert record_stripe_conversions.fn(ledger, program, now)["conversions"] == 2
    link_stripe_payments.fn(ledger, now)


def cards_by_payment(ledger: SqlLedger) -> dict[str, str | None]:
    """The card fingerprint of each Stripe conversion, by the event it was read from."""
    stmt = select(ConversionRow.source_event, ConversionRow.card_fingerprint)
    with ledger.engine.connect() as conn:
        return {event_id: card for event_id, card in conn.execute(stmt)}


def flags_of(ledger: SqlLedger, now: datetime) -> dict[str, tuple[str, ...]]:
    """The fraud flags of each reward, by the event its conversion was read from."""
    stmt = select(ConversionRow.conversion_id, ConversionRow.source_event)
    with ledger.engine.connect() as conn:
        events = {conversion_id: event_id for conversion_id, event_id in conn.execute(stmt)}
    views = ledger.rewards.to_route(now + timedelta(days=365), "", 1000)
    return {events[v.reward.conversion_id]: v.reward.flags for v in views}


def learn(ledger: SqlLedger, cards: PaymentCards, now: datetime) -> Mapping[str, Any]:
    return learn_card_fingerprints.fn(ledger, cards, now, batch_size=1)


# -- learning the card ------------------------------------------------------------------------


def test_cards_named_by_id_only_are_read_so_the_same_card_is_flagged(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)
    cards = RecordingCards({"ch_R": SHARED, "ch_F": SHARED})

    counts = learn(ledger, cards, now)
    compute_new_rewards.fn(ledger, program, now)

    assert (counts["examined"], counts["learned"]) == (2, 2)
    # The charge each event named, one read each: never the payment intent behind it.
    assert sorted(cards.calls) == ["ch_F", "ch_R"]
    assert cards_by_payment(ledger) == {"stripe:evt_own": SHARED, "stripe:evt_friend": SHARED}
    flags = flags_of(ledger, now)
    assert flags["stripe:evt_friend"] == (SAME_CARD,)
    assert flags["stripe:evt_own"] == ()


def test_without_reading_the_cards_the_same_card_goes_unnoticed(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)

    compute_new_rewards.fn(ledger, program, now)

    assert flags_of(ledger, now)["stripe:evt_friend"] == ()


def test_a_card_is_read_once_and_never_for_a_conversion_already_rewarded(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)
    cards = RecordingCards({"ch_R": SHARED, "ch_F": SHARED})
    learn(ledger, cards, now)
    compute_new_rewards.fn(ledger, program, now)

    again = learn(ledger, cards, now)

    assert again == {"examined": 0, "learned": 0, "no_card": 0, "refused": 0}
    assert len(cards.calls) == 2


def test_a_payment_made_otherwise_than_by_card_tries_each_source_and_keeps_no_card(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)
    # A SEPA debit: neither the charge nor the payment intent's charge is a card's.
    cards = RecordingCards({"ch_R": SHARED, "ch_F": None, "pi_F": None})

    counts = learn(ledger, cards, now)

    assert (counts["learned"], counts["no_card"]) == (1, 1)
    assert [c for c in cards.calls if c.endswith("_F")] == ["ch_F", "pi_F"]
    assert cards_by_payment(ledger)["stripe:evt_friend"] is None


# -- when Stripe cannot be read -----------------------------------------------------------


def test_a_card_stripe_cannot_read_now_fails_the_task_after_keeping_the_others(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)
    cards = RecordingCards({"ch_R": SHARED, "ch_F": SHARED})
    cards.script("ch_F", ["retryable"])

    with pytest.raises(RetryableIntegrationError, match="card of 1 conversions"):
        learn(ledger, cards, now)
    known = cards_by_payment(ledger)
    # Prefect runs the task again; this time Stripe answers.
    counts = learn(ledger, cards, now)

    assert known == {"stripe:evt_own": SHARED, "stripe:evt_friend": None}
    assert (counts["examined"], counts["learned"]) == (1, 1)
    assert cards.calls.count("ch_R") == 1
    assert cards_by_payment(ledger)["stripe:evt_friend"] == SHARED


def test_a_read_stripe_refuses_leaves_the_card_unknown_without_holding_the_rewards(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)
    cards = RecordingCards({"ch_R": SHARED, "ch_F": SHARED})
    cards.script("ch_F", ["permanent"])

    counts = learn(ledger, cards, now)

    assert (counts["learned"], counts["refused"]) == (1, 1)
    assert cards_by_payment(ledger)["stripe:evt_friend"] is None
