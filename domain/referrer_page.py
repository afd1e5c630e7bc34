"""What a referrer's own page shows, from what the ledger holds about them.

The page tells a referrer nothing they did not already know about the people they
referred: each referral is shown by its number, the furthest step it reached and the
date of that step; never a name, company, email domain or amount of the referee.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from domain.models import Contact, Milestone, PayoutRailKind, RewardStatus
from domain.money import Money
from domain.program import RewardChoice
from domain.rewards import choose_rail

_STEP = {Milestone.LEAD: 1, Milestone.QUALIFIED: 2, Milestone.CUSTOMER: 3}

STEP_WORDS = {
    Milestone.LEAD: "Signed up",
    Milestone.QUALIFIED: "Qualified lead",
    Milestone.CUSTOMER: "Customer",
}
STATUS_WORDS = {
    RewardStatus.HOLDING: "In the holding period",
    RewardStatus.PAYABLE: "Ready to pay",
    RewardStatus.AWAITING_APPROVAL: "Being reviewed",
    RewardStatus.APPROVED: "Approved",
    RewardStatus.REJECTED: "Not approved",
    RewardStatus.PAID: "Paid",
    RewardStatus.CANCELLED: "Cancelled",
}
CHOICE_WORDS = {
    RewardChoice.CASH: "Cash, paid to your bank account",
    RewardChoice.ACCOUNT_CREDIT: "Credit on your account with us",
}
RAIL_WORDS = {
    PayoutRailKind.STRIPE_TRANSFER: "Bank transfer",
    PayoutRailKind.STRIPE_BALANCE: "Account credit",
    PayoutRailKind.LEDGER_ONLY: "Settled by our finance team",
}


@dataclass(frozen=True, slots=True)
class ConversionStep:
    """One conversion credited to the referrer: which referee (an opaque key, never
    shown), the step and when."""

    referee_key: str
    milestone: Milestone
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class RewardLine:
    reward_id: str
    milestone: Milestone
    amount: Money
    status: RewardStatus
    payable_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PayoutLine:
    reward_id: str
    amount: Money
    rail: PayoutRailKind
    status: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReferrerFacts:
    """Everything the ledger holds for one referrer's page (read by their id only)."""

    contact: Contact
    code: str | None
    clicks: int
    steps: tuple[ConversionStep, ...]
    rewards: tuple[RewardLine, ...]
    payouts: tuple[PayoutLine, ...]
    choice: RewardChoice | None


@dataclass(frozen=True, slots=True)
class Progress:
    """The referrer's funnel: human clicks, then referees who reached each step."""

    clicks: int
    signed_up: int
    qualified: int
    customers: int


@dataclass(frozen=True, slots=True)
class ReferralRow:
    number: int
    step: str
    on: date


@dataclass(frozen=True, slots=True)
class RewardRow:
    step: str
    amount: str
    status: str
    expected: str


@dataclass(frozen=True, slots=True)
class PayoutRowView:
    amount: str
    how: str
    status: str
    on: date


def progress(clicks: int, steps: Sequence[ConversionStep]) -> Progress:
    """Counts by the furthest step each referee reached (a customer also counts as
    signed up and qualified: the funnel is cumulative)."""
    furthest: dict[str, int] = {}
    for s in steps:
        furthest[s.referee_key] = max(furthest.get(s.referee_key, 0), _STEP[s.milestone])
    reached = list(furthest.values())
    return Progress(
        clicks=clicks,
        signed_up=len(reached),
        qualified=sum(1 for r in reached if r >= _STEP[Milestone.QUALIFIED]),
        customers=sum(1 for r in reached if r >= _STEP[Milestone.CUSTOMER]),
    )


def referrals(steps: Sequence[ConversionStep]) -> list[ReferralRow]:
    """One row per referee, numbered by when they first arrived: their furthest step
    and its date."""
    first: dict[str, datetime] = {}
    best: dict[str, ConversionStep] = {}
    for s in sorted(steps, key=lambda s: (s.occurred_at, s.referee_key)):
        first.setdefault(s.referee_key, s.occurred_at)
        held = best.get(s.referee_key)
        if held is None or _STEP[s.milestone] >= _STEP[held.milestone]:
            best[s.referee_key] = s
    order = sorted(first, key=lambda k: (first[k], k))
    return [
        ReferralRow(
            number=i,
            step=STEP_WORDS[best[k].milestone],
            on=best[k].occurred_at.date(),
        )
        for i, k in enumerate(order, start=1)
    ]


def expected_payment(line: RewardLine, payout_ready: bool, today: date) -> str:
    """When the referrer can expect a reward, in words.

    A reward in its holding period is payable on its ``payable_at`` date and paid by
    the first payout run after it (so "from <date>"); a payable or approved one goes
    with the next run; one being reviewed waits for a person. None of that moves
    until the referrer can be paid (``payout_ready``).
    """
    if line.status in (RewardStatus.PAID, RewardStatus.REJECTED, RewardStatus.CANCELLED):
        return "—"
    if not payout_ready:
        return "Once you set up how to get paid"
    if line.status is RewardStatus.HOLDING:
        on = max(line.payable_at.date(), today)
        return f"From {on.isoformat()}"
    if line.status is RewardStatus.AWAITING_APPROVAL:
        return "After a person reviews it"
    return "With the next payout run"


def reward_rows(rewards: Sequence[RewardLine], payout_ready: bool, today: date) -> list[RewardRow]:
    return [
        RewardRow(
            step=STEP_WORDS[r.milestone],
            amount=r.amount.format(),
            status=STATUS_WORDS[r.status],
            expected=expected_payment(r, payout_ready, today),
        )
        for r in sorted(rewards, key=lambda r: (r.created_at, r.reward_id), reverse=True)
    ]


def payout_rows(payouts: Sequence[PayoutLine]) -> list[PayoutRowView]:
    words = {"succeeded": "Sent", "pending": "On its way", "failed": "Failed, will be retried"}
    return [
        PayoutRowView(
            amount=p.amount.format(),
            how=RAIL_WORDS[p.rail],
            status=words.get(p.status, p.status),
            on=p.updated_at.date(),
        )
        for p in sorted(payouts, key=lambda p: (p.updated_at, p.reward_id), reverse=True)
    ]


def needs_payout_setup(
    contact: Contact, available: Collection[PayoutRailKind], choice: RewardChoice | None
) -> bool:
    """Whether the referrer has no way to be paid yet (their rewards wait for one):
    no rail of :func:`domain.rewards.choose_rail` fits them."""
    return choose_rail(contact, available, choice) is None
