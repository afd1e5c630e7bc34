"""What-if: the same history under other program rules.

Revenue ops change a rules file; before it applies, every stored conversion is run
through both the current and the proposed rules and the difference is reported: reward
count and cost per referrer type and per referrer, how many would pay automatically or
wait for a person, and the program ROI. Nothing is written and nothing is paid.

Credit is replayed too: each conversion's stored touchpoints are split by each
program's own attribution model and half-life (:func:`domain.touchpoints.credits_for`,
as the cycle does), so a proposed change of model shows how the split between
referrers moves, referrer by referrer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from domain.errors import InputRejected
from domain.fraud import flags_for
from domain.models import Contact, Conversion, Milestone, Route
from domain.money import Money
from domain.program import Program
from domain.rewards import Invoice, RewardBook, compute_rewards, recurring_rewards, route
from domain.touchpoints import StoredTouchpoint, credits_for


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
    capped: int = 0  # rewards the caps took down to nothing
    # referrer id -> (rewards, cost): where the attribution model sends the money.
    by_referrer: Mapping[str, tuple[int, Money]] = field(default_factory=dict)

    @property
    def roi(self) -> Decimal | None:
        """(revenue - cost) / cost, or None when nothing is paid."""
        if self.cost.is_zero:
            return None
        return (Decimal(self.revenue.amount_minor) - Decimal(self.cost.amount_minor)) / Decimal(
            self.cost.amount_minor
        )


@dataclass(frozen=True, slots=True)
class ReferrerChange:
    """One referrer's rewards under both rules files (only referrers whose cost moves)."""

    referrer_id: str
    current: tuple[int, Money]
    proposed: tuple[int, Money]

    @property
    def difference(self) -> Money:
        return self.proposed[1] - self.current[1]


@dataclass(frozen=True)
class WhatIf:
    current: Outcome
    proposed: Outcome
    changed_rules: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cost_difference(self) -> Money:
        return self.proposed.cost - self.current.cost

    def referrer_changes(self) -> list[ReferrerChange]:
        """Every referrer whose rewards cost differently under the proposed rules,
        the largest move first (then by id, so the order is stable)."""
        zero = (0, self.current.cost - self.current.cost)
        before, after = self.current.by_referrer, self.proposed.by_referrer
        changes = [
            ReferrerChange(referrer_id, before.get(referrer_id, zero), after.get(referrer_id, zero))
            for referrer_id in before.keys() | after.keys()
        ]
        moved = [c for c in changes if c.current != c.proposed]
        return sorted(moved, key=lambda c: (-abs(c.difference.amount_minor), c.referrer_id))


def outcome(
    conversions: Sequence[Conversion],
    referrers: Mapping[str, Contact],
    program: Program,
    first_payments: Mapping[str, Money] | None = None,
    invoices: Mapping[str, Sequence[Invoice]] | None = None,
    touchpoints: Mapping[str, Sequence[StoredTouchpoint]] | None = None,
) -> Outcome:
    """The rewards ``program`` gives for ``conversions``, summed; revenue is the value of
    the conversions that reached the customer milestone in the program currency.

    The history is replayed in time order (conversions at their time, invoices at
    theirs) through one :class:`~domain.rewards.RewardBook`, so tiers count and caps
    fill as they would have. ``first_payments`` and ``invoices`` (by conversion id) feed
    percent-of-first-payment and recurring rules; without them those rules see only
    what a conversion read from Stripe carries itself.

    Each conversion's credit is split by ``program``'s attribution model and half-life
    over its ``touchpoints`` (by conversion id; the conversion's own code always counts,
    so without stored touches its code's owner takes it all). A conversion crediting a
    referrer missing from ``referrers`` is counted as refused, as the cycle refuses it.
    """
    zero = Money.zero(program.currency)
    cost, revenue = zero, zero
    count = auto = approval = refused = capped = 0
    by_type: dict[str, tuple[int, Money]] = {}
    by_referrer: dict[str, tuple[int, Money]] = {}
    model, half_life = program.attribution.model, program.attribution.half_life_days
    book = RewardBook(program)
    timeline: list[tuple[datetime, str, str, Conversion, Invoice | None]] = []
    for conversion in conversions:
        if (
            conversion.milestone is Milestone.CUSTOMER
            and conversion.amount is not None
            and conversion.amount.currency == program.currency
        ):
            revenue += conversion.amount
        timeline.append((conversion.occurred_at, conversion.conversion_id, "", conversion, None))
        for paid in (invoices or {}).get(conversion.conversion_id, ()):
            timeline.append((paid.paid_at, conversion.conversion_id, paid.ref, conversion, paid))
    refused_conversions: set[str] = set()
    for _, _, _, conversion, invoice in sorted(timeline, key=lambda t: t[:3]):
        referrer = referrers.get(conversion.referrer_id)
        weights = credits_for(
            conversion, (touchpoints or {}).get(conversion.conversion_id, ()), model, half_life
        )
        if referrer is None or any(r not in referrers for r, _ in weights):
            refused_conversions.add(conversion.conversion_id)
            continue
        credits: list[tuple[Contact, Decimal]] = [(referrers[r], w) for r, w in weights]
        # As in the cycle: a suspect conversion is suspect whoever is credited with it.
        suspect = flags_for(conversion, referrer)
        flags = {c.contact_id: suspect for c, _ in credits}
        try:
            if invoice is None:
                rewards = compute_rewards(
                    conversion,
                    credits,
                    program,
                    flags,
                    book=book,
                    first_payment=(first_payments or {}).get(conversion.conversion_id),
                )
            else:
                rewards = recurring_rewards(
                    conversion, credits, [invoice], program, flags, book=book
                )
        except InputRejected:
            refused_conversions.add(conversion.conversion_id)
            continue
        for reward in rewards:
            if reward.amount.is_zero:
                capped += 1
                continue
            count += 1
            cost += reward.amount
            kind = referrers[reward.referrer_id].referrer_type.value
            n, total = by_type.get(kind, (0, zero))
            by_type[kind] = (n + 1, total + reward.amount)
            n, total = by_referrer.get(reward.referrer_id, (0, zero))
            by_referrer[reward.referrer_id] = (n + 1, total + reward.amount)
            # Routing as if the holding period were over: where would it go?
            where = route(
                reward.amount, reward.flags, reward.payable_at, program, reward.payable_at
            )
            auto += where is Route.AUTO_PAY
            approval += where is Route.APPROVAL
    refused = len(refused_conversions)
    return Outcome(
        count,
        cost,
        dict(sorted(by_type.items())),
        auto,
        approval,
        refused,
        revenue,
        capped,
        dict(sorted(by_referrer.items())),
    )


def compare(
    conversions: Sequence[Conversion],
    referrers: Mapping[str, Contact],
    current: Program,
    proposed: Program,
    first_payments: Mapping[str, Money] | None = None,
    invoices: Mapping[str, Sequence[Invoice]] | None = None,
    touchpoints: Mapping[str, Sequence[StoredTouchpoint]] | None = None,
) -> WhatIf:
    """Both programs over the same history (see :func:`outcome` for the last three);
    each splits credit by its own attribution model."""
    before = {r.id: r for r in current.rewards}
    after = {r.id: r for r in proposed.rewards}
    changed = sorted(
        rule_id
        for rule_id in before.keys() | after.keys()
        if before.get(rule_id) != after.get(rule_id)
    )
    if current.reward_caps != proposed.reward_caps:
        changed.append("reward_caps")
    if current.attribution != proposed.attribution:
        changed.append("attribution")
    return WhatIf(
        current=outcome(conversions, referrers, current, first_payments, invoices, touchpoints),
        proposed=outcome(conversions, referrers, proposed, first_payments, invoices, touchpoints),
        changed_rules=tuple(changed),
    )
