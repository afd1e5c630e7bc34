"""Every request to Stripe first asks the shared rate limits for a slot, naming its endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from domain.clawbacks import ReversalInstruction, ReversalOutcome
from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind
from domain.money import Money
from integrations.payments.stripe_rail import (
    StripeBalanceRail,
    StripeTransferRail,
    build_stripe_client,
)
from integrations.payments.stripe_stand_in import FakeStripe
from tests.fakes.throttle import RecordingThrottle, endpoint_matches

API_KEY = "sk_test_throttle"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY) as server:
        yield server


def _instruction(
    n: int,
    destination: str,
    key_age: timedelta = timedelta(),
    rail: PayoutRailKind = PayoutRailKind.STRIPE_TRANSFER,
) -> PayoutInstruction:
    return PayoutInstruction(
        payout_id=f"payout-{n}",
        reward_id=f"reward-{n}",
        amount=Money(1000 + n, "EUR"),
        rail=rail,
        idempotency_key=f"reward:reward-{n}:transfer",
        destination=destination,
        key_created_at=datetime.now(UTC) - key_age,
    )


def _named_as_sent(throttle: RecordingThrottle, fake: FakeStripe) -> bool:
    """Each slot was taken for the endpoint of the request that followed it."""
    routes = [r.route for r in fake.requests]
    return len(routes) == len(throttle.calls) and all(
        endpoint_matches(endpoint, route)
        for endpoint, route in zip(throttle.endpoints, routes, strict=True)
    )


def test_the_rail_takes_one_slot_per_stripe_request_for_its_endpoint(fake: FakeStripe) -> None:
    throttle = RecordingThrottle()
    with requests.Session() as session:
        client = build_stripe_client(API_KEY, fake.url, 0, session=session)
        rail = StripeTransferRail(client, throttle=throttle)
        account = fake.add_account()
        fresh = [_instruction(n, account) for n in range(3)]
        # A key older than its lifetime means a lookup before the create: two requests.
        old = _instruction(9, account, key_age=timedelta(hours=30))

        results = rail.pay([*fresh, old])

    assert [r.outcome for r in results] == [PayoutOutcome.SUCCEEDED] * 4
    assert throttle.requests == len(fake.requests) == 5
    assert _named_as_sent(throttle, fake)
    assert throttle.endpoints.count("GET /v1/transfers") == 1  # the old key's lookup


def test_credits_and_reversals_name_their_own_endpoints(fake: FakeStripe) -> None:
    throttle = RecordingThrottle()
    account, customer = fake.add_account(), fake.add_customer(currency="eur")
    with requests.Session() as session:
        client = build_stripe_client(API_KEY, fake.url, 0, session=session)
        transfers = StripeTransferRail(client, throttle=throttle)
        credits = StripeBalanceRail(client, throttle=throttle)
        (paid,) = transfers.pay([_instruction(1, account)])
        (credited,) = credits.pay([_instruction(2, customer, rail=PayoutRailKind.STRIPE_BALANCE)])
        assert paid.provider_ref is not None
        (reversed_,) = transfers.reverse(
            [
                ReversalInstruction(
                    reversal_id="reversal-1",
                    reward_id="reward-1",
                    payout_id="payout-1",
                    amount=Money(500, "EUR"),
                    rail=PayoutRailKind.STRIPE_TRANSFER,
                    idempotency_key="reward:reward-1:reversal:evt_1",
                    destination=account,
                    payout_ref=paid.provider_ref,
                    # Past the key's lifetime: the reversal is looked for before it is made.
                    key_created_at=datetime.now(UTC) - timedelta(hours=30),
                )
            ]
        )

    assert (credited.outcome, reversed_.outcome) == (
        PayoutOutcome.SUCCEEDED,
        ReversalOutcome.SUCCEEDED,
    )
    assert throttle.endpoints == [
        "POST /v1/transfers",
        "POST /v1/customers/{id}/balance_transactions",
        "GET /v1/transfers/{id}/reversals",
        "POST /v1/transfers/{id}/reversals",
    ]
    assert _named_as_sent(throttle, fake)


def test_a_refused_instruction_costs_no_slot(fake: FakeStripe) -> None:
    throttle = RecordingThrottle()
    with requests.Session() as session:
        client = build_stripe_client(API_KEY, fake.url, 0, session=session)
        rail = StripeTransferRail(client, throttle=throttle)
        (result,) = rail.pay([_instruction(1, "not-an-account")])
    assert result.outcome is PayoutOutcome.FAILED
    assert throttle.calls == []
    assert fake.requests == []
