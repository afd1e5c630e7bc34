"""The apply-clawbacks and reconcile-payouts flows, on Prefect's test harness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from domain.clawbacks import PaymentRecords, PayoutsOutOfBalance
from domain.models import PayoutRailKind
from domain.money import Money
from flows import reconcile
from flows.bootstrap import App
from integrations.payments.fake import RecordingRail
from integrations.payments.stripe_rail import build_stripe_client
from integrations.payments.stripe_reconcile import StripeRecords
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.payouts import submit_payouts
from tasks.reconcile import ARTIFACT_KEY
from tests.conftest import contact
from tests.integration.clawback_helpers import entries, link_payment, refund_event
from tests.integration.test_payout_crashes import seed_payable_reward
from tests.prefect_artifacts import latest_artifact_text

API_KEY = "sk_test_reconcile_flow_8484"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def records(fake: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> Iterator[StripeRecords]:
    """Point the reconciliation at the fake Stripe, as an App with a Stripe key would."""
    with StripeRecords.connect(API_KEY, api_base=fake.url, max_network_retries=0) as reader:

        def replacement(app: App) -> PaymentRecords:
            return reader

        monkeypatch.setattr(reconcile, "payment_records", replacement)
        yield reader


def latest_mismatches() -> str:
    return latest_artifact_text(ARTIFACT_KEY)


def test_the_reconciliation_publishes_every_mismatch_and_fails_the_run(
    test_app: App, fake: FakeStripe, records: StripeRecords
) -> None:
    now = datetime.now(UTC)
    person = contact("C1", "A1", stripe_account_id=fake.add_account())
    reward_id = seed_payable_reward(test_app.ledger, person, now)
    with requests.Session() as session:
        build_stripe_client(API_KEY, fake.url, 0, session=session).v1.transfers.create(
            {  # paid at Stripe behind the ledger's back
                "amount": 2500,
                "currency": "eur",
                "destination": person.stripe_account_id or "",
                "metadata": {"reward_id": reward_id},
            }
        )

    state = reconcile.reconcile_payouts(return_state=True)

    assert state.is_failed()
    with pytest.raises(PayoutsOutOfBalance, match="missing_in_ledger 1"):
        state.result()
    published = latest_mismatches()
    assert reward_id in published
    assert "missing_in_ledger" in published
    assert "@" not in published


def test_a_clean_reconciliation_publishes_an_empty_table_and_completes(
    test_app: App, fake: FakeStripe, records: StripeRecords
) -> None:
    state = reconcile.reconcile_payouts(return_state=True)

    assert state.is_completed()
    assert state.result() == {"mismatches": 0}
    assert latest_mismatches() == "[]"


def test_apply_clawbacks_takes_a_refunded_reward_back_through_the_apps_rail(
    test_app: App,
) -> None:
    now = datetime.now(UTC)
    rail = test_app.rails[PayoutRailKind.LEDGER_ONLY]
    assert isinstance(rail, RecordingRail)
    reward_id = seed_payable_reward(
        test_app.ledger, contact("C1", "A1"), now, amount=Money(2500, "EUR")
    )
    submit_payouts.fn(test_app.ledger, test_app.rails, [reward_id], now)
    link_payment(test_app.ledger, reward_id, "ch_flow", now)
    event = refund_event("evt_flow", "ch_flow", now - timedelta(minutes=1), refunded=120_000)
    for _ in range(3):  # Stripe retried its delivery
        test_app.ledger.provider_events.store_stripe_event(event, now)

    first = reconcile.apply_clawbacks()
    second = reconcile.apply_clawbacks()

    assert (first["applied"], first["clawed_back"], first["reversals"]) == (
        1,
        [reward_id],
        {"succeeded": 1},
    )
    assert second["events"] == 0
    assert [i.amount for i in rail.reversed] == [Money(2500, "EUR")]
    assert entries(test_app.ledger, reward_id)[-2:] == [("clawed_back", -2500), ("reversed", 2500)]
