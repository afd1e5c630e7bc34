"""The rewards' stores in memory: rewards and reward rules, over one book with payouts.

The three fakes share a :class:`MoneyBook` (rewards, their entries and terms, the
conversions they are for, payouts, notices, the quarantine), as their SQL stores share
tables, so a use case's test sees what one store wrote through another. What they do
not cover, by design: netting a referrer's debts (clawbacks), the payments that earned
a recurring reward (``reward_payments``), and reading invoices from the Stripe inbox
(a test sets :attr:`MoneyBook.invoices`). Every call is recorded in ``calls``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import (
    Conversion,
    Milestone,
    Rejected,
    Reward,
    RewardStatus,
    RewardView,
    derived_id,
)
from domain.money import Money
from domain.ports import RewardHistory
from domain.rewards import Invoice, RewardTerms

# As the SQL store counts them (integrations.ledger.reward_rules.EARNED_KINDS).
_EARNED_KINDS = ("accrued", "adjusted", "cancelled", "clawed_back")
_FIRST_INVOICE_SLACK = timedelta(days=1)

Calls = list[tuple[str, tuple[Any, ...]]]


@dataclass
class Entry:
    """One ledger entry: money in (+) or out (-) of a reward."""

    reward_id: str
    kind: str
    amount_minor: int
    currency: str
    ref: str


@dataclass
class MoneyBook:
    """What the money stores keep, in plain Python (a test may fill it directly).

    Attributes:
        conversions: by id; those in ``rewarded`` are marked rewarded.
        rewarded: conversion ids marked rewarded.
        rewards: reward id -> (the reward as stored, its status).
        entries: every ledger entry, in order.
        terms: reward id -> how it was reached (caps, tiers).
        first_payments: conversion id -> its first payment.
        invoices: conversion id -> the invoices its referee paid.
        changed_destinations: referrers with a payout destination change no person saw.
        payouts: payout id -> its row.
        notifications: notification id -> its row.
        quarantine: (source, record, stage) -> the reject.
    """

    conversions: dict[str, Conversion] = field(default_factory=dict)
    rewarded: set[str] = field(default_factory=set)
    rewards: dict[str, tuple[Reward, RewardStatus]] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    terms: dict[str, RewardTerms] = field(default_factory=dict)
    first_payments: dict[str, Money] = field(default_factory=dict)
    invoices: dict[str, list[Invoice]] = field(default_factory=dict)
    changed_destinations: set[str] = field(default_factory=set)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantine: dict[tuple[str, str, str], Rejected] = field(default_factory=dict)

    def balance(self, reward_id: str) -> Money:
        reward, _ = self.rewards[reward_id]
        total = sum(e.amount_minor for e in self.entries if e.reward_id == reward_id)
        return Money(total, reward.amount.currency)

    def view(self, reward_id: str) -> RewardView:
        reward, status = self.rewards[reward_id]
        return RewardView(reward=reward, status=status, balance=self.balance(reward_id))

    def entry(self, reward_id: str, kind: str, amount: Money, ref: str) -> None:
        if amount.amount_minor == 0:
            return
        if any((e.reward_id, e.kind, e.ref) == (reward_id, kind, ref) for e in self.entries):
            return  # unique per (reward, kind, ref), as in the ledger
        self.entries.append(Entry(reward_id, kind, amount.amount_minor, amount.currency, ref))

    def set_status(self, reward_id: str, status: RewardStatus) -> None:
        reward, _ = self.rewards[reward_id]
        self.rewards[reward_id] = (reward, status)

    def keep_rejected(self, rejected: Sequence[Rejected], stage: str) -> int:
        new = 0
        for r in rejected:
            key = (r.source, r.record, stage)
            if key not in self.quarantine:
                self.quarantine[key] = r
                new += 1
        return new

    def add_rewards(self, rewards: Sequence[Reward], zero_cancelled: bool) -> set[str]:
        """Insert the rewards not stored yet, with their accrual entries and notices."""
        inserted: set[str] = set()
        for r in rewards:
            if r.reward_id in self.rewards:
                continue
            zero = zero_cancelled and r.amount.is_zero
            self.rewards[r.reward_id] = (
                r,
                RewardStatus.CANCELLED if zero else RewardStatus.HOLDING,
            )
            inserted.add(r.reward_id)
            if zero:
                continue
            self.entry(r.reward_id, "accrued", r.amount, r.reward_id)
            notice = derived_id("notice", r.reward_id, "earned")
            self.notifications.setdefault(
                notice,
                {"kind": "reward_earned", "contact_id": r.referrer_id, "reward_id": r.reward_id},
            )
        return inserted


class InMemoryRewardsStore:
    """:class:`domain.stores.RewardsStore` over a :class:`MoneyBook`."""

    def __init__(self, book: MoneyBook) -> None:
        self.book = book
        self.calls: Calls = []

    def conversions_to_reward(self, limit: int) -> list[Conversion]:
        self.calls.append(("conversions_to_reward", (limit,)))
        waiting = [
            c for c in self.book.conversions.values() if c.conversion_id not in self.book.rewarded
        ]
        return sorted(waiting, key=lambda c: (c.occurred_at, c.conversion_id))[:limit]

    def record(
        self,
        conversion_ids: Sequence[str],
        rewards: Sequence[Reward],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        self.calls.append(("record", (list(conversion_ids), list(rewards), list(rejected), now)))
        inserted = self.book.add_rewards(rewards, zero_cancelled=False)
        self.book.keep_rejected(rejected, "reward")
        self.book.rewarded.update(conversion_ids)
        return len(inserted)

    def of(self, reward_ids: Iterable[str]) -> dict[str, RewardView]:
        ids = sorted(set(reward_ids))
        self.calls.append(("of", (ids,)))
        return {i: self.book.view(i) for i in ids if i in self.book.rewards}

    def to_route(self, as_of: datetime, after: str, limit: int) -> list[RewardView]:
        self.calls.append(("to_route", (as_of, after, limit)))
        views = [
            self.book.view(reward_id)
            for reward_id, (reward, status) in sorted(self.book.rewards.items())
            if status in (RewardStatus.HOLDING, RewardStatus.PAYABLE)
            and reward.payable_at <= as_of
            and reward_id > after
        ][:limit]
        return [
            replace(
                v, reward=replace(v.reward, flags=(*v.reward.flags, PAYOUT_DESTINATION_CHANGED))
            )
            if v.reward.referrer_id in self.book.changed_destinations
            and PAYOUT_DESTINATION_CHANGED not in v.reward.flags
            else v
            for v in views
        ]

    def move(
        self,
        reward_ids: Sequence[str],
        from_statuses: Sequence[RewardStatus],
        to: RewardStatus,
        now: datetime,
    ) -> list[str]:
        self.calls.append(("move", (list(reward_ids), list(from_statuses), to, now)))
        moved = [
            i
            for i in reward_ids
            if i in self.book.rewards and self.book.rewards[i][1] in from_statuses
        ]
        for reward_id in moved:
            self.book.set_status(reward_id, to)
        return moved

    def add_flag(self, reward_ids: Sequence[str], flag: str, now: datetime) -> int:
        self.calls.append(("add_flag", (list(reward_ids), flag, now)))
        flagged = 0
        for reward_id in dict.fromkeys(reward_ids):
            if reward_id not in self.book.rewards:
                continue
            reward, status = self.book.rewards[reward_id]
            if flag in ",".join(reward.flags):
                continue
            self.book.rewards[reward_id] = (replace(reward, flags=(*reward.flags, flag)), status)
            flagged += 1
        return flagged


class _History:
    """:class:`~domain.ports.RewardHistory` over a :class:`MoneyBook`."""

    def __init__(self, book: MoneyBook, currency: str) -> None:
        self._book = book
        self._currency = currency

    def referrals(
        self, referrer_id: str, milestone: Milestone, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, str]]:
        found: set[tuple[datetime, str]] = set()
        for reward, status in self._book.rewards.values():
            conversion = self._book.conversions.get(reward.conversion_id)
            if (
                conversion is None
                or reward.referrer_id != referrer_id
                or conversion.milestone is not milestone
                or not start <= conversion.occurred_at < end
                or status is RewardStatus.REJECTED
                or (status is RewardStatus.CANCELLED and not reward.amount.is_zero)
            ):
                continue
            found.add((conversion.occurred_at, conversion.conversion_id))
        return sorted(found)

    def earned(self, referrer_id: str | None, start: datetime, end: datetime) -> Money:
        total = 0
        for e in self._book.entries:
            reward, _ = self._book.rewards[e.reward_id]
            terms = self._book.terms.get(e.reward_id)
            conversion = self._book.conversions.get(reward.conversion_id)
            earned_at = terms.earned_at if terms else conversion.occurred_at if conversion else None
            if (
                e.kind in _EARNED_KINDS
                and reward.amount.currency == self._currency
                and earned_at is not None
                and start <= earned_at < end
                and (referrer_id is None or reward.referrer_id == referrer_id)
            ):
                total += e.amount_minor
        return Money(total, self._currency)


class InMemoryRewardRulesStore:
    """:class:`domain.stores.RewardRulesStore` over a :class:`MoneyBook`."""

    def __init__(self, book: MoneyBook) -> None:
        self.book = book
        self.calls: Calls = []

    def lock(self, referrer_ids: Iterable[str], program_budget: bool) -> None:
        self.calls.append(("lock", (sorted(set(referrer_ids)), program_budget)))

    def unrewarded(self, conversion_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(conversion_ids))
        self.calls.append(("unrewarded", (ids,)))
        return {i for i in ids if i in self.book.conversions and i not in self.book.rewarded}

    def recorded(self, conversion_ids: Iterable[str]) -> set[str]:
        ids = set(conversion_ids)
        self.calls.append(("recorded", (sorted(ids),)))
        return {i for i, (r, _) in self.book.rewards.items() if r.conversion_id in ids}

    def history(self, currency: str) -> RewardHistory:
        self.calls.append(("history", (currency,)))
        return _History(self.book, currency)

    def record_accrued(
        self,
        rewards: Sequence[Reward],
        terms: Mapping[str, RewardTerms],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> tuple[set[str], int]:
        self.calls.append(("record_accrued", (list(rewards), dict(terms), list(rejected), now)))
        inserted = self.book.add_rewards(rewards, zero_cancelled=True)
        for reward_id in inserted:
            if reward_id in terms:
                self.book.terms[reward_id] = terms[reward_id]
        return inserted, self.book.keep_rejected(rejected, "reward")

    def mark_rewarded(self, conversion_ids: Iterable[str], now: datetime) -> None:
        ids = sorted(set(conversion_ids))
        self.calls.append(("mark_rewarded", (ids, now)))
        self.book.rewarded.update(i for i in ids if i in self.book.conversions)

    def first_payments(self, conversion_ids: Iterable[str]) -> dict[str, Money]:
        ids = sorted(set(conversion_ids))
        self.calls.append(("first_payments", (ids,)))
        return {i: self.book.first_payments[i] for i in ids if i in self.book.first_payments}

    def recurring_conversions(
        self,
        milestones: Sequence[Milestone],
        since: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Conversion]:
        self.calls.append(("recurring_conversions", (list(milestones), since, after, limit)))
        found = sorted(
            (
                c
                for c in self.book.conversions.values()
                if c.conversion_id in self.book.rewarded
                and c.milestone in milestones
                and c.occurred_at >= since
                and (after is None or (c.occurred_at, c.conversion_id) > after)
            ),
            key=lambda c: (c.occurred_at, c.conversion_id),
        )
        return found[:limit]

    def referee_invoices(
        self, conversions: Sequence[Conversion], until: datetime
    ) -> tuple[dict[str, list[Invoice]], list[Rejected]]:
        self.calls.append(("referee_invoices", (list(conversions), until)))
        return {
            c.conversion_id: sorted(
                (
                    i
                    for i in self.book.invoices.get(c.conversion_id, [])
                    if c.occurred_at - _FIRST_INVOICE_SLACK <= i.paid_at < until
                ),
                key=lambda i: (i.paid_at, i.ref),
            )
            for c in conversions
        }, []

    def terms(self, reward_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        ids = sorted(set(reward_ids))
        self.calls.append(("terms", (ids,)))
        return {
            i: {
                "reward_id": i,
                "kind": t.kind.value,
                "earned_at": t.earned_at,
                "period": t.period,
                "referral_number": t.referral_number,
                "uncapped_minor": t.uncapped.amount_minor,
                "capped_by": t.capped_by,
            }
            for i in ids
            if (t := self.book.terms.get(i)) is not None
        }
