"""Computing rewards from conversions, and deciding where each one goes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.fraud import flags_for_batch
from domain.models import Contact, Conversion, Rejected
from domain.program import Program, RewardKind
from domain.rewards import (
    add_months,
)
from domain.touchpoints import credits_for
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger
from tasks.use_cases.rewards import (
    Accrued,
    RoutePlan,
    accrue_conversions,
    accrue_invoices,
    route_rewards,
)

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


def _credits(
    ledger: SqlLedger,
    conversions: Sequence[Conversion],
    program: Program,
    read: Mapping[str, Contact],
) -> _Credits:
    """Each conversion's (referrer, weight) under the program's attribution model, from
    the touchpoints of its referee up to the conversion (its own code always one).
    ``read``: contacts the caller has already read (the batch's referrers), not read
    again."""
    touches = ledger.touchpoints.touchpoints_for(conversions)
    weights = {
        c.conversion_id: credits_for(
            c,
            touches.get(c.conversion_id, []),
            program.attribution.model,
            program.attribution.half_life_days,
        )
        for c in conversions
    }
    credited = {r for w in weights.values() for r, _ in w}
    contacts = {r: read[r] for r in credited if r in read}
    contacts.update(ledger.asks.contacts(credited - read.keys()))
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


@task(name="compute-rewards", cache_policy=NO_CACHE)
def compute_new_rewards(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int = 1000
) -> dict[str, int]:
    """Compute the rewards of every conversion not yet rewarded, with fraud flags, and
    those of the invoices recurring rules pay on.

    One reward per (conversion, rule, referrer), and per invoice for recurring rules:
    computing again adds nothing. Credit is split by the program's attribution model
    over the referee's touchpoints; tiers and caps are read and written under the
    ledger's per-referrer lock, in one unit of work per batch
    (:mod:`tasks.use_cases.rewards`).

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
    while conversions := ledger.rewards.conversions_to_reward(batch_size):
        referrers = ledger.asks.contacts(c.referrer_id for c in conversions)
        history = ledger.fraud.fraud_history(conversions, referrers, program.fraud)
        flags = flags_for_batch(conversions, referrers, history, program.fraud)
        plan = _credits(ledger, conversions, program, referrers)
        first = ledger.reward_rules.first_payments(c.conversion_id for c in conversions)
        accrued = accrue_conversions(
            ledger, conversions, plan.by_conversion, flags, first, program, plan.rejected, now
        )
        recorded += accrued.recorded
        capped += accrued.capped
        examined += len(conversions)
        quarantined += accrued.refused
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
    while page := ledger.reward_rules.recurring_conversions(milestones, since, after, batch_size):
        after = (page[-1].occurred_at, page[-1].conversion_id)
        invoices, unreadable = ledger.reward_rules.referee_invoices(page, now)
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
        history = ledger.fraud.fraud_history(paying, referrers, program.fraud)
        flags = flags_for_batch(paying, referrers, history, program.fraud)
        plan = _credits(ledger, paying, program, referrers)
        total += accrue_invoices(
            ledger,
            paying,
            plan.by_conversion,
            flags,
            invoices,
            program,
            [*refused, *plan.rejected],
            now,
        )
    return total


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
    plan = route_rewards(ledger, program, as_of, now, batch_size)
    run_logger().info(
        "routed %d rewards to payout, %d to approval", len(plan.auto_pay), len(plan.approval)
    )
    return plan
