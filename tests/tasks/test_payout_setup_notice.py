"""The "earned" email of a referrer the program cannot pay yet carries their payout
setup link (their page's ``/connect``: Stripe onboarding); a referrer already payable,
or a program without the web app, gets the email as before."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from domain.models import PayoutRailKind
from domain.program import Program
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from tasks.emails import send_notifications
from tests.conftest import contact, people_batch
from tests.integration.test_ledger_flow import given_reward

PAGES = "https://refer.example.com/p/"
STRIPE = frozenset({PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE})


def page_link(contact_id: str) -> str:
    return f"{PAGES}token-of-{contact_id}"


def earned_texts(sender: RecordingEmailSender) -> dict[str, str]:
    return {m.to_email: m.data["text"] for m in sender.sent if m.kind == "reward_earned"}


def test_an_earned_email_offers_payout_setup_only_to_a_referrer_with_nowhere_to_be_paid(
    ledger: SqlLedger, program: Program, now: datetime
) -> None:
    given_reward(ledger, now, referrer="C1")
    given_reward(ledger, now, referrer="C2")
    given_reward(ledger, now, referrer="C3")
    ledger.record_batch(
        people_batch(
            contact("C2", "A-C2", stripe_account_id="acct_2"),
            contact("C3", "A-C3", stripe_customer_id="cus_3"),
        ),
        now,
    )
    sender = RecordingEmailSender()

    send_notifications.fn(ledger, sender, program, now, page_link=page_link, payout_rails=STRIPE)

    texts = earned_texts(sender)
    assert f"{PAGES}token-of-C1/connect\n" in texts["c1@a-c1.example"]
    assert "tell us where to pay you" in texts["c1@a-c1.example"]
    assert "/connect" not in texts["c2@a-c2.example"]
    assert "/connect" not in texts["c3@a-c3.example"]


@pytest.mark.parametrize(
    "options",
    [
        {"page_link": page_link},  # no Stripe Connect: nothing to onboard to
        {"page_link": page_link, "payout_rails": {PayoutRailKind.LEDGER_ONLY}},
        {"payout_rails": STRIPE},  # no web app: no page to onboard from
    ],
)
def test_without_stripe_or_without_a_page_the_earned_email_says_nothing_of_payout_setup(
    ledger: SqlLedger, program: Program, now: datetime, options: dict[str, Any]
) -> None:
    given_reward(ledger, now, referrer="C1")
    sender = RecordingEmailSender()

    send_notifications.fn(ledger, sender, program, now, **options)

    (text,) = earned_texts(sender).values()
    assert "where to pay you" not in text
    assert "/connect" not in text
