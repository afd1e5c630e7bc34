"""Rewards: accrued from conversions and invoices under caps and tiers, then routed.

One unit of work per batch: lock the referrers (and the program's budget when a cap
counts the whole program), read which conversions are still unrewarded and which of
their rewards exist, apply the reward rules (:mod:`domain.rewards`) to a
:class:`~domain.rewards.RewardBook` over the ledger's history, and record the rewards,
their rejects and the conversions rewarded. Two runs at once are serialized by the lock
exactly where they could use the same room under a cap; the one that waited reads the
other's rewards and computes nothing twice.

Routing (:func:`route_rewards`) reads the rewards past their holding period a page at a
time and, in one unit of work per page, stores the flags routing adds and moves each
reward where :func:`domain.rewards.route` sends it (the approval threshold is decided
there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from domain.errors import InputRejected
from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import Contact, Conversion, Rejected, Reward, RewardStatus, Route
from domain.money import Money
from domain.program import CapScope, Program
from domain.rewards import Invoice, RewardBook, compute_rewards, recurring_rewards, route
from domain.stores.rewards import LedgerWithRewards

#: Conversion id -> who is credited with it, and their weight.
Credits = Mapping[str, Sequence[tuple[Contact, Decimal]]]

_Rule = Callable[[RewardBook, set[str]], tuple[list[Reward], list[Rejected]]]


@dataclass(frozen=True, slots=True)
class Accrued:
    """What one accrual recorded.

    Attributes:
        recorded: rewards new in the ledger.
        capped: of those, reduced by a cap.
        zeroed: of those, capped to nothing (recorded cancelled).
        quarantined: rejects new in the quarantine.
        refused: every reject of the batch, new or already quarantined.
    """

    recorded: int = 0
    capped: int = 0
    zeroed: int = 0
    quarantined: int = 0
    refused: int = 0

    def __add__(self, other: Accrued) -> Accrued:
        return Accrued(
            self.recorded + other.recorded,
            self.capped + other.capped,
            self.zeroed + other.zeroed,
            self.quarantined + other.quarantined,
            self.refused + other.refused,
        )


def accrue_conversions(
    ledger: LedgerWithRewards,
    conversions: Sequence[Conversion],
    credits: Credits,
    flags: Mapping[str, tuple[str, ...]],
    first: Mapping[str, Money],
    program: Program,
    rejected: Sequence[Rejected],
    now: datetime,
) -> Accrued:
    """Record the rewards of the still unrewarded ``conversions`` and mark them rewarded.

    Args:
        ledger: the ledger (one unit of work is opened on it).
        conversions: the batch.
        credits: who is credited with each conversion (a conversion without credits
            earns nothing; its refusal is among ``rejected``).
        flags: fraud flags by conversion id.
        first: each conversion's first payment, for rules paying a share of it.
        program: the reward rules, caps and currency.
        rejected: refusals found before, quarantined with the rewards.
        now: when this is recorded.

    Returns:
        Counts of what was recorded.
    """

    def rule(book: RewardBook, unrewarded: set[str]) -> tuple[list[Reward], list[Rejected]]:
        rewards: list[Reward] = []
        refused = list(rejected)
        for conversion in sorted(conversions, key=lambda c: (c.occurred_at, c.conversion_id)):
            credited = credits.get(conversion.conversion_id)
            if conversion.conversion_id not in unrewarded or credited is None:
                continue
            try:
                rewards += compute_rewards(
                    conversion,
                    credited,
                    program,
                    _flags_of(credited, flags.get(conversion.conversion_id, ())),
                    book=book,
                    first_payment=first.get(conversion.conversion_id),
                )
            except InputRejected as exc:
                refused.append(Rejected("ledger", exc.record, exc.field, exc.reason))
        return rewards, refused

    return _accrue(ledger, conversions, credits, program, rule, now, mark_rewarded=True)


def accrue_invoices(
    ledger: LedgerWithRewards,
    conversions: Sequence[Conversion],
    credits: Credits,
    flags: Mapping[str, tuple[str, ...]],
    invoices: Mapping[str, Sequence[Invoice]],
    program: Program,
    rejected: Sequence[Rejected],
    now: datetime,
) -> Accrued:
    """Record the recurring rules' rewards for the invoices of ``conversions`` (rewarded
    long ago: they are not marked again).

    Args:
        ledger: the ledger (one unit of work is opened on it).
        conversions: conversions whose referees paid invoices.
        credits: who is credited with each conversion.
        flags: fraud flags by conversion id.
        invoices: the invoices each conversion's referee paid, by conversion id.
        program: the reward rules, caps and currency.
        rejected: refusals found before, quarantined with the rewards.
        now: when this is recorded.

    Returns:
        Counts of what was recorded.
    """

    def rule(book: RewardBook, _unrewarded: set[str]) -> tuple[list[Reward], list[Rejected]]:
        rewards: list[Reward] = []
        for conversion in conversions:
            credited = credits.get(conversion.conversion_id)
            if credited is None:
                continue
            rewards += recurring_rewards(
                conversion,
                credited,
                list(invoices[conversion.conversion_id]),
                program,
                _flags_of(credited, flags.get(conversion.conversion_id, ())),
                book=book,
            )
        return rewards, list(rejected)

    return _accrue(ledger, conversions, credits, program, rule, now, mark_rewarded=False)


def _accrue(
    ledger: LedgerWithRewards,
    conversions: Sequence[Conversion],
    credits: Credits,
    program: Program,
    rule: _Rule,
    now: datetime,
    mark_rewarded: bool,
) -> Accrued:
    """Lock, read, apply ``rule`` and record, in one unit of work (see the module)."""
    conversion_ids = [c.conversion_id for c in conversions]
    referrer_ids = {c.contact_id for credited in credits.values() for c, _ in credited}
    program_wide = any(cap.per is CapScope.PROGRAM for cap in program.reward_caps)
    with ledger.transaction() as uow:
        uow.reward_rules.lock(referrer_ids, program_budget=program_wide)
        unrewarded = uow.reward_rules.unrewarded(conversion_ids)
        recorded = uow.reward_rules.recorded(conversion_ids)
        book = RewardBook(program, uow.reward_rules.history(program.currency), recorded)
        rewards, refused = rule(book, unrewarded)
        inserted, quarantined = uow.reward_rules.record_accrued(rewards, book.terms, refused, now)
        if mark_rewarded:
            uow.reward_rules.mark_rewarded(unrewarded, now)
    new = [r for r in rewards if r.reward_id in inserted]
    return Accrued(
        recorded=len(new),
        capped=sum(book.terms[r.reward_id].capped for r in new),
        zeroed=sum(r.amount.is_zero for r in new),
        quarantined=quarantined,
        refused=len(refused),
    )


def _flags_of(
    credited: Sequence[tuple[Contact, Decimal]], flags: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    # A flagged conversion is suspect whoever touched it: every reward it earns waits
    # for a person.
    return {c.contact_id: flags for c, _ in credited}


@dataclass(frozen=True)
class RoutePlan:
    """Where routing sent rewards: paid automatically, or waiting for a person."""

    auto_pay: list[str] = field(default_factory=list)
    approval: list[str] = field(default_factory=list)


def route_rewards(
    ledger: LedgerWithRewards, program: Program, as_of: datetime, now: datetime, batch_size: int
) -> RoutePlan:
    """Send each reward past its holding period to automatic payout or to a person.

    Under the threshold and unflagged: payable. At or above the threshold, or with any
    flag: awaiting approval (:func:`domain.rewards.route`). A reward the ledger reads
    flagged ``payout_destination_changed`` and routed to a person keeps the flag, stored
    in the unit of work that moves it, so the approver sees why it waits.

    Args:
        ledger: where rewards are read and moved.
        program: threshold and holding rules.
        as_of: the moment of decision.
        now: when moves are recorded.
        batch_size: rewards per page (and per unit of work).

    Returns:
        The reward ids moved to payable and those moved to awaiting approval.
    """
    plan = RoutePlan()
    after = ""
    waiting = [RewardStatus.HOLDING, RewardStatus.PAYABLE]
    while True:
        with ledger.transaction() as uow:
            views = uow.rewards.to_route(as_of, after, batch_size)
            if not views:
                break
            after = views[-1].reward.reward_id
            auto: list[str] = []
            approval: list[str] = []
            for view in views:
                reward = view.reward
                where = route(view.balance, reward.flags, reward.payable_at, program, as_of)
                if where is Route.AUTO_PAY:
                    auto.append(reward.reward_id)
                elif where is Route.APPROVAL:
                    approval.append(reward.reward_id)
            routed = set(approval)
            changed = [
                v.reward.reward_id
                for v in views
                if PAYOUT_DESTINATION_CHANGED in v.reward.flags and v.reward.reward_id in routed
            ]
            uow.rewards.add_flag(changed, PAYOUT_DESTINATION_CHANGED, now)
            plan.auto_pay.extend(uow.rewards.move(auto, waiting, RewardStatus.PAYABLE, now))
            plan.approval.extend(
                uow.rewards.move(approval, waiting, RewardStatus.AWAITING_APPROVAL, now)
            )
    return plan
