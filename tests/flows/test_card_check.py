"""The conversion stage reads the cards Stripe events named by id only before it computes
rewards, so a friend paying with the referrer's card is flagged (and a flagged reward
always waits for a person: test_fraud_routing)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from domain.fraud import SAME_CARD
from flows.bootstrap import App, use_app
from flows.cycle import check_conversions
from integrations.payments.fake_cards import RecordingCards
from tests.tasks.test_learn_card_fingerprints import (
    SHARED,
    flags_of,
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with,
)


def test_check_conversions_learns_the_cards_before_the_rewards_are_flagged(
    test_app: App,
) -> None:
    ledger, now = test_app.ledger, datetime.now(UTC)
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, test_app.program, now)
    cards = RecordingCards({"ch_R": SHARED, "ch_F": SHARED})

    with use_app(replace(test_app, cards=cards)):
        result = check_conversions()

    assert result["stripe"]["cards"]["learned"] == 2
    assert flags_of(ledger, now)["stripe:evt_friend"] == (SAME_CARD,)
