"""Computing rewards from conversions, and deciding where each one goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.errors import InputRejected
from domain.fraud import flags_for
from domain.models import Rejected, Reward, RewardStatus, Route
from domain.program import Program
from domain.rewards import compute_rewards, route
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger


@task(name="compute-rewards", cache_policy=NO_CACHE)
def compute_new_rewards(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int = 1000
) -> dict[str, int]:
    """Compute the rewards of every conversion not yet rewarded, with fraud flags.

    One reward per (conversion, rule, referrer): computing again adds nothing.

    Args:
        ledger: where conversions are read and rewards (with accrual entries) stored.
        program: the reward rules and holding period.
        now: when rewards are recorded.
        batch_size: conversions per batch.

    Returns:
        Counts of conversions examined, rewards recorded and conversions quarantined.
    """
    examined = recorded = quarantined = 0
    while conversions := ledger.conversions_to_reward(batch_size):
        referrers = ledger.contacts(c.referrer_id for c in conversions)
        rewards: list[Reward] = []
        rejected: list[Rejected] = []
        for conversion in conversions:
            referrer = referrers.get(conversion.referrer_id)
            if referrer is None:
                rejected.append(
                    Rejected("ledger", conversion.source_event, "referrer_id", "unknown referrer")
                )
                continue
            try:
                rewards += compute_rewards(
                    conversion,
                    [(referrer, Decimal(1))],
                    program,
                    {referrer.contact_id: flags_for(conversion, referrer)},
                )
            except InputRejected as exc:
                rejected.append(Rejected("ledger", exc.record, exc.field, exc.reason))
        recorded += ledger.record_rewards(
            [c.conversion_id for c in conversions], rewards, rejected, now
        )
        examined += len(conversions)
        quarantined += len(rejected)
    run_logger().info("rewarded %d conversions: %d new rewards", examined, recorded)
    return {"examined": examined, "rewards": recorded, "quarantined": quarantined}


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
    threshold, or with any fraud flag: awaiting approval.

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
        waiting = [RewardStatus.HOLDING, RewardStatus.PAYABLE]
        plan.auto_pay.extend(ledger.move_rewards(auto, waiting, RewardStatus.PAYABLE, now))
        plan.approval.extend(
            ledger.move_rewards(approval, waiting, RewardStatus.AWAITING_APPROVAL, now)
        )
    run_logger().info(
        "routed %d rewards to payout, %d to approval", len(plan.auto_pay), len(plan.approval)
    )
    return plan
