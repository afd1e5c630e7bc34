"""The Stripe rails, on the real ``stripe`` library, against the fake Stripe over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import requests

from domain.errors import InputRejected
from domain.models import (
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    derived_id,
)
from domain.money import Money
from domain.ports import PaymentRail
from integrations.payments.stripe_rail import (
    StripeBalanceRail,
    StripeTransferRail,
    build_stripe_client,
)
from integrations.payments.stripe_stand_in import FakeStripe
from integrations.payments.stripe_webhook import verify_stripe_event

API_KEY = "sk_test_rail_secret_4242"
WEBHOOK_SECRET = "whsec_test_signing_secret"
RailFactory = Callable[..., StripeTransferRail | StripeBalanceRail]


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY, slow_seconds=0.4) as server:
        yield server


@pytest.fixture
def make_rail(fake: FakeStripe) -> Iterator[RailFactory]:
    rails: list[StripeTransferRail | StripeBalanceRail] = []

    def make(
        cls: type[StripeTransferRail | StripeBalanceRail] = StripeTransferRail,
        *,
        retries: int = 0,
        timeout: float = 5.0,
        api_key: str = API_KEY,
    ) -> StripeTransferRail | StripeBalanceRail:
        rail = cls.connect(
            api_key,
            api_base=fake.url,
            max_network_retries=retries,
            timeout=timeout,
            clock=fake.now,  # the rail and Stripe agree on how old a key is
        )
        rails.append(rail)
        return rail

    yield make
    for rail in rails:
        rail.close()


@pytest.fixture
def account(fake: FakeStripe) -> str:
    return fake.add_account("acct_referrer")


@pytest.fixture
def customer(fake: FakeStripe) -> str:
    return fake.add_customer("cus_referrer")


def instruction(
    destination: str | None,
    *,
    reward_id: str = "reward-1",
    attempt: int = 1,
    rail: PayoutRailKind = PayoutRailKind.STRIPE_TRANSFER,
    amount: Money | None = None,
    key_created_at: datetime | None = None,
) -> PayoutInstruction:
    return PayoutInstruction(
        payout_id=derived_id("payout", reward_id, str(attempt)),
        reward_id=reward_id,
        amount=amount or Money(2500, "EUR"),
        rail=rail,
        idempotency_key=PayoutInstruction.key_for(reward_id, rail, attempt),
        destination=destination,
        key_created_at=key_created_at,
        attempt=attempt,
    )


def pay_one(rail: PaymentRail, payout: PayoutInstruction) -> PayoutResult:
    (result,) = rail.pay([payout])
    assert result.payout_id == payout.payout_id
    return result


def wait_until_idle(fake: FakeStripe) -> None:
    """Let a request the client gave up on finish executing at the fake."""
    deadline = time.monotonic() + 5
    while fake.in_flight_keys() and time.monotonic() < deadline:
        time.sleep(0.01)


# -- transfers ---------------------------------------------------------------------------


def test_both_stripe_rails_satisfy_the_payment_rail_port(make_rail: RailFactory) -> None:
    transfer_rail = make_rail(StripeTransferRail)
    balance_rail = make_rail(StripeBalanceRail)

    assert isinstance(transfer_rail, PaymentRail)
    assert isinstance(balance_rail, PaymentRail)
    assert transfer_rail.kind is PayoutRailKind.STRIPE_TRANSFER
    assert balance_rail.kind is PayoutRailKind.STRIPE_BALANCE


def test_a_transfer_is_created_with_the_payout_key_group_and_only_ids_as_metadata(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    payout = instruction(account)

    result = pay_one(make_rail(), payout)

    (transfer,) = fake.transfers
    assert result == PayoutResult(
        payout.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=transfer["id"]
    )
    assert transfer["amount"] == 2500
    assert transfer["currency"] == "eur"
    assert transfer["destination"] == account
    assert transfer["transfer_group"] == "reward_reward-1"
    assert transfer["metadata"] == {"reward_id": "reward-1", "payout_id": payout.payout_id}
    assert [r.idempotency_key for r in fake.requests] == ["reward:reward-1:transfer"]


def test_paying_the_same_instruction_twice_creates_one_transfer(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    rail = make_rail()
    payout = instruction(account)

    first = pay_one(rail, payout)
    second = pay_one(rail, payout)

    assert first == second
    assert first.outcome is PayoutOutcome.SUCCEEDED
    assert len(fake.transfers) == 1
    assert [r.replayed for r in fake.requests] == [False, True]


def test_a_batch_gets_one_result_per_instruction_in_order(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    batch = [
        instruction(account, reward_id="r-a"),
        instruction("acct_unknown", reward_id="r-b"),
        instruction(account, reward_id="r-c", amount=Money(1000, "JPY")),
    ]

    results = make_rail().pay(batch)

    assert [r.payout_id for r in results] == [p.payout_id for p in batch]
    assert [r.outcome for r in results] == [
        PayoutOutcome.SUCCEEDED,
        PayoutOutcome.FAILED,
        PayoutOutcome.SUCCEEDED,
    ]
    assert [(t["amount"], t["currency"]) for t in fake.transfers] == [(2500, "eur"), (1000, "jpy")]


def test_the_library_retries_500_and_409_with_the_same_key_into_one_transfer(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", [500, 409, "ok"])

    result = pay_one(make_rail(retries=3), instruction(account))

    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert [r.status for r in fake.requests] == [500, 409, 200]
    assert {r.idempotency_key for r in fake.requests} == {"reward:reward-1:transfer"}
    assert [t["id"] for t in fake.transfers] == [result.provider_ref]


def test_a_500_timeout_429_409_sequence_ends_in_exactly_one_transfer(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", [500, "timeout", 429, 409, "ok"])
    rail = make_rail(retries=2, timeout=0.2)
    payout = instruction(account)

    results = [pay_one(rail, payout)]
    while results[-1].outcome is PayoutOutcome.RETRYABLE and len(results) < 10:
        wait_until_idle(fake)  # the next scheduled run comes later than the timeout
        results.append(pay_one(rail, payout))

    assert results[-1].outcome is PayoutOutcome.SUCCEEDED
    assert all(r.outcome is PayoutOutcome.RETRYABLE for r in results[:-1])
    assert len(results) > 1  # the 429 is not retried by the library: a run ends RETRYABLE
    assert [t["id"] for t in fake.transfers] == [results[-1].provider_ref]
    assert {r.idempotency_key for r in fake.requests} == {payout.idempotency_key}


def test_a_rate_limit_429_is_not_retried_by_the_library_and_comes_back_retryable(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", [429])
    rail = make_rail(retries=3)
    payout = instruction(account)

    limited = pay_one(rail, payout)
    later = pay_one(rail, payout)

    assert limited.outcome is PayoutOutcome.RETRYABLE
    assert limited.error is not None
    assert "rate limited" in limited.error
    assert [r.status for r in fake.requests] == [429, 200]
    assert later.outcome is PayoutOutcome.SUCCEEDED
    assert len(fake.transfers) == 1


def test_a_lock_timeout_429_is_retried_by_the_library_as_stripe_asks(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", ["lock_timeout", "ok"])

    result = pay_one(make_rail(retries=2), instruction(account))

    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert [r.status for r in fake.requests] == [429, 200]


def test_a_timeout_is_retryable_and_the_next_run_gets_the_transfer_stripe_made(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", ["timeout"])
    rail = make_rail(retries=0, timeout=0.1)
    payout = instruction(account)

    timed_out = pay_one(rail, payout)
    wait_until_idle(fake)
    next_run = pay_one(rail, payout)

    assert timed_out.outcome is PayoutOutcome.RETRYABLE
    assert timed_out.error == "network error talking to Stripe; outcome unknown"
    assert next_run.outcome is PayoutOutcome.SUCCEEDED
    assert [t["id"] for t in fake.transfers] == [next_run.provider_ref]


def test_commit_then_500_followed_by_a_second_pay_yields_the_same_transfer(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", ["commit_then_500"])
    rail = make_rail(retries=0)
    payout = instruction(account)

    crashed = pay_one(rail, payout)
    created_meanwhile = [t["id"] for t in fake.transfers]
    again = pay_one(rail, payout)

    assert crashed.outcome is PayoutOutcome.RETRYABLE
    assert len(created_meanwhile) == 1
    assert again.outcome is PayoutOutcome.SUCCEEDED
    assert again.provider_ref == created_meanwhile[0]
    assert [t["id"] for t in fake.transfers] == created_meanwhile


def test_commit_then_dropped_connection_is_resolved_by_the_library_retry(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", ["commit_then_drop"])

    result = pay_one(make_rail(retries=2), instruction(account))

    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert [(r.status, r.replayed) for r in fake.requests] == [(0, False), (200, True)]
    assert [t["id"] for t in fake.transfers] == [result.provider_ref]


def test_a_500_saved_under_the_key_stays_retryable_until_the_key_expires(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    fake.script("POST /v1/transfers", ["500_saved"])
    rail = make_rail(retries=3)
    payout = instruction(account, key_created_at=fake.now())

    first = pay_one(rail, payout)
    replayed = pay_one(rail, payout)
    fake.advance(hours=25)
    after_expiry = pay_one(rail, payout)

    assert first.outcome is replayed.outcome is PayoutOutcome.RETRYABLE
    # Stripe-Should-Retry: false stops the library from retrying a saved failure.
    assert fake.count("POST /v1/transfers") == 3
    assert after_expiry.outcome is PayoutOutcome.SUCCEEDED
    assert [t["id"] for t in fake.transfers] == [after_expiry.provider_ref]


def test_an_expired_key_older_than_23_hours_finds_the_existing_transfer_instead_of_paying_again(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    rail = make_rail()
    payout = instruction(account, key_created_at=fake.now())
    paid = pay_one(rail, payout)
    fake.advance(hours=25)  # Stripe has forgotten the key

    found = pay_one(rail, payout)

    assert found == paid
    assert len(fake.transfers) == 1
    assert fake.count("GET /v1/transfers") == 1
    assert fake.count("POST /v1/transfers") == 1


def test_a_key_younger_than_23_hours_is_trusted_without_a_lookup(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    payout = instruction(account, key_created_at=fake.now() - timedelta(hours=22))

    result = pay_one(make_rail(), payout)

    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert fake.count("GET /v1/transfers") == 0


def test_the_lookup_matches_the_payout_not_just_the_reward(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    rail = make_rail()
    pay_one(rail, instruction(account, attempt=1))
    old_second_attempt = instruction(
        account, attempt=2, key_created_at=fake.now() - timedelta(hours=30)
    )

    result = pay_one(rail, old_second_attempt)

    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert [t["metadata"]["payout_id"] for t in fake.transfers] == [
        instruction(account, attempt=1).payout_id,
        old_second_attempt.payout_id,
    ]


def test_a_key_reused_with_other_parameters_reports_the_transfer_it_already_made(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    rail = make_rail()
    paid = pay_one(rail, instruction(account, amount=Money(2500, "EUR")))

    changed = pay_one(rail, instruction(account, amount=Money(3000, "EUR")))

    assert changed == paid
    assert len(fake.transfers) == 1


def test_a_key_reused_with_other_parameters_and_nothing_paid_fails(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    rail = make_rail()
    pay_one(rail, instruction("acct_gone"))  # refused, and the refusal is saved

    result = pay_one(rail, instruction(account))

    assert result.outcome is PayoutOutcome.FAILED
    assert result.error is not None
    assert result.error.startswith("idempotency error")
    assert fake.transfers == []


def test_an_unknown_connected_account_fails_with_stripes_reason(
    fake: FakeStripe, make_rail: RailFactory
) -> None:
    result = pay_one(make_rail(retries=3), instruction("acct_nobody"))

    assert result.outcome is PayoutOutcome.FAILED
    assert result.error is not None
    assert "resource_missing" in result.error
    assert "No such destination" in result.error
    assert fake.count() == 1  # a refusal is final: the library does not retry it


@pytest.mark.parametrize(
    ("destination", "reason"),
    [(None, "no connected account"), ("cus_123", "not a connected account id")],
)
def test_a_missing_or_wrong_kind_of_destination_fails_without_calling_stripe(
    fake: FakeStripe, make_rail: RailFactory, destination: str | None, reason: str
) -> None:
    result = pay_one(make_rail(), instruction(destination))

    assert result.outcome is PayoutOutcome.FAILED
    assert result.error is not None
    assert reason in result.error
    assert fake.count() == 0


def test_an_instruction_for_another_rail_fails_without_calling_stripe(
    fake: FakeStripe, make_rail: RailFactory, customer: str
) -> None:
    result = pay_one(make_rail(), instruction(customer, rail=PayoutRailKind.STRIPE_BALANCE))

    assert result.outcome is PayoutOutcome.FAILED
    assert fake.count() == 0


def test_a_bad_api_key_fails_without_the_key_in_the_error_text(
    fake: FakeStripe, make_rail: RailFactory, account: str
) -> None:
    wrong_key = "sk_test_wrong_secret_value_9876"

    result = pay_one(make_rail(api_key=wrong_key, retries=3), instruction(account))

    assert result.outcome is PayoutOutcome.FAILED
    assert result.error is not None
    assert "authentication" in result.error
    assert wrong_key not in result.error
    assert "9876" not in result.error
    assert "sk_" not in result.error
    assert fake.transfers == []


def test_insufficient_platform_balance_fails_for_good() -> None:
    with FakeStripe(api_key=API_KEY, available_balance={"eur": 1000}) as fake:
        account = fake.add_account()
        with StripeTransferRail.connect(API_KEY, api_base=fake.url, max_network_retries=0) as rail:
            result = pay_one(rail, instruction(account))

    assert result.outcome is PayoutOutcome.FAILED
    assert result.error is not None
    assert "balance_insufficient" in result.error


def test_calls_above_the_rate_limit_come_back_retryable_and_never_double_pay() -> None:
    with FakeStripe(api_key=API_KEY, rate_limit_per_second=3) as fake:
        account = fake.add_account()
        batch = [instruction(account, reward_id=f"r-{i}") for i in range(6)]
        with StripeTransferRail.connect(API_KEY, api_base=fake.url, max_network_retries=2) as rail:
            first = rail.pay(batch)
            time.sleep(1.05)  # a later run, after the window
            retry = [
                p
                for p, r in zip(batch, first, strict=True)
                if r.outcome is not PayoutOutcome.SUCCEEDED
            ]
            second = rail.pay(retry)
        transfers = fake.transfers

    assert {r.outcome for r in first} == {PayoutOutcome.SUCCEEDED, PayoutOutcome.RETRYABLE}
    assert all(r.outcome is PayoutOutcome.SUCCEEDED for r in second)
    assert sorted(t["metadata"]["reward_id"] for t in transfers) == [f"r-{i}" for i in range(6)]


def test_build_stripe_client_points_the_library_at_the_given_base(
    fake: FakeStripe, account: str
) -> None:
    with requests.Session() as session:
        client = build_stripe_client(API_KEY, fake.url, 0, timeout=5, session=session)
        created = client.v1.transfers.create(
            {"amount": 100, "currency": "eur", "destination": account}
        )

    assert [t["id"] for t in fake.transfers] == [created.id]


# -- customer balance --------------------------------------------------------------------


def test_the_balance_rail_credits_the_customer_with_a_negative_amount(
    fake: FakeStripe, make_rail: RailFactory, customer: str
) -> None:
    rail = make_rail(StripeBalanceRail)
    payout = instruction(customer, rail=PayoutRailKind.STRIPE_BALANCE)

    first = pay_one(rail, payout)
    again = pay_one(rail, payout)

    (credit,) = fake.balance_transactions
    assert (
        first
        == again
        == PayoutResult(payout.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=credit["id"])
    )
    assert credit["amount"] == -2500
    assert credit["currency"] == "eur"
    assert credit["metadata"] == {"reward_id": "reward-1", "payout_id": payout.payout_id}
    assert fake.customer_balance(customer) == -2500
    assert fake.requests[0].idempotency_key == "reward:reward-1:credit"


def test_the_balance_rail_finds_an_existing_credit_after_the_key_expired(
    fake: FakeStripe, make_rail: RailFactory, customer: str
) -> None:
    rail = make_rail(StripeBalanceRail)
    payout = instruction(customer, rail=PayoutRailKind.STRIPE_BALANCE, key_created_at=fake.now())
    paid = pay_one(rail, payout)
    fake.advance(hours=25)

    found = pay_one(rail, payout)

    assert found == paid
    assert len(fake.balance_transactions) == 1
    assert fake.customer_balance(customer) == -2500


def test_the_balance_rail_fails_for_an_unknown_customer(
    fake: FakeStripe, make_rail: RailFactory
) -> None:
    result = pay_one(
        make_rail(StripeBalanceRail),
        instruction("cus_nobody", rail=PayoutRailKind.STRIPE_BALANCE),
    )

    assert result.outcome is PayoutOutcome.FAILED
    assert result.error is not None
    assert "No such customer" in result.error


def test_the_balance_rail_fails_for_a_credit_in_another_currency_than_the_balance(
    fake: FakeStripe, make_rail: RailFactory
) -> None:
    dollar_customer = fake.add_customer(currency="usd")

    result = pay_one(
        make_rail(StripeBalanceRail),
        instruction(dollar_customer, rail=PayoutRailKind.STRIPE_BALANCE),
    )

    assert result.outcome is PayoutOutcome.FAILED
    assert fake.balance_transactions == []


# -- webhooks ----------------------------------------------------------------------------


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Sign like Stripe: HMAC-SHA256 over ``"<t>.<body>"`` with the endpoint secret."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@pytest.fixture
def delivery(fake: FakeStripe) -> bytes:
    event = fake.add_event("transfer.reversed", {"id": "tr_123", "object": "transfer"})
    return json.dumps(event).encode()


def test_a_correctly_signed_webhook_is_accepted_and_returns_the_event(delivery: bytes) -> None:
    now = int(time.time())

    event = verify_stripe_event(
        delivery, stripe_signature(delivery, WEBHOOK_SECRET, now), WEBHOOK_SECRET
    )

    assert event["type"] == "transfer.reversed"
    assert event["data"]["object"]["id"] == "tr_123"
    assert event == json.loads(delivery)


def test_a_webhook_signed_during_a_secret_roll_is_accepted_by_either_signature(
    delivery: bytes,
) -> None:
    now = int(time.time())
    old = stripe_signature(delivery, "whsec_old", now)
    new = stripe_signature(delivery, WEBHOOK_SECRET, now).split(",")[1]

    event = verify_stripe_event(delivery, f"{old},{new}", WEBHOOK_SECRET)

    assert event["type"] == "transfer.reversed"


@pytest.mark.parametrize(
    ("make_header", "reason"),
    [
        (lambda p, t: stripe_signature(p, "whsec_other", t), "signature does not match"),
        (lambda p, t: stripe_signature(p + b" ", WEBHOOK_SECRET, t), "signature does not match"),
        (lambda p, t: stripe_signature(p, WEBHOOK_SECRET, t - 301), "outside the 300 s"),
        (lambda p, t: stripe_signature(p, WEBHOOK_SECRET, t + 3600), "in the future"),
        (lambda p, t: "v1=abc", "no integer t= timestamp"),
        (lambda p, t: f"t={t}", "no v1= signature"),
        (lambda p, t: "", "missing Stripe-Signature"),
    ],
    ids=["wrong-secret", "altered-body", "stale", "future", "no-timestamp", "no-v1", "empty"],
)
def test_a_webhook_with_a_bad_signature_or_timestamp_is_rejected_with_a_reason(
    delivery: bytes, make_header: Callable[[bytes, int], str], reason: str
) -> None:
    now = int(time.time())

    with pytest.raises(InputRejected) as rejected:
        verify_stripe_event(delivery, make_header(delivery, now), WEBHOOK_SECRET, now=now)

    assert reason in rejected.value.reason
    assert WEBHOOK_SECRET not in str(rejected.value)


def test_a_stale_webhook_is_accepted_when_within_a_wider_tolerance(delivery: bytes) -> None:
    now = int(time.time())
    header = stripe_signature(delivery, WEBHOOK_SECRET, now - 600)

    event = verify_stripe_event(delivery, header, WEBHOOK_SECRET, tolerance=900, now=now)

    assert event["type"] == "transfer.reversed"


def test_a_signed_body_that_is_not_an_event_is_rejected() -> None:
    payload = b'["not", "an", "event"]'
    now = int(time.time())

    with pytest.raises(InputRejected, match="not a Stripe event"):
        verify_stripe_event(payload, stripe_signature(payload, WEBHOOK_SECRET, now), WEBHOOK_SECRET)
