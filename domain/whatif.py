"""What-if: the same history under other program rules.

Revenue ops change a rules file; before it applies, every stored conversion is run
through both the current and the proposed rules and the difference is reported: reward
count and cost per referrer type, how many would pay automatically or wait for a
person, and the program ROI. Nothing is written and nothing is paid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.errors import InputRejected
from domain.fraud import flags_for
from domain.models import Contact, Conversion, Milestone, Route
from domain.money import Money
from domain.program import Program
from domain.rewards import compute_rewards, route


@dataclass(frozen=True)
class Outcome:
    """What one rules file makes of the history."""

    rewards: int
    cost: Money
    by_type: Mapping[str, tuple[int, Money]]
    auto_pay: int
    approval: int
    refused: int
    revenue: Money

    @property
    def roi(self) -> Decimal | None:
        """(revenue - cost) / cost, or None when nothing is paid."""
        if self.cost.is_zero:
            return None
        return (Decimal(self.revenue.amount_minor) - Decimal(self.cost.amount_minor)) / Decimal(
            self.cost.amount_minor
        )


@dataclass(frozen=True)
class WhatIf:
    current: Outcome
    proposed: Outcome
    changed_rules: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cost_difference(self) -> Money:
        return self.proposed.cost - self.current.cost


def outcome(
    conversions: Sequence[Conversion], referrers: Mapping[str, Contact], program: Program
) -> Outcome:
    """The rewards ``program`` gives for ``conversions``, summed; revenue is the value of
    the conversions that reached the customer milestone in the program currency."""
    zero = Money.zero(program.currency)
    cost, revenue = zero, zero
    count = auto = approval = refused = 0
    by_type: dict[str, tuple[int, Money]] = {}
    for conversion in conversions:
        if (
            conversion.milestone is Milestone.CUSTOMER
            and conversion.amount is not None
            and conversion.amount.currency == program.currency
        ):
            revenue += conversion.amount
        referrer = referrers.get(conversion.referrer_id)
        if referrer is None:
            refused += 1
            continue
        flags = flags_for(conversion, referrer)
        try:
            rewards = compute_rewards(
                conversion, [(referrer, Decimal(1))], program, {referrer.contact_id: flags}
            )
        except InputRejected:
            refused += 1
            continue
        for reward in rewards:
            count += 1
            cost += reward.amount
            n, total = by_type.get(referrer.referrer_type.value, (0, zero))
            by_type[referrer.referrer_type.value] = (n + 1, total + reward.amount)
            # Routing as if the holding period were over: where would it go?
            where = route(
                reward.amount, reward.flags, reward.payable_at, program, reward.payable_at
            )
            auto += where is Route.AUTO_PAY
            approval += where is Route.APPROVAL
    return Outcome(count, cost, dict(sorted(by_type.items())), auto, approval, refused, revenue)


def compare(
    conversions: Sequence[Conversion],
    referrers: Mapping[str, Contact],
    current: Program,
    proposed: Program,
) -> WhatIf:
    """Both programs over the same history."""
    before = {r.id: r for r in current.rewards}
    after = {r.id: r for r in proposed.rewards}
    changed = sorted(
        rule_id
        for rule_id in before.keys() | after.keys()
        if before.get(rule_id) != after.get(rule_id)
    )
    return WhatIf(
        current=outcome(conversions, referrers, current),
        proposed=outcome(conversions, referrers, proposed),
        changed_rules=tuple(changed),
    )
