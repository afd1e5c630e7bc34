"""Recording in-memory fakes of the ``clawbacks`` and ``reversals`` stores.

Both read and write one :class:`ClawbackData`, as the SQL stores share the ledger's
tables; they compute positions and debts from the entries as the SQL stores do. Each
records its calls (``calls``: method name and arguments). Seed the facts with the
``add_*`` and ``pay`` methods of :class:`ClawbackData` (a test's set-up, not the port).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.clawbacks import (
    Clawback,
    ClawbackCause,
    ClawbackNotice,
    ConversionPayment,
    PaidPayout,
    PaymentLoss,
    ReversalInstruction,
    ReversalOutcome,
    ReversalResult,
    RewardPayment,
    RewardPosition,
)
from domain.models import PayoutRailKind, RewardStatus
from domain.money import Money

_REVERSAL_STATUS = {
    ReversalOutcome.SUCCEEDED: "succeeded",
    ReversalOutcome.INSUFFICIENT_FUNDS: "unrecovered",
    ReversalOutcome.FAILED: "failed",
    ReversalOutcome.RETRYABLE: "pending",
}


@dataclass
class InboxEvent:
    """A provider event in the fake inbox."""

    event_id: str
    type: str
    created_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    processed_at: datetime | None = None


@dataclass
class FakeReward:
    """The columns of a reward the clawback area reads."""

    reward_id: str
    referrer_id: str
    conversion_id: str
    status: RewardStatus
    currency: str
    created_at: datetime


@dataclass
class ClawbackData:
    """What the clawback stores read and write (the tables they share in SQL)."""

    events: dict[str, InboxEvent] = field(default_factory=dict)
    conversions: dict[str, tuple[datetime, bool]] = field(default_factory=dict)
    # (payment ref, customer ref, conversion id, amount)
    conversion_payments: list[tuple[str, str | None, str, int]] = field(default_factory=list)
    rewards: dict[str, FakeReward] = field(default_factory=dict)
    # (payment ref, reward id, amount, paid at)
    reward_payments: list[tuple[str, str, int, datetime]] = field(default_factory=list)
    # (reward id, kind, amount, currency, ref)
    entries: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    clawbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    reversals: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: dict[str, ClawbackNotice] = field(default_factory=dict)
    locked_referrers: list[str] = field(default_factory=list)

    # -- seeding (a test's set-up) ------------------------------------------------------

    def add_event(self, event_id: str, type_: str, created_at: datetime) -> None:
        self.events[event_id] = InboxEvent(event_id, type_, created_at)

    def add_conversion(
        self,
        conversion_id: str,
        occurred_at: datetime,
        payments: Sequence[tuple[str, int]],
        *,
        customer_ref: str | None = "cus_referee",
        rewarded: bool = True,
    ) -> None:
        """A conversion and the ids of its first payment, (payment ref, amount)."""
        self.conversions[conversion_id] = (occurred_at, rewarded)
        for ref, amount in payments:
            self.conversion_payments.append((ref, customer_ref, conversion_id, amount))

    def add_reward(
        self,
        reward_id: str,
        referrer_id: str,
        conversion_id: str,
        amount: Money,
        created_at: datetime,
        status: RewardStatus = RewardStatus.PAYABLE,
        *,
        own_payment: tuple[str, int, datetime] | None = None,
    ) -> None:
        """A reward with its ``accrued`` entry; ``own_payment`` (ref, amount, paid at)
        when a payment of its own earned it."""
        self.rewards[reward_id] = FakeReward(
            reward_id, referrer_id, conversion_id, status, amount.currency, created_at
        )
        self.entries.append((reward_id, "accrued", amount.amount_minor, amount.currency, reward_id))
        if own_payment is not None:
            ref, paid_minor, paid_at = own_payment
            self.reward_payments.append((ref, reward_id, paid_minor, paid_at))

    def pay(
        self,
        reward_id: str,
        payout_id: str,
        *,
        status: str = "succeeded",
        rail: str = "stripe_transfer",
    ) -> None:
        """Pay out the reward's balance: a payout, and when it succeeded its ``paid``
        entry and the reward's move to paid."""
        reward = self.rewards[reward_id]
        amount = self.balance(reward_id)
        self.payouts[payout_id] = {
            "payout_id": payout_id,
            "reward_id": reward_id,
            "status": status,
            "rail": rail,
            "destination": f"acct_{reward.referrer_id}",
            "provider_ref": f"tr_{payout_id}" if status == "succeeded" else None,
            "amount_minor": amount,
            "currency": reward.currency,
        }
        if status == "succeeded":
            self.entries.append((reward_id, "paid", -amount, reward.currency, payout_id))
            reward.status = RewardStatus.PAID

    # -- reading back -------------------------------------------------------------------

    def balance(self, reward_id: str) -> int:
        return sum(e[2] for e in self.entries if e[0] == reward_id)

    def entries_of(self, reward_id: str) -> list[tuple[str, int]]:
        return [(kind, amount) for r, kind, amount, _, _ in self.entries if r == reward_id]


class InMemoryClawbackStore:
    """The ``clawbacks`` store in memory (:class:`domain.stores.clawbacks.ClawbackStore`)."""

    def __init__(self, data: ClawbackData) -> None:
        self.data = data
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def events(
        self, types: Sequence[str], after: tuple[datetime, str] | None, limit: int
    ) -> list[InboxEvent]:
        self.calls.append(("events", (tuple(types), after, limit)))
        found = sorted(
            (
                e
                for e in self.data.events.values()
                if e.processed_at is None
                and e.type in types
                and (after is None or (e.created_at, e.event_id) > after)
            ),
            key=lambda e: (e.created_at, e.event_id),
        )
        return found[:limit]

    def lock_event(self, event_id: str) -> bool:
        self.calls.append(("lock_event", (event_id,)))
        event = self.data.events.get(event_id)
        return event is None or event.processed_at is None

    def close_events(self, event_ids: Sequence[str], now: datetime) -> int:
        self.calls.append(("close_events", (tuple(event_ids), now)))
        closed = 0
        for event_id in sorted(set(event_ids)):
            event = self.data.events.get(event_id)
            if event is not None and event.processed_at is None:
                event.processed_at = now
                closed += 1
        return closed

    def conversion_payments(self, loss: PaymentLoss) -> list[ConversionPayment]:
        self.calls.append(("conversion_payments", (loss.event_id,)))
        found: list[ConversionPayment] = []
        for ref, customer, conversion_id, amount in sorted(
            self.data.conversion_payments, key=lambda p: (p[2], p[0])
        ):
            by_customer = (
                loss.cause is ClawbackCause.CHURN
                and loss.customer_ref is not None
                and customer == loss.customer_ref
            )
            if ref in loss.payment_refs or by_customer:
                occurred_at, rewarded = self.data.conversions[conversion_id]
                found.append(ConversionPayment(conversion_id, amount, occurred_at, rewarded))
        return found

    def own_payments(self, payment_refs: Sequence[str]) -> dict[str, RewardPayment]:
        self.calls.append(("own_payments", (tuple(payment_refs),)))
        found: dict[str, RewardPayment] = {}
        for ref, reward_id, amount, paid_at in self.data.reward_payments:
            if ref in payment_refs:
                reward = self.data.rewards[reward_id]
                found[reward_id] = RewardPayment(
                    reward_id, reward.referrer_id, reward.conversion_id, amount, paid_at
                )
        return found

    def rewards_of(self, conversion_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        self.calls.append(("rewards_of", (tuple(conversion_ids),)))
        return {
            r.reward_id: (r.referrer_id, r.conversion_id)
            for r in self.data.rewards.values()
            if r.conversion_id in conversion_ids
        }

    def earned_alone(self, reward_ids: Sequence[str]) -> set[str]:
        self.calls.append(("earned_alone", (tuple(reward_ids),)))
        return {r for _, r, _, _ in self.data.reward_payments if r in reward_ids}

    def lock_referrers(self, referrer_ids: Iterable[str]) -> None:
        ids = sorted(set(referrer_ids))
        self.calls.append(("lock_referrers", (tuple(ids),)))
        self.data.locked_referrers += ids

    def payout_pending(self, reward_ids: Sequence[str]) -> bool:
        self.calls.append(("payout_pending", (tuple(reward_ids),)))
        return any(
            p["reward_id"] in reward_ids and p["status"] == "pending"
            for p in self.data.payouts.values()
        )

    def positions(self, reward_ids: Sequence[str], payment_key: str) -> dict[str, RewardPosition]:
        self.calls.append(("positions", (tuple(reward_ids), payment_key)))
        positions: dict[str, RewardPosition] = {}
        for reward_id in reward_ids:
            reward = self.data.rewards.get(reward_id)
            if reward is None:
                continue
            sums: dict[str, tuple[int, int]] = {}
            for r, kind, amount, _, _ in self.data.entries:
                if r == reward_id:
                    total, out = sums.get(kind, (0, 0))
                    sums[kind] = (total + amount, out + min(amount, 0))
            of_payment = [
                c
                for c in self.data.clawbacks.values()
                if c["reward_id"] == reward_id and c["payment_key"] == payment_key
            ]
            currency = reward.currency
            positions[reward_id] = RewardPosition(
                reward_id=reward_id,
                status=reward.status,
                balance=Money(sum(total for total, _ in sums.values()), currency),
                settled=Money(
                    -(sums.get("paid", (0, 0))[0] + sums.get("netted", (0, 0))[1]), currency
                ),
                clawed=Money(-sums.get("clawed_back", (0, 0))[0], currency),
                payment_clawed=Money(sum(c["clawed_back_minor"] for c in of_payment), currency),
                payment_refunded=max((c["refunded_minor"] for c in of_payment), default=0),
                payment_disputed=max((c["disputed_minor"] for c in of_payment), default=0),
            )
        return positions

    def book(self, clawback: Clawback, now: datetime) -> bool:
        self.calls.append(("book", (clawback, now)))
        if clawback.clawback_id in self.data.clawbacks:
            return False
        currency = clawback.cancel.currency
        self.data.clawbacks[clawback.clawback_id] = {
            "clawback_id": clawback.clawback_id,
            "reward_id": clawback.reward_id,
            "event_id": clawback.event_id,
            "cause": clawback.cause.value,
            "payment_key": clawback.payment_key[:128],
            "payment_minor": clawback.payment_minor,
            "refunded_minor": clawback.refunded_minor,
            "disputed_minor": clawback.disputed_minor,
            "cancelled_minor": clawback.cancel.amount_minor,
            "clawed_back_minor": clawback.claw_back.amount_minor,
            "currency": currency,
            "status_before": clawback.status_before.value,
            "occurred_at": clawback.occurred_at,
            "created_at": now,
        }
        for kind, amount in (("cancelled", clawback.cancel), ("clawed_back", clawback.claw_back)):
            if amount.amount_minor:
                self.data.entries.append(
                    (clawback.reward_id, kind, -amount.amount_minor, currency, clawback.clawback_id)
                )
        return True

    def cancel_reward(self, reward_id: str, status: RewardStatus, now: datetime) -> bool:
        self.calls.append(("cancel_reward", (reward_id, status, now)))
        reward = self.data.rewards.get(reward_id)
        if reward is None or reward.status is not status:
            return False
        reward.status = RewardStatus.CANCELLED
        return True

    def notify(self, notice: ClawbackNotice, now: datetime) -> None:
        self.calls.append(("notify", (notice, now)))
        self.data.notifications.setdefault(notice.notification_id, notice)

    def of_rewards(self, reward_ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = set(reward_ids)
        self.calls.append(("of_rewards", (tuple(sorted(ids)),)))
        return sorted(
            (dict(c) for c in self.data.clawbacks.values() if c["reward_id"] in ids),
            key=lambda c: (c["occurred_at"], c["clawback_id"]),
        )


class InMemoryReversalStore:
    """The ``reversals`` store in memory (:class:`domain.stores.clawbacks.ReversalStore`)."""

    def __init__(self, data: ClawbackData) -> None:
        self.data = data
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def payout_of(self, reward_id: str) -> PaidPayout | None:
        self.calls.append(("payout_of", (reward_id,)))
        for p in self.data.payouts.values():
            if p["reward_id"] == reward_id and p["status"] == "succeeded":
                already = sum(
                    r["amount_minor"]
                    for r in self.data.reversals.values()
                    if r["payout_id"] == p["payout_id"] and r["status"] in ("pending", "succeeded")
                )
                return PaidPayout(
                    payout_id=p["payout_id"],
                    rail=PayoutRailKind(p["rail"]),
                    destination=p["destination"],
                    provider_ref=p["provider_ref"],
                    amount=Money(p["amount_minor"], p["currency"]),
                    reversed=Money(already, p["currency"]),
                )
        return None

    def queue(self, instruction: ReversalInstruction, clawback_id: str, now: datetime) -> int:
        self.calls.append(("queue", (instruction, clawback_id, now)))
        if instruction.reversal_id in self.data.reversals:
            return 0
        self.data.reversals[instruction.reversal_id] = {
            "instruction": instruction,
            "clawback_id": clawback_id,
            "reward_id": instruction.reward_id,
            "payout_id": instruction.payout_id,
            "amount_minor": instruction.amount.amount_minor,
            "currency": instruction.amount.currency,
            "status": "pending",
            "created_at": now,
        }
        return 1

    def pending(self, limit: int | None = None) -> list[ReversalInstruction]:
        self.calls.append(("pending", (limit,)))
        rows = sorted(
            (r for r in self.data.reversals.values() if r["status"] == "pending"),
            key=lambda r: (r["created_at"], r["instruction"].reversal_id),
        )
        found = [
            ReversalInstruction(
                reversal_id=r["instruction"].reversal_id,
                reward_id=r["reward_id"],
                payout_id=r["payout_id"],
                amount=r["instruction"].amount,
                rail=r["instruction"].rail,
                idempotency_key=r["instruction"].idempotency_key,
                destination=r["instruction"].destination,
                payout_ref=r["instruction"].payout_ref,
                key_created_at=r["created_at"],
            )
            for r in rows
        ]
        return found if limit is None else found[:limit]

    def record_results(self, results: Sequence[ReversalResult], now: datetime) -> dict[str, int]:
        self.calls.append(("record_results", (tuple(results), now)))
        counts: dict[str, int] = {}
        for result in results:
            row = self.data.reversals.get(result.reversal_id)
            if row is None or row["status"] != "pending":
                continue
            status = _REVERSAL_STATUS[result.outcome]
            row["status"] = status
            key = "retry_later" if status == "pending" else status
            counts[key] = counts.get(key, 0) + 1
            if result.outcome is ReversalOutcome.SUCCEEDED:
                self.data.entries.append(
                    (
                        row["reward_id"],
                        "reversed",
                        row["amount_minor"],
                        row["currency"],
                        result.reversal_id,
                    )
                )
        return counts

    def debts(self, referrer_ids: Iterable[str]) -> dict[str, Money]:
        ids = set(referrer_ids)
        self.calls.append(("debts", (tuple(sorted(ids)),)))
        totals: dict[str, Money] = {}
        for reward in sorted(self.data.rewards.values(), key=lambda r: (r.created_at, r.reward_id)):
            if reward.referrer_id not in ids:
                continue
            balance = self.data.balance(reward.reward_id)
            pending = sum(
                r["amount_minor"]
                for r in self.data.reversals.values()
                if r["reward_id"] == reward.reward_id and r["status"] == "pending"
            )
            owed = -balance - pending
            if balance < 0 and owed > 0:
                previous = totals.get(reward.referrer_id)
                amount = Money(owed, reward.currency)
                totals[reward.referrer_id] = amount if previous is None else previous + amount
        return totals


def clawback_stores() -> tuple[InMemoryClawbackStore, InMemoryReversalStore]:
    """The two stores over one :class:`ClawbackData`."""
    data = ClawbackData()
    return InMemoryClawbackStore(data), InMemoryReversalStore(data)
