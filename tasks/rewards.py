"""Computing rewards from conversions, and deciding where each one goes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.errors import InputRejected
from domain.fraud import PAYOUT_DESTINATION_CHANGED, flags_for_batch
from domain.models import Contact, Conversion, Rejected, Reward, RewardStatus, Route
from domain.money import Money
from domain.program import Program, RewardKind
from domain.rewards import (
    Invoice,
    RewardBook,
    add_months,
    compute_rewards,
    recurring_rewards,
    route,
)
from domain.touchpoints import credits_for
from integrations.ledger.reward_rules import Accrued
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger

#: How long after a recurring rule's months an invoice paid within them may still arrive
#: (a webhook Stripe retries for days, a polling catch-up) and earn its reward.
LATE_INVOICES = timedelta(days=35)


@dataclass
class _Credits:
    """Who is credited with each conversion of a batch, and the conversions refused."""

    by_conversion: dict[str, list[tuple[Contact, Decimal]]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def referrer_ids(self) -> set[str]:
        return {c.contact_id for credits in self.by_conversion.values() for c, _ in credits}


def _credits(ledger: SqlLedger, conversions: Sequence[Conversion], program: Program) -> _Credits:
    """Each conversion's (referrer, weight) under the program's attribution model, from
    the touchpoints of its referee up to the conversion (its own code always one)."""
    touches = ledger.touchpoints_for(conversions)
    weights = {
        c.conversion_id: credits_for(
            c,
            touches.get(c.conversion_id, []),
            program.attribution.model,
            program.attribution.half_life_days,
        )
        for c in conversions
    }
    contacts = ledger.asks.contacts({r for w in weights.values() for r, _ in w})
    plan = _Credits()
    for conversion in conversions:
        if conversion.referrer_id not in contacts:
            plan.rejected.append(
                Rejected("ledger", conversion.source_event, "referrer_id", "unknown referrer")
            )
            continue
        unknown = sorted(r for r, _ in weights[conversion.conversion_id] if r not in contacts)
        if unknown:
            plan.rejected.append(
                Rejected(
                    "ledger",
                    conversion.source_event,
                    "touchpoints",
                    f"credited referrer(s) {', '.join(unknown)} unknown",
                )
            )
            continue
        plan.by_conversion[conversion.conversion_id] = [
            (contacts[r], w) for r, w in weights[conversion.conversion_id]
        ]
    return plan


def _flags_of(
    credits: Sequence[tuple[Contact, Decimal]], flags: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    # A flagged conversion is suspect whoever touched it: every reward it earns waits
    # for a person.
    return {c.contact_id: flags for c, _ in credits}


@task(name="compute-rewards", cache_policy=NO_CACHE)
def compute_new_rewards(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int = 1000
) -> dict[str, int]:
    """Compute the rewards of every conversion not yet rewarded, with fraud flags, and
    those of the invoices recurring rules pay on.

    One reward per (conversion, rule, referrer), and per invoice for recurring rules:
    computing again adds nothing. Credit is split by the program's attribution model
    over the referee's touchpoints; tiers and caps are read and written under the
    ledger's per-referrer lock (:meth:`SqlLedger.accrue_rewards`).

    Args:
        ledger: where conversions are read and rewards (with accrual entries) stored.
        program: the reward rules, caps, attribution model and holding period.
        now: when rewards are recorded (recurring rules: invoices paid until then).
        batch_size: conversions per batch.

    Returns:
        Counts of conversions examined, rewards recorded (of which recurring, and
        capped), and records quarantined.
    """
    examined = recorded = quarantined = capped = 0
    while conversions := ledger.conversions_to_reward(batch_size):
        referrers = ledger.asks.contacts(c.referrer_id for c in conversions)
        history = ledger.fraud_history(conversions, referrers, program.fraud)
        flags = flags_for_batch(conversions, referrers, history, program.fraud)
        plan = _credits(ledger, conversions, program)
        first = ledger.first_payments(c.conversion_id for c in conversions)
        refused = list(plan.rejected)
        compute = partial(_conversion_rewards, conversions, plan, flags, first, program, refused)
        accrued = ledger.accrue_rewards(
            [c.conversion_id for c in conversions], plan.referrer_ids, program, compute, now
        )
        recorded += accrued.recorded
        capped += accrued.capped
        examined += len(conversions)
        quarantined += len(refused)
    recurring = _recurring_rewards(ledger, program, now, batch_size)
    run_logger().info(
        "rewarded %d conversions: %d new rewards, %d for invoices of recurring rules, "
        "%d held to a cap",
        examined,
        recorded,
        recurring.recorded,
        capped + recurring.capped,
    )
    return {
        "examined": examined,
        "rewards": recorded + recurring.recorded,
        "recurring": recurring.recorded,
        "capped": capped + recurring.capped,
        "quarantined": quarantined + recurring.quarantined,
    }


def _conversion_rewards(
    conversions: Sequence[Conversion],
    plan: _Credits,
    flags: Mapping[str, tuple[str, ...]],
    first: Mapping[str, Money],
    program: Program,
    refused: list[Rejected],
    book: RewardBook,
    unrewarded: set[str],
) -> tuple[list[Reward], list[Rejected]]:
    """The rewards of the still unrewarded ``conversions``, oldest first, through
    ``book`` (called by the ledger under its lock). Refusals are added to ``refused``."""
    rewards: list[Reward] = []
    for conversion in sorted(conversions, key=lambda c: (c.occurred_at, c.conversion_id)):
        credits = plan.by_conversion.get(conversion.conversion_id)
        if conversion.conversion_id not in unrewarded or credits is None:
            continue
        try:
            rewards += compute_rewards(
                conversion,
                credits,
                program,
                _flags_of(credits, flags.get(conversion.conversion_id, ())),
                book=book,
                first_payment=first.get(conversion.conversion_id),
            )
        except InputRejected as exc:
            refused.append(Rejected("ledger", exc.record, exc.field, exc.reason))
    return rewards, refused


def _invoice_rewards(
    conversions: Sequence[Conversion],
    plan: _Credits,
    flags: Mapping[str, tuple[str, ...]],
    invoices: Mapping[str, list[Invoice]],
    program: Program,
    refused: list[Rejected],
    book: RewardBook,
    _unrewarded: set[str],
) -> tuple[list[Reward], list[Rejected]]:
    """The recurring rules' rewards for the invoices of ``conversions`` (called by the
    ledger under its lock)."""
    rewards: list[Reward] = []
    for conversion in conversions:
        credits = plan.by_conversion.get(conversion.conversion_id)
        if credits is None:
            continue
        rewards += recurring_rewards(
            conversion,
            credits,
            invoices[conversion.conversion_id],
            program,
            _flags_of(credits, flags.get(conversion.conversion_id, ())),
            book=book,
        )
    return rewards, refused


def _recurring_rewards(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int
) -> Accrued:
    """The rewards of recurring rules for invoices paid since the last run: every
    conversion at a recurring rule's milestone young enough for its invoices to earn."""
    rules = [r for r in program.rewards if r.kind is RewardKind.RECURRING]
    if not rules:
        return Accrued()
    longest = max(r.months or 0 for r in rules)
    since = add_months(now, -longest) - LATE_INVOICES
    milestones = sorted({r.milestone for r in rules})
    total = Accrued()
    after: tuple[datetime, str] | None = None
    while page := ledger.recurring_conversions(milestones, since, after, batch_size):
        after = (page[-1].occurred_at, page[-1].conversion_id)
        invoices, unreadable = ledger.referee_invoices(page, now)
        refused = list(unreadable)
        for conversion_id, paid in invoices.items():
            foreign = [i for i in paid if i.amount.currency != program.currency]
            refused += [
                Rejected(
                    "stripe",
                    i.record,
                    "currency",
                    f"invoice in {i.amount.currency}, program pays in {program.currency}",
                )
                for i in foreign
            ]
            invoices[conversion_id] = [i for i in paid if i not in foreign]
        paying = [c for c in page if invoices.get(c.conversion_id)]
        if not paying and not refused:
            continue
        referrers = ledger.asks.contacts(c.referrer_id for c in paying)
        history = ledger.fraud_history(paying, referrers, program.fraud)
        flags = flags_for_batch(paying, referrers, history, program.fraud)
        plan = _credits(ledger, paying, program)

        compute = partial(
            _invoice_rewards, paying, plan, flags, invoices, program, [*refused, *plan.rejected]
        )
        accrued = ledger.accrue_rewards(
            [c.conversion_id for c in paying],
            plan.referrer_ids,
            program,
            compute,
            now,
            mark_rewarded=False,
        )
        total = Accrued(
            total.recorded + accrued.recorded,
            total.capped + accrued.capped,
            total.zeroed + accrued.zeroed,
            total.quarantined + accrued.quarantined,
        )
    return total


@dataclass(frozen=True)
class RoutePlan:
    auto_pay: list[str] = field(default_factory=list)
    approval: list[str] = field(default_factory=list)


@task(name="plan-routes", cache_policy=NO_CACHE)
def plan_routes(
    ledger: SqlLedger, program: Program, as_of: datetime, now: datetime, batch_size: int = 1000
) -> RoutePlan:
    """Send each reward past its holding period to automatic payout or to a person.

    Under the threshold and unflagged: payable, paid automatically. At or above the
    threshold, or with any fraud flag: awaiting approval. A referrer whose payout
    destination changed has every reward routed flagged ``payout_destination_changed``
    (payable ones again too) until a person approves one so flagged.

    Args:
        ledger: where rewards are read and moved.
        program: threshold and holding rules.
        as_of: the moment of decision.
        now: when moves are recorded.
        batch_size: rewards per batch.

    Returns:
        The reward ids to pay now and those that need approval.
    """
    plan = RoutePlan()
    after = ""
    while views := ledger.rewards_to_route(as_of, after, batch_size):
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
        # The ledger adds this flag on reading (the referrer's payout destination
        # changed); stored before the move, so the approver sees why it waits.
        routed = set(approval)
        changed = [
            v.reward.reward_id
            for v in views
            if PAYOUT_DESTINATION_CHANGED in v.reward.flags and v.reward.reward_id in routed
        ]
        ledger.add_reward_flag(changed, PAYOUT_DESTINATION_CHANGED, now)
        waiting = [RewardStatus.HOLDING, RewardStatus.PAYABLE]
        plan.auto_pay.extend(ledger.move_rewards(auto, waiting, RewardStatus.PAYABLE, now))
        plan.approval.extend(
            ledger.move_rewards(approval, waiting, RewardStatus.AWAITING_APPROVAL, now)
        )
    run_logger().info(
        "routed %d rewards to payout, %d to approval", len(plan.auto_pay), len(plan.approval)
    )
    return plan
