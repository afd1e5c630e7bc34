"""Reading the card behind a payment from Stripe, over real HTTP to the fake Stripe,
through the official library (SQLite, and Postgres when configured).

An event that names its charge by id, or only its payment intent, carries no card:
:class:`StripeRecords` reads the charge (``GET /v1/charges/{id}``, or the payment
intent with its latest charge expanded), throttled like every Stripe call, retried by
the library's own rules, and gives back the fingerprint and nothing else of the card.
"""

from __future__ import annotations

import logging

import pytest

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.fraud import SAME_CARD
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_rail import build_stripe_client
from integrations.payments.stripe_reconcile import StripeRecords
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.cards import learn_card_fingerprints
from tasks.rewards import compute_new_rewards
from tests.conftest import NOW
from tests.fakes.throttle import RecordingThrottle, endpoint_matches
from tests.tasks.test_learn_card_fingerprints import (
    SHARED,
    cards_by_payment,
    flags_of,
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with,
)

# What the fake's card charges carry beside the fingerprint: none of it may leave.
CARD_DETAILS = ('"last4"', "exp_month", "exp_year", "visa", "cvc_check")


def records(
    fake: FakeStripe,
    *,
    retries: int = 0,
    key: str | None = None,
    throttle: RecordingThrottle | None = None,
) -> StripeRecords:
    client = build_stripe_client(key or fake.api_key, fake.url, retries)
    return StripeRecords(client, throttle=throttle)


# -- the reader ---------------------------------------------------------------------------


def test_a_charge_named_by_id_is_read_once_for_its_cards_fingerprint(fake: FakeStripe) -> None:
    fake.add_charge("ch_1", amount=4990, fingerprint="fpOne")
    throttle = RecordingThrottle()

    found = records(fake, throttle=throttle).card_fingerprint("ch_1")

    assert found == "fpOne"
    assert (throttle.requests, fake.count("GET /v1/charges/ch_1", status=200)) == (1, 1)
    assert throttle.endpoints == ["GET /v1/charges/{id}"]


def test_a_payment_intent_is_read_with_its_latest_charge_expanded_in_one_request(
    fake: FakeStripe,
) -> None:
    fake.add_payment_intent("pi_1", amount=4990)
    fake.add_charge("ch_1", amount=4990, payment_intent="pi_1", fingerprint="fpIntent")
    throttle = RecordingThrottle()

    found = records(fake, throttle=throttle).card_fingerprint("pi_1")

    assert found == "fpIntent"
    assert throttle.requests == 1
    (request,) = fake.requests
    assert endpoint_matches(throttle.endpoints[0], request.route)
    assert throttle.endpoints == ["GET /v1/payment_intents/{id}"]
    assert (fake.count("GET /v1/payment_intents/pi_1"), fake.count("GET /v1/charges/*")) == (1, 0)


def test_payments_that_carry_no_card_give_no_fingerprint(fake: FakeStripe) -> None:
    fake.add_charge("ch_sepa", amount=4990, method="sepa_debit", fingerprint="fpBank")
    fake.add_payment_intent("pi_unpaid", amount=4990)
    reader = records(fake)

    # A bank debit's fingerprint is its account's, not a card's; an intent not charged
    # yet has no charge; an id Stripe does not know is no payment of this account.
    assert reader.card_fingerprint("ch_sepa") is None
    assert reader.card_fingerprint("pi_unpaid") is None
    assert reader.card_fingerprint("ch_unknown") is None


def test_an_id_that_names_no_charge_or_payment_intent_is_never_sent_to_stripe(
    fake: FakeStripe,
) -> None:
    assert records(fake).card_fingerprint("in_1") is None
    assert fake.count() == 0


def test_a_passing_stripe_failure_is_retried_by_the_library_and_then_reported_as_retryable(
    fake: FakeStripe,
) -> None:
    fake.add_charge("ch_1", amount=4990, fingerprint="fpOne")
    fake.script("GET /v1/charges/ch_1", [500, "ok", 500, 500])

    assert records(fake, retries=1).card_fingerprint("ch_1") == "fpOne"
    with pytest.raises(RetryableIntegrationError, match="ch_1"):
        records(fake, retries=1).card_fingerprint("ch_1")
    assert fake.count("GET /v1/charges/ch_1") == 4


def test_a_refused_key_is_a_permanent_error_that_quotes_no_key(fake: FakeStripe) -> None:
    with pytest.raises(PermanentIntegrationError) as refused:
        records(fake, key="sk_test_wrong_9999").card_fingerprint("ch_1")

    assert "sk_test" not in str(refused.value)


def test_the_cards_other_details_never_reach_the_logs(
    fake: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_payment_intent("pi_1", amount=4990)
    fake.add_charge("ch_1", amount=4990, payment_intent="pi_1", fingerprint="fpOne")
    caplog.set_level(logging.DEBUG)

    reader = records(fake)
    assert reader.card_fingerprint("ch_1") == reader.card_fingerprint("pi_1") == "fpOne"

    # The library logs every response body at DEBUG; a charge's is dropped.
    assert "Request to Stripe api" in caplog.text
    assert not [d for d in CARD_DETAILS if d in caplog.text]


# -- before the rewards -----------------------------------------------------------------------


def test_a_friend_paying_with_the_referrers_card_is_flagged_once_stripe_is_read(
    ledger: SqlLedger,
    program: Program,
    fake: FakeStripe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, NOW)
    fake.add_charge("ch_R", amount=49_900, customer="cus_R", fingerprint=SHARED)
    fake.add_payment_intent("pi_F", amount=49_900, customer="cus_F")
    fake.add_charge(
        "ch_F", amount=49_900, customer="cus_F", payment_intent="pi_F", fingerprint=SHARED
    )
    throttle = RecordingThrottle()
    caplog.set_level(logging.DEBUG)

    counts = learn_card_fingerprints.fn(ledger, records(fake, throttle=throttle), NOW)
    compute_new_rewards.fn(ledger, program, NOW)

    assert counts["learned"] == 2
    # Each event named its charge: one charge read each, every read throttled.
    assert (fake.count("GET /v1/charges/*"), throttle.requests) == (2, 2)
    assert cards_by_payment(ledger) == {"stripe:evt_own": SHARED, "stripe:evt_friend": SHARED}
    assert flags_of(ledger, NOW)["stripe:evt_friend"] == (SAME_CARD,)
    assert not [d for d in (*CARD_DETAILS, SHARED) if d in caplog.text]
