"""Approval rules for rewards at or above the threshold, or flagged."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from domain.errors import InvalidDecision
from domain.models import Decision
from domain.money import Money
from domain.program import Program


def approvals_needed(amount: Money, program: Program) -> int:
    """Two different approvers at or above the second threshold, one otherwise."""
    return 2 if amount >= program.second_approver_threshold else 1


@dataclass(frozen=True, slots=True)
class CheckedDecision:
    decision: Decision
    approver: str
    reason: str
    amount: Money


def check_decision(
    *,
    decision: Decision,
    approver: str,
    reason: str,
    adjusted_amount: str | None,
    reward_amount: Money,
    earlier_approvers: Collection[str],
    conflicted: Collection[str],
) -> CheckedDecision:
    """Validate one approver's decision on one reward.

    Raises:
        InvalidDecision: no approver, a rejection without a reason, an amount that is
            not above zero or is above the reward, an approver who already approved
            this reward, or one who is the referrer or referee of it.
    """
    who = approver.strip()
    if not who:
        raise InvalidDecision("approver is required")
    if decision is Decision.REJECT and not reason.strip():
        raise InvalidDecision("a rejection needs a reason")
    if who.casefold() in {c.casefold() for c in conflicted}:
        raise InvalidDecision(f"{who} is party to this referral and may not decide on it")
    if who.casefold() in {a.casefold() for a in earlier_approvers}:
        raise InvalidDecision(f"{who} already approved this reward; a second approver is needed")
    amount = reward_amount
    if adjusted_amount not in (None, ""):
        assert adjusted_amount is not None
        try:
            amount = Money.parse(adjusted_amount, reward_amount.currency)
        except ValueError as exc:
            raise InvalidDecision(f"adjusted amount: {exc}") from None
        if amount.amount_minor <= 0:
            raise InvalidDecision("adjusted amount must be above zero")
        if amount > reward_amount:
            raise InvalidDecision(f"adjusted amount {amount} is above the reward {reward_amount}")
    return CheckedDecision(decision=decision, approver=who, reason=reason.strip(), amount=amount)
