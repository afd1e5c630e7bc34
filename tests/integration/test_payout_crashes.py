"""Exactly-once payouts survive a process killed between its steps.

Each test runs ``submit_payouts`` in a real subprocess (``crash_worker``) over a file
SQLite ledger (and Postgres when ``REFERRALS_TEST_POSTGRES_URL`` is set) and the real
``stripe`` library against the fake Stripe served from this process. The worker kills
itself with SIGKILL right after the payout row and its idempotency key are committed
(before Stripe is called), or right after Stripe answered (before the ledger commits
the result); a restart must then pay exactly once, under the same key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain.approvals import CheckedDecision
from domain.models import (
    Contact,
    Conversion,
    Decision,
    Milestone,
    PayoutInstruction,
    PayoutRailKind,
    Reward,
    RewardStatus,
    derived_id,
)
from domain.money import Money
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import LedgerEntryRow, PayoutRow
from integrations.payments.stripe_rail import StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.payouts import CLAIM_LEASE, PayoutReport, submit_payouts
from tasks.use_cases.approvals import record_decision
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import NOW, contact, people_batch

API_KEY = "sk_test_crash_worker_7777"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
AMOUNT = Money(2500, "EUR")
SIGKILLED = -9
# A restart is stamped before the crash runs, so it goes a minute past the lease.
AFTER_LEASE = CLAIM_LEASE + timedelta(minutes=1)


# -- ledger set-up and inspection (also used by test_payout_storm) -----------------------


def seed_payable_reward(
    ledger: SqlLedger,
    referrer: Contact,
    now: datetime,
    *,
    key: str = "deal-1",
    amount: Money = AMOUNT,
    status: RewardStatus = RewardStatus.PAYABLE,
) -> str:
    """A reward of ``amount`` for ``referrer``, through the ledger's own writes.

    The referrer and a referral code are stored, then a conversion, then the reward
    (accrued, holding), which is moved to ``status``. Returns the reward id.
    """
    ledger.sources.record_batch(people_batch(referrer), now)
    record_ask_decisions(ledger, [], {referrer.contact_id: f"CODE-{referrer.contact_id}"}, now, now)
    code = ledger.asks.codes_for([referrer.contact_id])[referrer.contact_id]
    conversion = Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=f"test:{key}",
        referral_code=code,
        referrer_id=referrer.contact_id,
        referee_account_id=f"REF-{key}",
        referee_contact_id=None,
        milestone=Milestone.CUSTOMER,
        occurred_at=now - timedelta(days=60),
        amount=None,
    )
    ledger.conversions.record_conversions([], [conversion], [], now)
    reward = Reward(
        reward_id=Reward.derive_id(conversion.conversion_id, "flat", referrer.contact_id),
        conversion_id=conversion.conversion_id,
        rule_id="flat",
        referrer_id=referrer.contact_id,
        amount=amount,
        milestone=Milestone.CUSTOMER,
        attribution_model="last_touch",
        payable_at=now - timedelta(days=1),
        explanation="flat reward for a customer",
    )
    assert ledger.rewards.record([conversion.conversion_id], [reward], [], now) == 1
    if status in (RewardStatus.APPROVED, RewardStatus.REJECTED):
        # The database moves a reward to approved or rejected only on a recorded
        # decision, as the approval flow does: awaiting approval first, then decided.
        ledger.rewards.move(
            [reward.reward_id], [RewardStatus.HOLDING], RewardStatus.AWAITING_APPROVAL, now
        )
        verdict = Decision.APPROVE if status is RewardStatus.APPROVED else Decision.REJECT
        checked = CheckedDecision(verdict, "ann", "Ann Approver", "looks right", amount)
        assert record_decision(ledger, reward.reward_id, 1, checked, 1, None, now) is status
    elif status is not RewardStatus.HOLDING:
        assert ledger.rewards.move([reward.reward_id], [RewardStatus.HOLDING], status, now) == [
            reward.reward_id
        ]
    return reward.reward_id


def payout_rows(ledger: SqlLedger, reward_id: str) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(PayoutRow.__table__)
            .where(PayoutRow.reward_id == reward_id)
            .order_by(PayoutRow.attempt)
        ).mappings()
        return [dict(r) for r in rows]


def entries(ledger: SqlLedger, reward_id: str, kind: str) -> list[tuple[int, str, str]]:
    """(amount, currency, ref) of the reward's ledger entries of ``kind``."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(LedgerEntryRow.amount_minor, LedgerEntryRow.currency, LedgerEntryRow.ref)
            .where(LedgerEntryRow.reward_id == reward_id, LedgerEntryRow.kind == kind)
            .order_by(LedgerEntryRow.entry_id)
        ).all()
        return [(r[0], r[1], r[2]) for r in rows]


def transfers_of(fake: FakeStripe, reward_id: str) -> list[dict[str, Any]]:
    return [
        t
        for t in fake.transfers
        if t["transfer_group"] == StripeTransferRail.transfer_group(reward_id)
        or t["metadata"].get("reward_id") == reward_id
    ]


def transfer_key(reward_id: str) -> str:
    return PayoutInstruction.key_for(reward_id, PayoutRailKind.STRIPE_TRANSFER)


def assert_paid_exactly_once(
    ledger: SqlLedger, fake: FakeStripe, reward_id: str, amount: Money = AMOUNT
) -> None:
    """One transfer, one succeeded payout, one paid entry, a paid reward, one key."""
    (transfer,) = transfers_of(fake, reward_id)
    (payout,) = payout_rows(ledger, reward_id)
    assert payout["status"] == "succeeded"
    assert payout["provider_ref"] == transfer["id"]
    assert payout["idempotency_key"] == transfer_key(reward_id)
    assert transfer["metadata"] == {"reward_id": reward_id, "payout_id": payout["payout_id"]}
    assert (transfer["amount"], transfer["currency"]) == (amount.amount_minor, "eur")
    assert entries(ledger, reward_id, "paid") == [
        (-amount.amount_minor, amount.currency, payout["payout_id"])
    ]
    view = ledger.rewards.of([reward_id])[reward_id]
    assert view.status is RewardStatus.PAID
    assert view.balance == Money.zero(amount.currency)


# -- fixtures and the worker -------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY, start=NOW) as server:
        yield server


@pytest.fixture
def reward_id(ledger: SqlLedger, fake: FakeStripe, now: datetime) -> str:
    referrer = contact("C1", stripe_account_id=fake.add_account())
    return seed_payable_reward(ledger, referrer, now)


class Workers:
    """Crash-worker subprocesses for one ledger, fake and reward; none outlives a test.

    A crash runs to its SIGKILL. A restart is started on standby *before* the crash, so
    its interpreter loads while the crashing worker runs; it only opens the ledger and
    calls Stripe once :meth:`resume` tells it to, after the crash.
    """

    def __init__(self, db_url: str, fake: FakeStripe, reward_id: str) -> None:
        self.db_url, self.fake, self.reward_id = db_url, fake, reward_id
        self._procs: list[subprocess.Popen[str]] = []

    def _start(self, crash: str, now: datetime, *, standby: bool) -> subprocess.Popen[str]:
        command = [
            sys.executable,
            "-m",
            "tests.integration.crash_worker",
            "--db",
            self.db_url,
            "--stripe",
            self.fake.url,
            "--reward-id",
            self.reward_id,
            "--crash",
            crash,
            "--now",
            now.isoformat(),
            "--api-key",
            API_KEY,
        ]
        proc = subprocess.Popen(
            [*command, "--standby"] if standby else command,
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(proc)
        return proc

    def crash(self, point: str) -> None:
        """Run a worker that kills itself at ``point``; it must die by SIGKILL."""
        proc = self._start(point, self.fake.now(), standby=False)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == SIGKILLED, err
        assert out == ""  # killed before it could report anything

    def standby(self, now: datetime) -> subprocess.Popen[str]:
        """A restart (``--crash none``) at ``now``, loaded and waiting to be resumed."""
        return self._start("none", now, standby=True)

    @staticmethod
    def resume(proc: subprocess.Popen[str]) -> dict[str, Any]:
        """Let a standby restart run to its end; its payout report."""
        out, err = proc.communicate("go\n", timeout=60)
        assert proc.returncode == 0, err
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdout is not None and not proc.stdout.closed:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=10)


@pytest.fixture
def workers(ledger_url: str, fake: FakeStripe, reward_id: str) -> Iterator[Workers]:
    started = Workers(ledger_url, fake, reward_id)
    try:
        yield started
    finally:
        started.close()


def assert_left_pending_with_its_key(ledger: SqlLedger, reward_id: str) -> dict[str, Any]:
    """The state a crash must leave: one pending payout holding the fixed key, no money
    booked, the reward still payable."""
    (payout,) = payout_rows(ledger, reward_id)
    assert payout["status"] == "pending"
    assert payout["attempt"] == 1
    assert payout["idempotency_key"] == transfer_key(reward_id)
    assert payout["provider_ref"] is None
    assert payout["tries"] == 0
    assert entries(ledger, reward_id, "paid") == []
    assert ledger.rewards.of([reward_id])[reward_id].status is RewardStatus.PAYABLE
    return payout


# -- tests -------------------------------------------------------------------------------


def test_a_kill_after_the_key_is_stored_and_before_stripe_is_called_pays_once_on_restart(
    ledger: SqlLedger, fake: FakeStripe, reward_id: str, workers: Workers
) -> None:
    # The dead worker's claim must run out first: until then it could be a slow one.
    restart = workers.standby(fake.now() + AFTER_LEASE)
    workers.crash("before_call")

    assert_left_pending_with_its_key(ledger, reward_id)
    assert fake.requests == []
    assert fake.transfers == []

    report = workers.resume(restart)

    assert report["paid"] == 1
    assert_paid_exactly_once(ledger, fake, reward_id)
    assert [(r.route, r.idempotency_key) for r in fake.requests] == [
        ("POST /v1/transfers", transfer_key(reward_id))
    ]


def test_a_kill_after_stripe_paid_and_before_the_ledger_committed_pays_once_on_restart(
    ledger: SqlLedger, fake: FakeStripe, reward_id: str, workers: Workers
) -> None:
    restart = workers.standby(fake.now() + AFTER_LEASE)
    workers.crash("after_call")

    payout = assert_left_pending_with_its_key(ledger, reward_id)
    (made_before_the_crash,) = transfers_of(fake, reward_id)
    assert made_before_the_crash["metadata"]["payout_id"] == payout["payout_id"]

    report = workers.resume(restart)

    assert report["paid"] == 1
    assert_paid_exactly_once(ledger, fake, reward_id)
    assert payout_rows(ledger, reward_id)[0]["provider_ref"] == made_before_the_crash["id"]
    # The restart sent the same key, and Stripe replayed the transfer it had made.
    assert [(r.route, r.idempotency_key, r.replayed) for r in fake.requests] == [
        ("POST /v1/transfers", transfer_key(reward_id), False),
        ("POST /v1/transfers", transfer_key(reward_id), True),
    ]

    # Once settled, another run (here in this process) has nothing left to send.
    with StripeTransferRail.connect(API_KEY, api_base=fake.url, max_network_retries=0) as rail:
        again = submit_payouts.fn(
            ledger, {rail.kind: rail}, [reward_id], fake.now() + 2 * AFTER_LEASE
        )
    assert again == PayoutReport()
    assert fake.count() == 2
    assert_paid_exactly_once(ledger, fake, reward_id)


def test_a_restart_25_hours_after_a_kill_after_the_call_finds_the_transfer_instead_of_paying(
    ledger: SqlLedger, fake: FakeStripe, reward_id: str, workers: Workers
) -> None:
    restart = workers.standby(fake.now() + timedelta(hours=25))
    workers.crash("after_call")
    assert_left_pending_with_its_key(ledger, reward_id)
    (made_before_the_crash,) = transfers_of(fake, reward_id)
    fake.advance(hours=25)  # Stripe has forgotten the idempotency key by now

    report = workers.resume(restart)

    assert report["paid"] == 1
    assert_paid_exactly_once(ledger, fake, reward_id)
    assert payout_rows(ledger, reward_id)[0]["provider_ref"] == made_before_the_crash["id"]
    assert fake.count("POST /v1/transfers") == 1  # no second create: found by its metadata
    assert fake.count("GET /v1/transfers") == 1
    assert {r.idempotency_key for r in fake.requests if r.method == "POST"} == {
        transfer_key(reward_id)
    }


def test_a_restart_while_the_killed_workers_claim_runs_sends_nothing_and_pays_once_after_it(
    ledger: SqlLedger, fake: FakeStripe, reward_id: str, workers: Workers
) -> None:
    too_soon = workers.standby(fake.now() + CLAIM_LEASE / 2)
    in_time = workers.standby(fake.now() + AFTER_LEASE)
    workers.crash("before_call")

    early = workers.resume(too_soon)

    assert early["paid"] == 0
    assert early["claimed_elsewhere"] == 1
    assert fake.requests == []
    assert_left_pending_with_its_key(ledger, reward_id)

    late = workers.resume(in_time)

    assert late["paid"] == 1
    assert_paid_exactly_once(ledger, fake, reward_id)
