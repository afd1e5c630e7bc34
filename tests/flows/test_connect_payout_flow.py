"""A reward held because its referrer had nowhere to be paid is paid once, through the
usual path, after the referrer finishes Stripe onboarding: the route-rewards flow reads
the account back, the new destination waits for a person once (as any destination
change), and the approved reward is transferred once however often the flows run."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import PayoutRailKind, RewardStatus
from flows import approval, bootstrap
from flows.approval import payout_approval
from flows.bootstrap import App, use_app
from flows.cycle import route_rewards
from integrations.payments.stripe_connect import StripeConnect
from integrations.payments.stripe_rail import StripeTransferRail, build_stripe_client
from tests.fakes.stripe_server import FakeStripe
from tests.flows.test_payout_approval import (  # noqa: F401 (approvers: a fixture)
    ScriptedApprover,
    Suspended,
    approvers,
    decide,
)
from tests.integration.test_ledger_flow import given_reward


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
def stripe_app(test_app: App, fake: FakeStripe) -> Iterator[App]:
    client = build_stripe_client(fake.api_key, fake.url, 0, timeout=5)
    with use_app(
        dataclasses.replace(
            test_app,
            rails={PayoutRailKind.STRIPE_TRANSFER: StripeTransferRail(client)},
            connect=StripeConnect(client),
        )
    ) as app:
        yield app


@pytest.fixture
def approver(monkeypatch: pytest.MonkeyPatch) -> ScriptedApprover:
    scripted = ScriptedApprover()
    monkeypatch.setattr(approval, "wait_for_decision", scripted)
    return scripted


@pytest.mark.usefixtures("approvers")
def test_a_reward_held_for_lack_of_a_rail_is_paid_once_after_the_referrer_onboards(
    stripe_app: App, fake: FakeStripe, approver: ScriptedApprover
) -> None:
    ledger, now = stripe_app.ledger, datetime.now(UTC)
    reward = given_reward(
        ledger, now - timedelta(days=1), amount_minor=2_000, status=RewardStatus.HOLDING
    )

    held = route_rewards(as_of=now)
    assert held["payouts"]["no_rail"] == [reward.reward_id]
    assert fake.transfers == []

    onboarding = bootstrap.connect_onboarding(stripe_app)
    assert onboarding is not None
    link = onboarding.start("C1", "https://refer.example.com/p/t/connect/return", "https://x/")
    with httpx.Client() as browser:
        browser.get(link.url)
        browser.post(link.url)  # no return visit, no webhook: the flow reads it back

    routed = route_rewards(as_of=now + timedelta(minutes=1))
    assert list(routed["approvals"]) == [reward.reward_id]
    view = ledger.rewards([reward.reward_id])[reward.reward_id]
    assert PAYOUT_DESTINATION_CHANGED in view.reward.flags
    with pytest.raises(Suspended):
        payout_approval(reward.reward_id)
    decide(approver, stripe_app, "maya", reason="onboarded through their magic link")
    assert payout_approval(reward.reward_id) == "paid"
    route_rewards(as_of=now + timedelta(minutes=2))

    (transfer,) = fake.transfers
    assert transfer["destination"] == fake.connect_accounts[0]["id"]
    assert transfer["amount"] == 2_000
    assert ledger.rewards([reward.reward_id])[reward.reward_id].status is RewardStatus.PAID
