"""A retry storm: many workers paying the same rewards while Stripe misbehaves.

Two dozen threads, each with its own engine, ledger, Stripe client and HTTP session,
call ``submit_payouts`` on the same ten rewards at once, against the fake Stripe
answering a scripted mix of 500s, 409s, 429s, lock timeouts, slow requests the client
gives up on, dropped connections and answers lost after the transfer was made. Whatever
the interleaving, each reward must end paid exactly once: one transfer, one succeeded
payout, one ``paid`` entry, every request under the reward's one idempotency key.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from domain.models import RewardStatus
from domain.money import Money
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_rail import StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe, Fault
from tasks.payouts import PayoutReport, submit_payouts
from tests.conftest import NOW, contact
from tests.integration.test_payout_crashes import (
    assert_paid_exactly_once,
    seed_payable_reward,
    transfer_key,
)

API_KEY = "sk_test_storm_5151"
WORKERS = 24
REWARDS = 10
FAULTS: list[Fault] = [
    500,
    409,
    429,
    "timeout",
    "lock_timeout",
    "drop",
    "commit_then_500",
    "commit_then_drop",
]
MAX_CALM_RUNS = 5


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY, slow_seconds=0.3, start=NOW) as server:
        yield server


@pytest.fixture
def rewards(ledger: SqlLedger, fake: FakeStripe, now: datetime) -> dict[str, Money]:
    """Ten payable rewards of different amounts, each for a referrer with an account."""
    seeded: dict[str, Money] = {}
    for i in range(REWARDS):
        amount = Money(1000 + 100 * i, "EUR")
        referrer = contact(f"C{i}", f"A{i}", stripe_account_id=fake.add_account())
        seeded[seed_payable_reward(ledger, referrer, now, key=f"deal-{i}", amount=amount)] = amount
    return seeded


def pay_in_own_session(
    ledger_url: str, fake: FakeStripe, reward_ids: list[str], start: threading.Barrier | None
) -> PayoutReport:
    """One worker: its own engine, ledger, Stripe client and session, like a process."""
    engine = make_engine(ledger_url)
    try:
        with StripeTransferRail.connect(
            API_KEY,
            api_base=fake.url,
            max_network_retries=2,
            timeout=0.2,  # shorter than the fake's slow requests: some calls give up
            clock=fake.now,
        ) as rail:
            if start is not None:
                start.wait(timeout=10)
            return submit_payouts.fn(SqlLedger(engine), {rail.kind: rail}, reward_ids, NOW)
    finally:
        engine.dispose()


def wait_until_idle(fake: FakeStripe) -> None:
    """Let slow requests that clients gave up on finish executing at the fake."""
    deadline = time.monotonic() + 5
    while fake.in_flight_keys() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_retry_storm_of_concurrent_workers_pays_every_reward_exactly_once(
    ledger: SqlLedger, ledger_url: str, fake: FakeStripe, rewards: dict[str, Money]
) -> None:
    reward_ids = sorted(rewards)
    fake.script("POST /v1/transfers", FAULTS * 4)
    start = threading.Barrier(WORKERS)
    orders = [random.sample(reward_ids, len(reward_ids)) for _ in range(WORKERS)]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [
            pool.submit(pay_in_own_session, ledger_url, fake, order, start) for order in orders
        ]
        storm = [f.result(timeout=60) for f in futures]

    # Calm runs after the storm settle what came back RETRYABLE, with the same keys.
    calm: list[PayoutReport] = []
    while ledger.payouts.pending() and len(calm) < MAX_CALM_RUNS:
        wait_until_idle(fake)
        calm.append(pay_in_own_session(ledger_url, fake, reward_ids, None))

    reports = storm + calm
    assert ledger.payouts.pending() == [], f"still pending after {len(calm)} calm runs"
    assert sum(r.paid for r in reports) == REWARDS  # each payout settled paid by one run
    assert sum(r.failed for r in reports) == 0  # transient faults never fail a payout
    assert all(r.no_rail == [] for r in reports)
    for reward_id, amount in rewards.items():
        assert_paid_exactly_once(ledger, fake, reward_id, amount)
    assert len(fake.transfers) == REWARDS
    assert sum(t["amount"] for t in fake.transfers) == sum(a.amount_minor for a in rewards.values())
    posted_keys = {r.idempotency_key for r in fake.requests if r.method == "POST"}
    assert posted_keys == {transfer_key(r) for r in reward_ids}
    # The storm really was one: every scripted fault struck some request.
    assert {r.fault for r in fake.requests} >= set(FAULTS)
    assert fake.count("POST /v1/transfers") > WORKERS


def test_workers_racing_one_slow_transfer_make_one_transfer_and_book_it_once(
    ledger: SqlLedger, ledger_url: str, fake: FakeStripe, now: datetime
) -> None:
    referrer = contact("C1", stripe_account_id=fake.add_account())
    reward_id = seed_payable_reward(ledger, referrer, now)
    # The first create is slow and holds the key: the others meet it in flight (409).
    # Held well past the clients' 0.2 s timeout and their retries: with the fixture's
    # 0.3 s a retry on a loaded machine could arrive after it was done (seen once).
    fake.slow_seconds = 1.5
    fake.script("POST /v1/transfers", ["timeout"])
    start = threading.Barrier(8)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(pay_in_own_session, ledger_url, fake, [reward_id], start) for _ in range(8)
        ]
        storm = [f.result(timeout=60) for f in futures]
    wait_until_idle(fake)
    calm = pay_in_own_session(ledger_url, fake, [reward_id], None)

    assert sum(r.paid for r in [*storm, calm]) == 1
    assert sum(r.failed for r in [*storm, calm]) == 0
    assert_paid_exactly_once(ledger, fake, reward_id)
    assert {r.idempotency_key for r in fake.requests if r.method == "POST"} == {
        transfer_key(reward_id)
    }
    assert fake.count("POST /v1/transfers", status=409) > 0  # the race did happen
    assert ledger.rewards.of([reward_id])[reward_id].status is RewardStatus.PAID
