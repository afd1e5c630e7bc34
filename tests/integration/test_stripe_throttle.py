"""Every request to Stripe first asks the shared rate limit for a slot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind
from domain.money import Money
from integrations.payments.stripe_rail import StripeTransferRail, build_stripe_client
from tests.fakes.stripe_server import FakeStripe

API_KEY = "sk_test_throttle"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY) as server:
        yield server


def _instruction(n: int, destination: str, key_age: timedelta = timedelta()) -> PayoutInstruction:
    return PayoutInstruction(
        payout_id=f"payout-{n}",
        reward_id=f"reward-{n}",
        amount=Money(1000 + n, "EUR"),
        rail=PayoutRailKind.STRIPE_TRANSFER,
        idempotency_key=f"reward:reward-{n}:transfer",
        destination=destination,
        key_created_at=datetime.now(UTC) - key_age,
    )


def test_the_rail_takes_one_slot_per_stripe_request(fake: FakeStripe) -> None:
    slots: list[int] = []
    with requests.Session() as session:
        client = build_stripe_client(API_KEY, fake.url, 0, session=session)
        rail = StripeTransferRail(client, throttle=slots.append)
        account = fake.add_account()
        fresh = [_instruction(n, account) for n in range(3)]
        # A key older than its lifetime means a lookup before the create: two requests.
        old = _instruction(9, account, key_age=timedelta(hours=30))

        results = rail.pay([*fresh, old])

    assert [r.outcome for r in results] == [PayoutOutcome.SUCCEEDED] * 4
    assert sum(slots) == len(fake.requests) == 5


def test_a_refused_instruction_costs_no_slot(fake: FakeStripe) -> None:
    slots: list[int] = []
    with requests.Session() as session:
        client = build_stripe_client(API_KEY, fake.url, 0, session=session)
        rail = StripeTransferRail(client, throttle=slots.append)
        (result,) = rail.pay([_instruction(1, "not-an-account")])
    assert result.outcome is PayoutOutcome.FAILED
    assert slots == []
    assert fake.requests == []
