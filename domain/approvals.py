"""Approval rules for rewards at or above the threshold, or flagged.

Which rewards wait for a person at all (at or above ``approvals.auto_payout_threshold``,
500 EUR in ``config/program.yaml``, or flagged) is decided by
:func:`domain.rewards.route`. Who may decide is in :mod:`domain.approvers`; this module
says how many approvers a reward needs, what a decision must satisfy to count
(everything but the one-time code, which the use case verifies last, so a refused
decision spends no code), when a decision is final, and what it books.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from domain.approvers import Approver, Identity
from domain.errors import InvalidDecision
from domain.models import Decision, RewardStatus
from domain.money import Money
from domain.program import Program


def approvals_needed(amount: Money, program: Program) -> int:
    """Two different approvers at or above the second threshold, one otherwise."""
    return 2 if amount >= program.second_approver_threshold else 1


def status_after(decision: Decision, stage: int, stages_needed: int) -> RewardStatus:
    """Where a reward stands after the decision of ``stage``: a rejection at any stage
    closes it; an approval is final at the last stage needed, else the reward waits for
    the next approver."""
    if decision is Decision.REJECT:
        return RewardStatus.REJECTED
    return RewardStatus.APPROVED if stage >= stages_needed else RewardStatus.AWAITING_APPROVAL


def check_another_approver(approver_id: str, earlier_approver_ids: Collection[str]) -> None:
    """Four eyes: each stage is decided by an approver who has not decided this reward.

    Raises:
        InvalidDecision: ``approver_id`` already approved it.
    """
    if approver_id in earlier_approver_ids:
        raise InvalidDecision(
            f"approver {approver_id} already approved this reward; "
            "a second, different approver is needed"
        )


def agreed_amount(balance: Money, approved: Collection[Money]) -> Money:
    """What a fully approved reward pays: no more than every approver agreed to (an
    earlier stage's reduction stands even if a later approver left the amount blank),
    never more than its balance."""
    return min([balance, *approved])


def entry_after(
    status: RewardStatus, balance: Money, approved: Collection[Money]
) -> tuple[str, Money] | None:
    """The ledger entry a decision books, as (kind, signed amount), or None.

    A rejection cancels the whole balance; a final approval books the reduction down to
    :func:`agreed_amount` as an adjustment; a decision that leaves the reward waiting for
    another approver, or an approval of the whole balance, books nothing.

    Args:
        status: the reward's status after the decision (:func:`status_after`).
        balance: the reward's balance before the decision.
        approved: the amounts every approval so far agreed to, this one included.
    """
    if status is RewardStatus.REJECTED:
        change = -balance
        kind = "cancelled"
    elif status is RewardStatus.APPROVED:
        change = agreed_amount(balance, approved) - balance
        kind = "adjusted"
    else:
        return None
    return None if change.is_zero else (kind, change)


@dataclass(frozen=True, slots=True)
class CheckedDecision:
    """A decision that passed every rule but the one-time code (checked last)."""

    decision: Decision
    approver_id: str
    approver: str
    reason: str
    amount: Money


def check_decision(
    *,
    decision: Decision,
    approver: Approver | None,
    approver_identity: Identity,
    claimed_id: str,
    reason: str,
    adjusted_amount: str | None,
    reward_amount: Money,
    parties: Mapping[str, Identity],
    earlier_approver_ids: Collection[str],
) -> CheckedDecision:
    """Validate one decision on one reward, everything but the one-time code.

    Args:
        decision: approve or reject.
        approver: the registered approver the decision is made under, or None when the
            id names nobody.
        approver_identity: the approver's contact, email and account.
        claimed_id: the id as given, for the message when it names nobody.
        reason: why; required.
        adjusted_amount: a lower amount to pay, or None.
        reward_amount: the most this decision may release (the reward's balance, or
            less if an earlier approver lowered it).
        parties: "referrer" and "referee" to their identities.
        earlier_approver_ids: who already approved this reward.

    Raises:
        InvalidDecision: naming the rule broken.
    """
    if approver is None:
        raise InvalidDecision(f"no registered approver has the id {claimed_id!r}")
    if not approver.active:
        raise InvalidDecision(f"approver {approver.approver_id} is disabled")
    if not approver.enrolled:
        raise InvalidDecision(f"approver {approver.approver_id} has no one-time code enrolled")
    if not reason.strip():
        raise InvalidDecision("a decision needs a reason")
    for role, identity in parties.items():
        shared = approver_identity.shared_with(identity)
        if shared:
            raise InvalidDecision(
                f"approver {approver.approver_id} is party to this reward "
                f"(same {shared} as the {role}) and may not decide on it"
            )
    check_another_approver(approver.approver_id, earlier_approver_ids)
    amount = reward_amount
    if adjusted_amount:
        try:
            amount = Money.parse(adjusted_amount, reward_amount.currency)
        except ValueError as exc:
            raise InvalidDecision(f"adjusted amount: {exc}") from None
        if amount.amount_minor <= 0:
            raise InvalidDecision("adjusted amount must be above zero")
        if amount > reward_amount:
            raise InvalidDecision(f"adjusted amount {amount} is above the reward {reward_amount}")
    if decision is Decision.APPROVE:
        if approver.limit.currency != amount.currency:
            raise InvalidDecision(
                f"approver {approver.approver_id} has no limit in {amount.currency}"
            )
        if amount > approver.limit:
            raise InvalidDecision(
                f"{amount} is above the limit of approver {approver.approver_id} "
                f"({approver.limit}); approve a lower amount or ask another approver"
            )
    return CheckedDecision(
        decision=decision,
        approver_id=approver.approver_id,
        approver=approver.display_name,
        reason=reason.strip(),
        amount=amount,
    )
