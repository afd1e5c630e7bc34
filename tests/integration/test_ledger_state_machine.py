"""A Hypothesis state machine drives the ledger through rewards, approvals, payouts,
refunds, chargebacks, churn, clawbacks, reversals and crashes in random order, on a real
SQLite ledger (and Postgres with REFERRALS_TEST_POSTGRES_URL), and checks the money
invariants after every step.

The rail is a :class:`RecordingRail` (a provider with idempotency keys) whose answers are
scripted per call: paid, transient failure, refusal, or paid with the answer lost. A
"crash" stops a step between storing a payout's or reversal's key and calling the rail,
or between the rail's answer and the ledger's commit; a later step picks it up.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, insert, select

from domain.approvals import CheckedDecision
from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalResult
from domain.errors import InvalidDecision
from domain.models import Decision, PayoutOutcome, PayoutRailKind, RewardStatus
from domain.money import Money
from domain.program import Program
from integrations.ledger.engine import make_engine
from integrations.ledger.tables import (
    ClawbackRow,
    LedgerEntryRow,
    PayoutRow,
    ReversalRow,
    RewardRow,
)
from integrations.payments.fake import RecordingRail
from tasks.clawbacks import apply_clawbacks
from tasks.payouts import submit_payouts
from tasks.use_cases.approvals import record_decision
from tests.conftest import NOW
from tests.integration.clawback_helpers import (
    Ledger,
    churn_event,
    dispute_event,
    link_payment,
    refund_event,
)
from tests.integration.test_ledger_flow import conversion_for, given_referrer, reward_for
from tests.pg_schemas import SchemaPool

LEDGER = PayoutRailKind.LEDGER_ONLY
REFERRERS = ("C1", "C2")
UNPAID = {
    RewardStatus.HOLDING,
    RewardStatus.PAYABLE,
    RewardStatus.AWAITING_APPROVAL,
    RewardStatus.APPROVED,
}
PAY_OUTCOMES: list[Any] = [
    PayoutOutcome.SUCCEEDED,
    PayoutOutcome.RETRYABLE,
    PayoutOutcome.FAILED,
    "lost_response",
]
# Insufficient funds twice: the debts it leaves are what netting needs.
REVERSAL_OUTCOMES: list[Any] = [
    *ReversalOutcome,
    ReversalOutcome.INSUFFICIENT_FUNDS,
    "lost_response",
]
CRASHES = ("none", "none", "before_call", "after_call")
MACHINE_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class ScriptedRail(RecordingRail):
    """A RecordingRail whose next reversals answer ``next_reversal``, and which can die
    right after the provider reversed (before the ledger hears of it)."""

    def __init__(self) -> None:
        super().__init__(LEDGER)
        self.next_reversal: Any = None
        self.die_after_reversing = False

    def reverse(self, instructions: Sequence[ReversalInstruction]) -> list[ReversalResult]:
        if self.next_reversal is not None:
            for instruction in instructions:
                self.script_reversal(instruction.reversal_id, [self.next_reversal])
        results = super().reverse(instructions)
        if self.die_after_reversing:
            raise Crashed("killed after the provider reversed")
        return results


class Crashed(Exception):
    """The process died here."""


class LedgerMachine(RuleBasedStateMachine):
    """One example: a fresh ledger, two referrers, and whatever the rules do to it."""

    def __init__(self, fresh_url: Callable[[], str]) -> None:
        super().__init__()
        self.engine = make_engine(fresh_url())
        self.ledger = Ledger(self.engine)
        self.rail = ScriptedRail()
        self.program = Program()
        self.codes = {r: given_referrer(self.ledger, NOW, r) for r in REFERRERS}
        self.rewards: list[str] = []
        self.payments: dict[str, tuple[str, int, str]] = {}  # reward -> charge, amount, customer
        self.unlinked: list[str] = []
        self.refunded: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []

    def teardown(self) -> None:
        self.engine.dispose()

    def _event_time(self) -> Any:
        return NOW + timedelta(minutes=len(self.events) + 1)

    def _store(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.ledger.provider_events.store_stripe_event(event, NOW)

    # -- rewards and approvals --------------------------------------------------------

    @initialize(
        seeds=st.lists(
            st.tuples(st.sampled_from(REFERRERS), st.integers(1, 50_000), st.booleans()),
            min_size=1,
            max_size=4,
        )
    )
    def some_rewards_already_paid(self, seeds: list[tuple[str, int, bool]]) -> None:
        for referrer, amount, paid in seeds:
            self.add_reward(referrer, amount, 120_000, True, False, RewardStatus.PAYABLE)
            if paid:
                submit_payouts.fn(self.ledger, {LEDGER: self.rail}, [self.rewards[-1]], NOW)

    @rule(
        referrer=st.sampled_from(REFERRERS),
        amount=st.integers(1, 50_000),
        payment=st.integers(100, 200_000),
        linked=st.booleans(),
        shared_customer=st.booleans(),
        routed=st.sampled_from(
            [RewardStatus.PAYABLE, RewardStatus.AWAITING_APPROVAL, RewardStatus.HOLDING]
        ),
    )
    def add_reward(
        self,
        referrer: str,
        amount: int,
        payment: int,
        linked: bool,
        shared_customer: bool,
        routed: RewardStatus,
    ) -> None:
        n = len(self.rewards)
        conversion = conversion_for(self.codes[referrer], referrer, n, NOW)
        self.ledger.conversions.record_conversions([], [conversion], [], NOW)
        reward = reward_for(conversion, amount, NOW)
        self.ledger.rewards.record([conversion.conversion_id], [reward], [], NOW)
        if routed is not RewardStatus.HOLDING:
            self.ledger.rewards.move([reward.reward_id], [RewardStatus.HOLDING], routed, NOW)
        self.rewards.append(reward.reward_id)
        customer = "cus_shared" if shared_customer else f"cus_{n}"
        self.payments[reward.reward_id] = (f"ch_{n}", payment, customer)
        if linked:
            self._link(reward.reward_id)
        else:
            self.unlinked.append(reward.reward_id)  # its refund may come first

    def _link(self, reward_id: str) -> None:
        charge, amount, customer = self.payments[reward_id]
        link_payment(self.ledger, reward_id, charge, NOW, amount_minor=amount, customer=customer)

    @precondition(lambda self: self.unlinked)
    @rule(data=st.data())
    def the_payment_reaches_its_conversion(self, data: st.DataObject) -> None:
        reward_id = data.draw(st.sampled_from(self.unlinked))
        self.unlinked.remove(reward_id)
        self._link(reward_id)

    @precondition(lambda self: self.rewards)
    @rule(
        data=st.data(),
        to=st.sampled_from([RewardStatus.PAYABLE, RewardStatus.AWAITING_APPROVAL]),
    )
    def route(self, data: st.DataObject, to: RewardStatus) -> None:
        reward_id = data.draw(st.sampled_from(self.rewards))
        self.ledger.rewards.move([reward_id], [RewardStatus.HOLDING], to, NOW)

    @precondition(lambda self: self.rewards)
    @rule(
        data=st.data(),
        decision=st.sampled_from(["approve", "reject", "reduce"]),
        cut=st.integers(1, 50_000),
    )
    def decide(self, data: st.DataObject, decision: str, cut: int) -> None:
        reward_id = data.draw(st.sampled_from(self.rewards))
        view = self.ledger.rewards.of([reward_id])[reward_id]
        amount = view.balance.amount_minor
        if decision == "reduce":
            amount = max(amount - cut, 0)
        checked = CheckedDecision(
            decision=Decision.REJECT if decision == "reject" else Decision.APPROVE,
            approver_id="ann",
            approver="Ann Approver",
            reason="state machine",
            amount=Money(max(amount, 0), "EUR"),
        )
        try:
            record_decision(self.ledger, reward_id, 1, checked, 1, None, NOW)
        except InvalidDecision:
            assert view.status is not RewardStatus.AWAITING_APPROVAL

    # -- payouts ---------------------------------------------------------------------

    @precondition(lambda self: self.rewards)
    @rule(
        data=st.data(),
        outcome=st.sampled_from(PAY_OUTCOMES),
        crash=st.sampled_from(CRASHES),
    )
    def pay(self, data: st.DataObject, outcome: Any, crash: str) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.rewards), min_size=1, max_size=3))
        views = self.ledger.rewards.of(chosen)
        plans = [
            (r, LEDGER, None)
            for r in dict.fromkeys(chosen)
            if views[r].status in (RewardStatus.PAYABLE, RewardStatus.APPROVED)
        ]
        instructions = self.ledger.payouts.prepare(plans, NOW)
        for instruction in instructions:
            self.rail.script(instruction.payout_id, [outcome])
        if crash == "before_call":
            return  # died with the keys stored and nothing sent
        results = self.rail.pay(instructions)
        if crash == "after_call":
            return  # died before the ledger committed what the rail answered
        self.ledger.payouts.record_results(results, NOW)

    @rule(referrer=st.sampled_from(REFERRERS), amount=st.integers(1, 50_000))
    def a_new_referral_is_paid_at_once(self, referrer: str, amount: int) -> None:
        """A small reward paid automatically: where a referrer's debt gets netted."""
        self.add_reward(referrer, amount, 120_000, True, False, RewardStatus.PAYABLE)
        submit_payouts.fn(self.ledger, {LEDGER: self.rail}, [self.rewards[-1]], NOW)

    @rule()
    def a_payout_run_pays_everything_payable(self) -> None:
        """As the cycle does: every payable or approved reward, and whatever a crash
        left pending, through ``submit_payouts`` (unscripted calls succeed)."""
        submit_payouts.fn(self.ledger, {LEDGER: self.rail}, self.rewards, NOW)

    # -- the referee takes money back --------------------------------------------------

    @precondition(lambda self: self.rewards)
    @rule(data=st.data(), percent=st.integers(1, 100))
    def refund(self, data: st.DataObject, percent: int) -> None:
        reward_id = data.draw(st.sampled_from(self.rewards))
        charge, amount, _ = self.payments[reward_id]
        total = min(amount, self.refunded.get(charge, 0) + max(1, amount * percent // 100))
        self.refunded[charge] = total
        event_id = f"evt_refund_{len(self.events)}"
        self._store(
            refund_event(event_id, charge, self._event_time(), refunded=total, amount=amount)
        )

    @precondition(lambda self: self.rewards)
    @rule(data=st.data(), percent=st.integers(1, 100))
    def dispute(self, data: st.DataObject, percent: int) -> None:
        reward_id = data.draw(st.sampled_from(self.rewards))
        charge, amount, _ = self.payments[reward_id]
        disputed = max(1, amount * percent // 100)
        event_id = f"evt_dispute_{len(self.events)}"
        self._store(dispute_event(event_id, charge, self._event_time(), amount=disputed))

    @precondition(lambda self: self.rewards)
    @rule(data=st.data())
    def churn(self, data: st.DataObject) -> None:
        reward_id = data.draw(st.sampled_from(self.rewards))
        _, _, customer = self.payments[reward_id]
        event_id = f"evt_churn_{len(self.events)}"
        self._store(churn_event(event_id, f"sub_{event_id}", customer, self._event_time()))

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def stripe_delivers_an_event_again(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(self.events))
        assert self.ledger.provider_events.store_stripe_event(event, NOW) is False

    # -- clawbacks and reversals -------------------------------------------------------

    @rule(outcome=st.sampled_from(REVERSAL_OUTCOMES), crash=st.sampled_from(CRASHES))
    def apply_clawbacks(self, outcome: Any, crash: str) -> None:
        """The apply-clawbacks task; the provider answers ``outcome`` to new reversals,
        or the process dies before calling it or right after it answered."""
        rails: dict[PayoutRailKind, Any] = {} if crash == "before_call" else {LEDGER: self.rail}
        self.rail.next_reversal = outcome
        self.rail.die_after_reversing = crash == "after_call"
        try:
            apply_clawbacks.fn(self.ledger, rails, self.program, NOW)
        except Crashed:
            pass
        finally:
            self.rail.next_reversal, self.rail.die_after_reversing = None, False

    @rule(outcome=st.sampled_from(REVERSAL_OUTCOMES), crash=st.sampled_from(CRASHES))
    def reverse(self, outcome: Any, crash: str) -> None:
        pending = self.ledger.reversals.pending()
        for instruction in pending:
            self.rail.script_reversal(instruction.reversal_id, [outcome])
        if crash == "before_call":
            return
        results = self.rail.reverse(pending)
        if crash == "after_call":
            return
        self.ledger.reversals.record_results(results, NOW)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def the_money_adds_up(self) -> None:
        check_invariants(self.ledger, self.rail)


def _rows(conn: Any, table: Any) -> list[Any]:
    return list(conn.execute(select(table)).mappings())


def check_invariants(ledger: Ledger, rail: RecordingRail) -> None:
    """Every money invariant the ledger promises, read straight from its tables."""
    with ledger.engine.connect() as conn:
        rewards = {r["reward_id"]: r for r in _rows(conn, RewardRow.__table__)}
        entries = _rows(conn, LedgerEntryRow.__table__)
        payouts = _rows(conn, PayoutRow.__table__)
        reversals = _rows(conn, ReversalRow.__table__)
        clawed_rows = _rows(conn, ClawbackRow.__table__)
    views = ledger.rewards.of(rewards)
    sums: dict[str, dict[str, int]] = {r: {} for r in rewards}
    netted_by_ref: dict[str, int] = {}
    netted_out: dict[str, int] = {}
    for e in entries:
        by_kind = sums[e["reward_id"]]
        by_kind[e["kind"]] = by_kind.get(e["kind"], 0) + e["amount_minor"]
        if e["kind"] == "netted":
            netted_by_ref[e["ref"]] = netted_by_ref.get(e["ref"], 0) + e["amount_minor"]
            if e["amount_minor"] < 0:
                netted_out[e["reward_id"]] = netted_out.get(e["reward_id"], 0) - e["amount_minor"]

    for reward_id, row in rewards.items():
        s = sums[reward_id]
        status = RewardStatus(row["status"])
        balance = sum(s.values())
        accrued, paid = s.get("accrued", 0), -s.get("paid", 0)
        clawed, recovered = -s.get("clawed_back", 0), s.get("reversed", 0)
        # The balance the ledger reports is the sum of the reward's entries.
        assert views[reward_id].balance.amount_minor == balance, reward_id
        # Never more paid than accrued, never a negative payment or accrual.
        assert accrued == row["amount_minor"]
        assert 0 <= paid <= accrued, (reward_id, s)
        # Never both paid and cancelled.
        if paid or any(p["status"] == "succeeded" for p in payouts if p["reward_id"] == reward_id):
            assert status is not RewardStatus.CANCELLED, (reward_id, s)
            assert "cancelled" not in s, (reward_id, s)
        # An unpaid reward owes the referrer something or nothing, never less.
        if status in UNPAID:
            assert balance >= 0, (reward_id, status, s)
        # A debt only comes from a clawback, and is never more than what is unrecovered.
        if balance < 0:
            assert -balance <= clawed - recovered, (reward_id, s)
        # Nothing is clawed back beyond what reached the referrer; nothing recovered
        # beyond what was clawed back.
        assert 0 <= recovered <= clawed <= paid + netted_out.get(reward_id, 0), (reward_id, s)

    # One live payout per reward; each succeeded payout has exactly one paid entry.
    live: dict[str, int] = {}
    for p in payouts:
        assert p["amount_minor"] > 0
        if p["status"] in ("pending", "succeeded"):
            live[p["reward_id"]] = live.get(p["reward_id"], 0) + 1
    assert all(n == 1 for n in live.values()), live
    paid_entries = [e for e in entries if e["kind"] == "paid"]
    succeeded = {p["payout_id"]: p for p in payouts if p["status"] == "succeeded"}
    assert sorted(e["ref"] for e in paid_entries) == sorted(succeeded)
    for e in paid_entries:
        payout = succeeded[e["ref"]]
        assert (e["reward_id"], -e["amount_minor"]) == (payout["reward_id"], payout["amount_minor"])

    # Netting moves a debt between rewards of one referrer: each payout's entries net to 0.
    assert all(total == 0 for total in netted_by_ref.values()), netted_by_ref

    # Reversals: never beyond the payout; each succeeded one booked once as 'reversed'.
    by_payout: dict[str, int] = {}
    for r in reversals:
        if r["status"] in ("pending", "succeeded"):
            by_payout[r["payout_id"]] = by_payout.get(r["payout_id"], 0) + r["amount_minor"]
    amounts = {p["payout_id"]: p["amount_minor"] for p in payouts}
    assert all(total <= amounts[p] for p, total in by_payout.items())
    reversed_entries = sorted(
        (e["ref"], e["amount_minor"]) for e in entries if e["kind"] == "reversed"
    )
    assert reversed_entries == sorted(
        (r["reversal_id"], r["amount_minor"]) for r in reversals if r["status"] == "succeeded"
    )
    assert len({(c["reward_id"], c["event_id"]) for c in clawed_rows}) == len(clawed_rows)

    # Money is never created: paid out, less recovered, never exceeds what was earned.
    total = {
        k: sum(s.get(k, 0) for s in sums.values())
        for k in ("accrued", "adjusted", "cancelled", "paid", "reversed")
    }
    assert (
        -total["paid"] - total["reversed"]
        <= total["accrued"] + total["adjusted"] + total["cancelled"]
    )

    # The rail moved each reward's money at most once, and as the ledger booked it.
    moved: dict[str, int] = {}
    for instruction in rail.paid:
        moved[instruction.reward_id] = moved.get(instruction.reward_id, 0) + 1
    assert all(n == 1 for n in moved.values()), moved
    rail_paid = {i.payout_id: i.amount.amount_minor for i in rail.paid}
    for payout_id, payout in succeeded.items():
        assert rail_paid.get(payout_id) == payout["amount_minor"]
    rail_reversed = [i.reversal_id for i in rail.reversed]
    assert len(rail_reversed) == len(set(rail_reversed))
    assert {r for r, _ in reversed_entries} <= set(rail_reversed)


# -- running it ------------------------------------------------------------------------------


@contextmanager
def _sqlite_factory(template: Path, folder: Path) -> Iterator[Callable[[], str]]:
    """A fresh migrated SQLite file per example (a copy of the session's template)."""

    def fresh() -> str:
        path = folder / f"machine-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"

    yield fresh


@contextmanager
def _postgres_factory(url: str, schemas: SchemaPool) -> Iterator[Callable[[], str]]:
    """The test's migrated schema, emptied before each example (rows and identities)."""

    def fresh() -> str:
        # Emptying lifts no guard for the example: see tests/pg_schemas.py.
        schemas.empty(url)
        return url

    yield fresh


def test_the_ledger_invariants_hold_whatever_happens_in_whatever_order(
    ledger_url: str, sqlite_template: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    factory = (
        _sqlite_factory(sqlite_template, tmp_path)
        if ledger_url.startswith("sqlite")
        else _postgres_factory(ledger_url, request.getfixturevalue("postgres_schemas"))
    )
    with factory as fresh:
        # Hypothesis calls any factory; its annotation names the class only.
        run_state_machine_as_test(
            lambda: LedgerMachine(fresh),  # type: ignore[arg-type]
            settings=MACHINE_SETTINGS,
        )


def test_the_machine_checks_something(sqlite_url: str) -> None:
    """The invariants fail on a ledger that breaks one (a second paid entry)."""
    engine = make_engine(sqlite_url)
    ledger = Ledger(engine)
    try:
        given_referrer(ledger, NOW, "C1")
        conversion = conversion_for(ledger.asks.codes_for(["C1"])["C1"], "C1", 1, NOW)
        ledger.conversions.record_conversions([], [conversion], [], NOW)
        reward = reward_for(conversion, 1000, NOW)
        ledger.rewards.record([conversion.conversion_id], [reward], [], NOW)
        with engine.begin() as conn:
            conn.execute(
                insert(LedgerEntryRow),
                {
                    "reward_id": reward.reward_id,
                    "kind": "paid",
                    "amount_minor": -1000,
                    "currency": "EUR",
                    "ref": "not-a-payout",
                    "created_at": NOW,
                },
            )
            count = conn.execute(select(func.count()).select_from(LedgerEntryRow)).scalar_one()
        assert count == 2
        with pytest.raises(AssertionError):
            check_invariants(ledger, RecordingRail(LEDGER))
    finally:
        engine.dispose()
