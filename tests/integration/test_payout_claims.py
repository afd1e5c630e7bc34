"""Payout claims: several workers given the same batch split it, none sends a row twice.

On Postgres the claim picks rows ``FOR UPDATE SKIP LOCKED``; on SQLite writers are
serialized. Either way the claim's update re-checks that nobody holds the row, so the
split is exact: every payout sent by exactly one worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind, PayoutResult
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from tasks.payouts import CLAIM_LEASE, PayoutReport, submit_payouts
from tests.conftest import contact
from tests.integration.test_payout_crashes import payout_rows, seed_payable_reward

REWARDS = 60
LEASE = timedelta(minutes=5)


class SlowRail:
    """One worker's view of a shared provider: it notes what this worker sent."""

    def __init__(self, provider: RecordingRail, seconds_per_payout: float) -> None:
        self.kind: PayoutRailKind = provider.kind
        self.provider = provider
        self.seconds = seconds_per_payout
        self.sent: list[str] = []

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]:
        self.sent += [i.payout_id for i in instructions]
        time.sleep(self.seconds * len(instructions))
        return self.provider.pay(instructions)


def seed(ledger: SqlLedger, now: datetime, n: int) -> list[str]:
    return sorted(
        seed_payable_reward(
            ledger, contact(f"C{i}", f"A{i}", stripe_account_id=f"acct_{i}"), now, key=f"deal-{i}"
        )
        for i in range(n)
    )


def test_two_concurrent_workers_split_one_batch_and_send_every_payout_exactly_once(
    ledger: SqlLedger, ledger_url: str, now: datetime
) -> None:
    reward_ids = seed(ledger, now, REWARDS)
    provider = RecordingRail()
    rails = [SlowRail(provider, 0.01), SlowRail(provider, 0.01)]
    start = threading.Barrier(2)

    def work(rail: SlowRail) -> PayoutReport:
        engine = make_engine(ledger_url)
        try:
            start.wait(timeout=10)
            return submit_payouts.fn(SqlLedger(engine), {rail.kind: rail}, reward_ids, now, chunk=5)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(work, rails))

    first, second = (set(r.sent) for r in rails)
    assert first.isdisjoint(second)
    assert len(first | second) == REWARDS
    assert first, "both workers took part of the batch"
    assert second, "both workers took part of the batch"
    assert len(provider.calls) == REWARDS  # not one payout sent twice, not even replayed
    assert len(provider.paid) == REWARDS
    assert sum(r.paid for r in reports) == REWARDS
    # What one worker sent, the other counted as held by another worker, unless it read
    # the batch only after those were paid (a busy machine): then it saw them paid.
    assert 0 < sum(r.claimed_elsewhere for r in reports) <= REWARDS
    assert ledger.payouts.pending() == []


def test_a_claim_takes_only_free_payouts_and_two_claims_never_share_a_row(
    ledger: SqlLedger, now: datetime
) -> None:
    reward_ids = seed(ledger, now, 10)
    ledger.payouts.prepare([(r, PayoutRailKind.STRIPE_TRANSFER, "acct") for r in reward_ids], now)

    a = ledger.payouts.claim("worker-a", now, LEASE, limit=6)
    b = ledger.payouts.claim("worker-b", now, LEASE, limit=6)
    nobody_left = ledger.payouts.claim("worker-c", now, LEASE)

    assert len(a) == 6
    assert len(b) == 4
    assert {i.payout_id for i in a}.isdisjoint(i.payout_id for i in b)
    assert nobody_left == []
    # A worker asking again keeps what it holds.
    assert {i.payout_id for i in ledger.payouts.claim("worker-a", now, LEASE)} == {
        i.payout_id for i in a
    }


def test_a_lease_that_ran_out_lets_another_worker_take_the_payout_over(
    ledger: SqlLedger, now: datetime
) -> None:
    (reward_id,) = seed(ledger, now, 1)
    ledger.payouts.prepare([(reward_id, PayoutRailKind.STRIPE_TRANSFER, "acct")], now)
    (held,) = ledger.payouts.claim("crashed", now, LEASE)

    assert ledger.payouts.claim("other", now + LEASE - timedelta(seconds=1), LEASE) == []
    (taken,) = ledger.payouts.claim("other", now + LEASE, LEASE)

    assert taken.payout_id == held.payout_id
    assert taken.idempotency_key == held.idempotency_key  # same key: paid once at most
    assert payout_rows(ledger, reward_id)[0]["claimed_by"] == "other"


def test_a_payout_to_retry_is_released_for_the_next_worker(
    ledger: SqlLedger, now: datetime
) -> None:
    (reward_id,) = seed(ledger, now, 1)
    rail = RecordingRail()
    (payout,) = ledger.payouts.prepare([(reward_id, rail.kind, "acct")], now)
    rail.script(payout.payout_id, [PayoutOutcome.RETRYABLE])

    first = submit_payouts.fn(ledger, {rail.kind: rail}, [reward_id], now)
    row = payout_rows(ledger, reward_id)[0]
    second = submit_payouts.fn(ledger, {rail.kind: rail}, [reward_id], now)

    assert (first.paid, first.retry_later) == (0, 1)
    assert (row["status"], row["claimed_by"], row["claimed_until"]) == ("pending", None, None)
    assert (second.paid, second.claimed_elsewhere) == (1, 0)
    assert [i.payout_id for i in rail.paid] == [payout.payout_id]


def test_a_payout_written_and_never_claimed_is_swept_up_once_it_is_older_than_a_lease(
    ledger: SqlLedger, now: datetime
) -> None:
    (reward_id,) = seed(ledger, now, 1)
    rail = RecordingRail()
    # A call that died between writing the payout and claiming it.
    ledger.payouts.prepare([(reward_id, rail.kind, "acct")], now)

    soon = submit_payouts.fn(ledger, {rail.kind: rail}, [], now + timedelta(seconds=1))
    later = submit_payouts.fn(ledger, {rail.kind: rail}, [], now + CLAIM_LEASE)

    assert (soon.paid, soon.recovered) == (0, 0)
    assert (later.paid, later.recovered) == (1, 1)
    assert len(rail.paid) == 1
