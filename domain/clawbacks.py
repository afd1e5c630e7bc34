"""Clawbacks and reconciliation: what a referee's refund, chargeback or churn takes back
from a reward, how a referrer's debt is netted, and how the ledger is checked against
the payment provider.

Pure rules, no I/O. This module answers "where does a refund claw back a paid reward":
the use case (``tasks.use_cases.clawbacks.apply_payment_loss``) reads the facts through
the ledger's ``clawbacks`` and ``reversals`` stores in one unit of work and asks, in
order: :func:`applies` (is the cause switched on), :func:`payments_lost` and
:func:`own_payment` (which payment, for how much), :func:`waits_for_rewards` (defer),
:func:`reach` (which rewards, inside the window), :func:`decide_clawback` (cancel or
claw back, how much), :func:`clawback_of`, :func:`clawback_notice` and
:func:`reversal_for` (what to write). What a reward's loss does:

* **Unpaid** (holding, payable, awaiting approval, approved): the reward is cancelled;
  what is left of it is booked ``cancelled``. Any refund cancels it, partial or not.
* **Paid**: the prorated share of what reached the referrer is booked ``clawed_back``
  (the referrer owes it); the ledger then asks the provider to reverse it.
* **Twice**: refunds carry Stripe's cumulative ``amount_refunded``, so a second partial
  refund claws back only what its new total adds; a late or repeated event adds nothing.
* **Never more than was paid**: the share of a payment lost is capped at the whole
  payment, and all clawbacks of a reward together at what reached the referrer.
* **The payment that earned it**: a reward follows the payment that earned it
  (:func:`rewards_reached`). A conversion's rewards follow its first payment; a
  recurring rule's reward for a later invoice follows that invoice, whose refund or
  dispute takes it back by the same rules, measured from when the invoice was paid.

Prorating uses exact integer arithmetic (:func:`domain.money.allocate`, the
largest-remainder method): the amount taken back for a cumulative loss depends on that
total only, so partial refunds add up to exactly what one refund of the sum would take.

A debt (a negative reward balance: clawed back, not recovered at the provider) is
settled from the referrer's next payout (:func:`net_against_debts`): the payout is the
reward's balance minus the debt, never below zero.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

from domain.errors import DomainError, ReferralError
from domain.models import PayoutRailKind, RewardStatus, derived_id
from domain.money import Money, allocate
from domain.program import Clawbacks

# -- causes ---------------------------------------------------------------------------


class ClawbackCause(StrEnum):
    """What the referee did that takes a reward back."""

    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CHURN = "churn"


def applies(rules: Clawbacks, cause: ClawbackCause) -> bool:
    """Whether the program takes rewards back for ``cause`` at all."""
    return {
        ClawbackCause.REFUND: rules.on_refund,
        ClawbackCause.CHARGEBACK: rules.on_chargeback,
        ClawbackCause.CHURN: rules.on_churn,
    }[cause]


def within_window(conversion_at: datetime, loss_at: datetime, rules: Clawbacks) -> bool:
    """Whether a loss at ``loss_at`` still counts for a conversion at ``conversion_at``.

    One older than ``window_days`` after the conversion changes nothing.
    """
    return loss_at - conversion_at <= timedelta(days=rules.window_days)


@dataclass(frozen=True, slots=True)
class PaymentLoss:
    """What one provider event says the referee took back.

    Attributes:
        event_id: the provider's event id; a reward is clawed back once per event.
        cause: refund, chargeback or churn.
        occurred_at: when it happened (aware UTC); the window is measured to it.
        payment_refs: ids of the payment it concerns (charge, payment intent,
            invoice), looked up among the payments behind conversions.
        customer_ref: the referee's customer id: churn concerns every payment of it.
        payment_key: what the losses of one payment add up under (the charge id; the
            subscription id for churn).
        payment_minor: the payment's amount, when the event gives it (a refund does).
        lost_minor: refund: ``amount_refunded`` so far (cumulative); chargeback: the
            disputed amount; churn: 0 (it takes everything).
    """

    event_id: str
    cause: ClawbackCause
    occurred_at: datetime
    payment_refs: tuple[str, ...]
    customer_ref: str | None
    payment_key: str
    payment_minor: int | None
    lost_minor: int


def rewards_reached(
    cause: ClawbackCause,
    of_conversions: Mapping[str, str],
    earned_alone: Collection[str],
    by_own_payment: Iterable[str],
) -> dict[str, str | None]:
    """Which rewards one loss reaches, and through which payment.

    A conversion's rewards are earned by its first payment, except those a payment of
    their own earned (a recurring rule's reward for one invoice): a refund or dispute
    of the first payment leaves those alone, and one of a later invoice reaches only
    the rewards that invoice earned. Churn ends the subscription, and with it every
    reward of the conversion.

    Args:
        cause: refund, chargeback or churn.
        of_conversions: reward id -> conversion id, for every reward of the
            conversions whose first payment (for churn: whose customer) the loss names.
        earned_alone: the rewards, among those, that a payment of their own earned.
        by_own_payment: the rewards whose own payment the loss names.

    Returns:
        reward id -> the conversion whose first payment the loss reaches it through,
        or ``None`` when it is reached through its own payment.
    """
    reached: dict[str, str | None] = {
        reward_id: conversion_id
        for reward_id, conversion_id in of_conversions.items()
        if cause is ClawbackCause.CHURN or reward_id not in earned_alone
    }
    for reward_id in by_own_payment:
        if cause is not ClawbackCause.CHURN or reward_id not in reached:
            reached[reward_id] = None
    return reached


# -- deciding ---------------------------------------------------------------------------

UNPAID = frozenset(
    {
        RewardStatus.HOLDING,
        RewardStatus.PAYABLE,
        RewardStatus.AWAITING_APPROVAL,
        RewardStatus.APPROVED,
    }
)


@dataclass(frozen=True, slots=True)
class RewardPosition:
    """What the ledger says about one reward, for a clawback decision.

    Attributes:
        reward_id: the reward.
        status: its status now.
        balance: what the ledger still owes on it (negative: the referrer owes).
        settled: what reached the referrer: paid out, or used to settle a debt.
        clawed: taken back already, for every cause.
        payment_clawed: taken back already for the event's payment (``payment_key``).
        payment_refunded: the highest ``amount_refunded`` seen for that payment.
        payment_disputed: the disputed amounts of that payment seen so far.
    """

    reward_id: str
    status: RewardStatus
    balance: Money
    settled: Money
    clawed: Money
    payment_clawed: Money
    payment_refunded: int = 0
    payment_disputed: int = 0


@dataclass(frozen=True, slots=True)
class ClawbackDecision:
    """What one loss does to one reward.

    Attributes:
        reward_id: the reward.
        cancel: taken from the unpaid balance (a ``cancelled`` entry).
        claw_back: taken back from what was settled (a ``clawed_back`` entry).
        cancels_reward: the reward moves to cancelled.
        refunded_minor: the payment's refunded total after this loss.
        disputed_minor: the payment's disputed total after this loss.
    """

    reward_id: str
    cancel: Money
    claw_back: Money
    cancels_reward: bool
    refunded_minor: int
    disputed_minor: int

    @property
    def moves_money(self) -> bool:
        return not (self.cancel.is_zero and self.claw_back.is_zero)


def prorate(amount: Money, part: int, whole: int) -> Money:
    """``part``/``whole`` of ``amount``, exactly, rounded by the largest remainder.

    ``part`` is capped at ``whole``, so the result is never more than ``amount``.
    A zero ``whole`` (a payment of nothing) counts as lost entirely once ``part`` is
    positive.
    """
    if amount.amount_minor <= 0 or part <= 0:
        return Money.zero(amount.currency)
    if whole <= 0 or part >= whole:
        return amount
    return Money(allocate(amount.amount_minor, [part, whole - part])[0], amount.currency)


def decide_clawback(
    position: RewardPosition, loss: PaymentLoss, payment_minor: int
) -> ClawbackDecision:
    """What ``loss`` takes from the reward in ``position``.

    Args:
        position: the reward's ledger position (see :class:`RewardPosition`).
        loss: the refund, chargeback or churn (already known to be in the window).
        payment_minor: the amount of the payment the loss concerns (ignored for churn).

    Returns:
        The decision; ``moves_money`` is False when there is nothing (left) to take.
    """
    currency = position.balance.currency
    refunded, disputed = position.payment_refunded, position.payment_disputed
    if loss.cause is ClawbackCause.REFUND:
        refunded = max(refunded, loss.lost_minor)
    elif loss.cause is ClawbackCause.CHARGEBACK:
        disputed += max(loss.lost_minor, 0)
    room = max(position.settled.amount_minor - position.clawed.amount_minor, 0)
    if loss.cause is ClawbackCause.CHURN:
        lost = True
        wanted = room
    else:
        lost_minor = refunded + disputed
        lost = lost_minor > 0
        target = prorate(position.settled, lost_minor, payment_minor)
        wanted = max(target.amount_minor - position.payment_clawed.amount_minor, 0)
    cancels = lost and position.status in UNPAID
    cancel = max(position.balance.amount_minor, 0) if cancels else 0
    return ClawbackDecision(
        reward_id=position.reward_id,
        cancel=Money(cancel, currency),
        claw_back=Money(min(wanted, room), currency),
        cancels_reward=cancels,
        refunded_minor=refunded,
        disputed_minor=disputed,
    )


def recoverable(claw_back: Money, paid_out: Money, already_reversed: Money) -> Money:
    """How much of ``claw_back`` to ask the provider to reverse from one payout.

    A reversal cannot take more than what remains of the payout after the reversals
    already made or under way; the rest stays a debt, netted from a later payout.
    """
    left = paid_out.amount_minor - already_reversed.amount_minor
    return Money(max(min(claw_back.amount_minor, left), 0), claw_back.currency)


def net_against_debts(
    balance: Money, debts: Sequence[tuple[str, Money]]
) -> tuple[Money, list[tuple[str, Money]]]:
    """Split a payout between the referrer's debts and what is actually paid.

    Args:
        balance: what the reward being paid still owes the referrer.
        debts: (reward id, amount owed) of the referrer's rewards in debt, oldest
            first; debts in another currency, and non-positive ones, are skipped.

    Returns:
        What to pay (``balance`` minus the debts settled, never below zero) and the
        debts settled out of it, (reward id, amount), oldest first.
    """
    left = max(balance.amount_minor, 0)
    settled: list[tuple[str, Money]] = []
    for reward_id, owed in debts:
        if left == 0:
            break
        if owed.currency != balance.currency or owed.amount_minor <= 0:
            continue
        take = min(left, owed.amount_minor)
        settled.append((reward_id, Money(take, balance.currency)))
        left -= take
    return Money(left, balance.currency), settled


# -- reversals --------------------------------------------------------------------------


class ReversalOutcome(StrEnum):
    """How a reversal went at the provider.

    ``INSUFFICIENT_FUNDS``: the connected balance cannot cover it; the referrer's debt
    stays, to be netted from their next payout (retrying would not help).
    """

    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    FAILED = "failed"
    INSUFFICIENT_FUNDS = "insufficient_funds"


@dataclass(frozen=True, slots=True)
class ReversalInstruction:
    """What a rail needs to take back part of one payout, exactly once.

    Attributes:
        reversal_id: the ledger's reversal id.
        reward_id: the reward (the only id that goes into the provider's metadata).
        payout_id: the payout being reversed.
        amount: how much to take back (positive).
        rail: the payout's rail.
        idempotency_key: stored before the first call, e.g.
            ``reward:<id>:reversal:<event id>``.
        destination: where the payout went (connected account or customer id).
        payout_ref: the provider's id of the payout (the transfer id).
        key_created_at: when the key was stored (keys expire at the provider).
    """

    reversal_id: str
    reward_id: str
    payout_id: str
    amount: Money
    rail: PayoutRailKind
    idempotency_key: str
    destination: str | None = None
    payout_ref: str | None = None
    key_created_at: datetime | None = None

    @staticmethod
    def key_for(reward_id: str, event_id: str) -> str:
        """The idempotency key of the reversal a provider event causes."""
        return f"reward:{reward_id}:reversal:{event_id}"


@dataclass(frozen=True, slots=True)
class ReversalResult:
    reversal_id: str
    outcome: ReversalOutcome
    provider_ref: str | None = None
    error: str | None = None


@runtime_checkable
class ReversalRail(Protocol):
    """A payment rail that can also take money back (a :class:`PaymentRail` too).

    ``reverse`` returns one result per instruction and sends each instruction's
    idempotency key, so calling it again after a crash reverses nothing twice.
    """

    kind: PayoutRailKind

    def reverse(self, instructions: Sequence[ReversalInstruction]) -> list[ReversalResult]: ...


# -- applying one loss ----------------------------------------------------------------


class ClawbackConflict(DomainError):
    """A reward changed under a clawback (e.g. a racing decision); apply it again."""


class LossStatus(StrEnum):
    """What became of one provider event."""

    APPLIED = "applied"  # booked (maybe nothing left to take); the event is processed
    IGNORED = "ignored"  # the cause is switched off, or past every conversion's window
    UNKNOWN_PAYMENT = "unknown_payment"  # no conversion or reward has the payment yet
    DEFERRED = "deferred"  # a payout under way, or rewards not computed yet: retry later
    ALREADY_PROCESSED = "already_processed"


@dataclass(frozen=True, slots=True)
class LossApplied:
    """The outcome of applying one loss (``tasks.use_cases.clawbacks.apply_payment_loss``).

    Attributes:
        event_id: the provider event.
        status: see :class:`LossStatus`.
        decisions: what was booked, per reward (including decisions taking nothing).
        reversals: reversal rows written (to send to the provider).
        outside_window: rewards the event reached too late to change.
    """

    event_id: str
    status: LossStatus
    decisions: tuple[ClawbackDecision, ...] = ()
    reversals: int = 0
    outside_window: int = 0


@dataclass(frozen=True, slots=True)
class ConversionPayment:
    """One id of a conversion's first payment, as the ledger stores it.

    Attributes:
        conversion_id: the conversion the payment is behind.
        amount_minor: the payment's amount as stored with the conversion.
        occurred_at: when the conversion happened (the window starts there).
        rewarded: the conversion's rewards are computed (maybe none).
    """

    conversion_id: str
    amount_minor: int
    occurred_at: datetime
    rewarded: bool


@dataclass(frozen=True, slots=True)
class RewardPayment:
    """The payment that earned one reward by itself (a recurring rule's invoice).

    Attributes:
        reward_id: the reward.
        referrer_id: its referrer (locked before the clawback is booked).
        conversion_id: its conversion.
        amount_minor: the invoice's amount paid.
        paid_at: when it was paid (the clawback window starts there).
    """

    reward_id: str
    referrer_id: str
    conversion_id: str
    amount_minor: int
    paid_at: datetime


@dataclass(frozen=True, slots=True)
class LostPayment:
    """The payment a loss takes back, through which it reaches rewards.

    Attributes:
        conversion_id: the conversion behind the payment.
        made_at: the conversion's time, or the invoice's: the window starts there.
        amount_minor: the payment's amount (the event's own figure when it has one).
        rewarded: the conversion's rewards are computed (maybe none).
    """

    conversion_id: str
    made_at: datetime
    amount_minor: int
    rewarded: bool


def payments_lost(loss: PaymentLoss, stored: Iterable[ConversionPayment]) -> dict[str, LostPayment]:
    """Conversion id -> the first payment ``loss`` takes back from it.

    Aliases of one payment (its charge, intent, invoice) share its amount; the event's
    own figure wins when it has one, else the largest stored figure.
    """
    found: dict[str, LostPayment] = {}
    for p in stored:
        amount = loss.payment_minor if loss.payment_minor is not None else p.amount_minor
        known = found.get(p.conversion_id)
        if known is None or amount > known.amount_minor:
            found[p.conversion_id] = LostPayment(p.conversion_id, p.occurred_at, amount, p.rewarded)
    return found


def own_payment(paid: RewardPayment, loss: PaymentLoss) -> LostPayment:
    """The payment that earned one reward alone (its rewards exist: it named them)."""
    amount = loss.payment_minor if loss.payment_minor is not None else paid.amount_minor
    return LostPayment(paid.conversion_id, paid.paid_at, amount, True)


def waits_for_rewards(
    payments: Mapping[str, LostPayment], loss: PaymentLoss, rules: Clawbacks
) -> bool:
    """Whether a conversion the loss reaches in time has no rewards computed yet: the
    loss waits for them (it would otherwise miss rewards about to be accrued)."""
    return any(
        not p.rewarded
        for p in payments.values()
        if within_window(p.made_at, loss.occurred_at, rules)
    )


@dataclass(frozen=True, slots=True)
class Reach:
    """The rewards one loss reaches.

    Attributes:
        in_window: reward id -> (referrer id, the payment it is reached through), for
            the rewards whose payment is recent enough to change.
        late: how many rewards it reached outside the window.
    """

    in_window: dict[str, tuple[str, LostPayment]]
    late: int

    @property
    def referrers(self) -> list[str]:
        """The referrers of the rewards in the window (to lock before booking)."""
        return [referrer for referrer, _ in self.in_window.values()]


def reach(
    loss: PaymentLoss,
    rules: Clawbacks,
    payments: Mapping[str, LostPayment],
    rewards: Mapping[str, tuple[str, str]],
    earned_alone: Collection[str],
    own: Mapping[str, RewardPayment],
) -> Reach:
    """Which rewards ``loss`` reaches (:func:`rewards_reached`) and which of them are in
    the window, measured from the payment each is reached through.

    Args:
        loss: the refund, chargeback or churn.
        rules: the program's ``clawbacks`` section.
        payments: conversion id -> the payment lost (:func:`payments_lost`).
        rewards: reward id -> (referrer id, conversion id), for the rewards of those
            conversions.
        earned_alone: those rewards that a payment of their own earned.
        own: reward id -> its own payment, for the rewards whose own payment the loss
            names.
    """
    reached = rewards_reached(
        loss.cause, {r: conv for r, (_, conv) in rewards.items()}, earned_alone, own
    )
    through: dict[str, tuple[str, LostPayment]] = {}
    for reward_id, conversion_id in reached.items():
        if conversion_id is not None:
            through[reward_id] = (rewards[reward_id][0], payments[conversion_id])
        else:
            paid = own[reward_id]
            through[reward_id] = (paid.referrer_id, own_payment(paid, loss))
    in_window = {
        r: (referrer, p)
        for r, (referrer, p) in through.items()
        if within_window(p.made_at, loss.occurred_at, rules)
    }
    return Reach(in_window, len(through) - len(in_window))


@dataclass(frozen=True, slots=True)
class Clawback:
    """What the ledger records of one loss on one reward (a ``clawbacks`` row, and the
    ``cancelled`` and ``clawed_back`` entries whose ref is its id).

    Attributes:
        clawback_id: fixed per (reward, event): applying an event twice records once.
        reward_id: the reward.
        event_id: the provider event.
        cause: refund, chargeback or churn.
        payment_key: what the losses of one payment add up under.
        payment_minor: the payment's amount (never negative).
        refunded_minor: the payment's refunded total after this loss.
        disputed_minor: the payment's disputed total after this loss.
        cancel: taken from the unpaid balance.
        claw_back: taken back from what was settled.
        status_before: the reward's status when the loss was applied.
        occurred_at: when the loss happened.
    """

    clawback_id: str
    reward_id: str
    event_id: str
    cause: ClawbackCause
    payment_key: str
    payment_minor: int
    refunded_minor: int
    disputed_minor: int
    cancel: Money
    claw_back: Money
    status_before: RewardStatus
    occurred_at: datetime


def clawback_of(
    loss: PaymentLoss, position: RewardPosition, decision: ClawbackDecision, payment: LostPayment
) -> Clawback:
    """The record of ``decision`` (see :class:`Clawback`)."""
    return Clawback(
        clawback_id=derived_id("clawback", position.reward_id, loss.event_id),
        reward_id=position.reward_id,
        event_id=loss.event_id,
        cause=loss.cause,
        payment_key=loss.payment_key,
        payment_minor=max(payment.amount_minor, 0),
        refunded_minor=decision.refunded_minor,
        disputed_minor=decision.disputed_minor,
        cancel=decision.cancel,
        claw_back=decision.claw_back,
        status_before=position.status,
        occurred_at=loss.occurred_at,
    )


_CAUSE_TEXT = {
    ClawbackCause.REFUND: "the referred customer's payment was refunded",
    ClawbackCause.CHARGEBACK: "the referred customer's payment was disputed",
    ClawbackCause.CHURN: "the referred customer cancelled within the program's window",
}


@dataclass(frozen=True, slots=True)
class ClawbackNotice:
    """The referrer's ``reward_clawed_back`` notification.

    Attributes:
        notification_id: fixed per clawback, so it is queued once.
        contact_id: the referrer.
        reward_id: the reward.
        data: the template's fields: amount taken, cause, whether after payout.
    """

    notification_id: str
    contact_id: str
    reward_id: str
    data: dict[str, str]


def clawback_notice(clawback: Clawback, referrer_id: str) -> ClawbackNotice | None:
    """Tell the referrer what the referee's refund, dispute or churn took back, and why
    (a reward that shrinks or is taken back unexplained costs the program trust);
    ``None`` when nothing was taken."""
    taken = clawback.cancel.amount_minor + clawback.claw_back.amount_minor
    if taken <= 0:
        return None
    return ClawbackNotice(
        notification_id=derived_id("notice", clawback.clawback_id),
        contact_id=referrer_id,
        reward_id=clawback.reward_id,
        data={
            "amount": Money(taken, clawback.cancel.currency).format(),
            "cause": _CAUSE_TEXT[clawback.cause],
            "after_payout": "yes" if clawback.claw_back.amount_minor else "no",
        },
    )


@dataclass(frozen=True, slots=True)
class PaidPayout:
    """The payout that settled a reward, and what reversals already take from it.

    Attributes:
        payout_id: the ledger's payout id.
        rail: the rail it went through.
        destination: where it went (connected account or customer id).
        provider_ref: the provider's id of it (the transfer id).
        amount: what it paid.
        reversed: reversals pending or succeeded against it.
    """

    payout_id: str
    rail: PayoutRailKind
    destination: str | None
    provider_ref: str | None
    amount: Money
    reversed: Money


def reversal_for(clawback: Clawback, payout: PaidPayout | None) -> ReversalInstruction | None:
    """The reversal to ask of the provider for ``clawback``, if any.

    None when nothing was clawed back, when no payout settled the reward (it was
    settled by netting alone: the debt is netted, nothing to reverse), when the payout
    is in another currency, or when reversals already take the whole payout; the rest
    of a claw-back stays a debt, netted from a later payout (:func:`recoverable`).
    """
    if clawback.claw_back.is_zero or payout is None:
        return None
    if payout.amount.currency != clawback.claw_back.currency:
        return None
    amount = recoverable(clawback.claw_back, payout.amount, payout.reversed)
    if amount.is_zero:
        return None
    return ReversalInstruction(
        reversal_id=derived_id("reversal", clawback.clawback_id),
        reward_id=clawback.reward_id,
        payout_id=payout.payout_id,
        amount=amount,
        rail=payout.rail,
        idempotency_key=ReversalInstruction.key_for(clawback.reward_id, clawback.event_id),
        destination=payout.destination,
        payout_ref=payout.provider_ref,
    )


# -- reconciliation ---------------------------------------------------------------------


class MovementKind(StrEnum):
    PAYOUT = "payout"  # a transfer, or a customer balance credit
    REVERSAL = "reversal"  # a transfer reversal, or a customer balance debit


@dataclass(frozen=True, slots=True)
class Movement:
    """One movement of a reward's money, as the ledger or the provider records it.

    Attributes:
        kind: payout or reversal.
        reward_id: the reward (at the provider: its ``reward_id`` metadata).
        ref: the provider's object id (``tr_...``, ``trr_...``, ``cbtxn_...``); in the
            ledger, the provider reference it stored (None while not settled).
        amount: how much moved, positive.
        ledger_id: the ledger's payout or reversal id (ledger side only).
        status: the ledger's status of it (ledger side only).
    """

    kind: MovementKind
    reward_id: str
    ref: str | None
    amount: Money
    ledger_id: str | None = None
    status: str | None = None


class MismatchKind(StrEnum):
    MISSING_AT_STRIPE = "missing_at_stripe"
    MISSING_IN_LEDGER = "missing_in_ledger"
    AMOUNT_MISMATCH = "amount_mismatch"
    DUPLICATE_AT_STRIPE = "duplicate_at_stripe"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement between the ledger and the provider about a reward's money."""

    kind: MismatchKind
    reward_id: str
    movement: MovementKind
    ledger_ref: str | None
    stripe_ref: str | None
    ledger_amount: Money | None
    stripe_amount: Money | None
    detail: str

    def row(self) -> dict[str, str]:
        """The mismatch as a table row of strings (ids and amounts only)."""
        return {
            "kind": self.kind.value,
            "reward": self.reward_id,
            "movement": self.movement.value,
            "ledger": self.ledger_ref or "-",
            "stripe": self.stripe_ref or "-",
            "ledger amount": self.ledger_amount.format() if self.ledger_amount else "-",
            "stripe amount": self.stripe_amount.format() if self.stripe_amount else "-",
            "detail": self.detail,
        }


class PayoutsOutOfBalance(ReferralError):
    """The ledger and the payment provider disagree; raised after they are published."""

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        self.mismatches = tuple(mismatches)
        kinds: dict[str, int] = {}
        for m in self.mismatches:
            kinds[m.kind.value] = kinds.get(m.kind.value, 0) + 1
        shown = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        super().__init__(f"{len(self.mismatches)} payout mismatches with Stripe: {shown}")


@runtime_checkable
class PaymentRecords(Protocol):
    """Reads back from the payment provider what it moved for rewards."""

    def movements(self, customer_ids: Sequence[str]) -> list[Movement]:
        """Every payout and reversal carrying a ``reward_id`` in its metadata.

        Args:
            customer_ids: customers whose balance transactions to read (balances are
                listed per customer).
        """
        ...


_SETTLED = "succeeded"


def compare_movements(ledger: Iterable[Movement], provider: Iterable[Movement]) -> list[Mismatch]:
    """Every disagreement between the ledger's and the provider's movements, both ways.

    Movements are matched by reward id, then by provider id. The ledger's settled
    (``succeeded``) movements must each be at the provider with the same amount; each
    provider movement must be a settled one in the ledger. A second payout at the
    provider for a reward the ledger paid once is a duplicate.

    Returns:
        The mismatches, ordered by reward, movement and kind.
    """
    by_reward: dict[tuple[str, MovementKind], tuple[list[Movement], list[Movement]]] = {}
    for m in ledger:
        by_reward.setdefault((m.reward_id, m.kind), ([], []))[0].append(m)
    for m in provider:
        by_reward.setdefault((m.reward_id, m.kind), ([], []))[1].append(m)
    found: list[Mismatch] = []
    for (reward_id, kind), (ours, theirs) in sorted(by_reward.items()):
        found += _compare_one(reward_id, kind, ours, theirs)
    return sorted(found, key=lambda m: (m.reward_id, m.movement, m.kind, m.stripe_ref or ""))


def _compare_one(
    reward_id: str, kind: MovementKind, ours: Sequence[Movement], theirs: Sequence[Movement]
) -> list[Mismatch]:
    settled = [m for m in ours if m.status == _SETTLED]
    unsettled = [m for m in ours if m.status != _SETTLED]
    at_provider: Mapping[str, Movement] = {m.ref: m for m in theirs if m.ref}
    found: list[Mismatch] = []
    matched: set[str] = set()
    for m in settled:
        other = at_provider.get(m.ref) if m.ref else None
        if other is None:
            found.append(
                Mismatch(
                    MismatchKind.MISSING_AT_STRIPE,
                    reward_id,
                    kind,
                    m.ledger_id,
                    m.ref,
                    m.amount,
                    None,
                    f"the ledger settled this {kind.value} as {m.ref or 'no reference'}, "
                    "which Stripe does not have",
                )
            )
            continue
        matched.add(other.ref or "")
        if other.amount != m.amount:
            found.append(
                Mismatch(
                    MismatchKind.AMOUNT_MISMATCH,
                    reward_id,
                    kind,
                    m.ledger_id,
                    other.ref,
                    m.amount,
                    other.amount,
                    f"the ledger booked {m.amount}, Stripe moved {other.amount}",
                )
            )
    for other in theirs:
        if other.ref in matched:
            continue
        duplicate = kind is MovementKind.PAYOUT and bool(settled)
        found.append(
            Mismatch(
                MismatchKind.DUPLICATE_AT_STRIPE if duplicate else MismatchKind.MISSING_IN_LEDGER,
                reward_id,
                kind,
                unsettled[0].ledger_id if unsettled else None,
                other.ref,
                None,
                other.amount,
                _why_unknown(kind, duplicate, unsettled),
            )
        )
    return found


def _why_unknown(kind: MovementKind, duplicate: bool, unsettled: Sequence[Movement]) -> str:
    if duplicate:
        return f"a second {kind.value} for a reward the ledger settled once"
    if any(m.status == "pending" for m in unsettled):
        return (
            f"the ledger's {kind.value} is still pending (a crash or a lost answer); "
            "the next run settles it"
        )
    if unsettled:
        return f"the ledger recorded this {kind.value} as {unsettled[0].status}"
    return f"the ledger has no {kind.value} for this reward"
