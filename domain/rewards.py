"""Reward rules: what a conversion earns, when it becomes payable, and where it goes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from domain.attribution import split
from domain.errors import InputRejected
from domain.models import Contact, Conversion, PayoutRailKind, Reward, Route
from domain.money import Money
from domain.program import Program, RewardKind, RewardRule


def rule_amount(rule: RewardRule, conversion: Conversion, program: Program) -> Money:
    """What ``rule`` pays for the whole of ``conversion``, before any split.

    Raises:
        InputRejected: a percentage rule met a conversion without an amount.
    """
    if rule.kind is RewardKind.FLAT:
        assert rule.amount is not None  # the program model guarantees it
        return program.money(rule.amount)
    if conversion.amount is None:
        raise InputRejected(
            conversion.source_event, "amount", f"rule {rule.id} needs the deal amount"
        )
    assert rule.percent is not None
    earned = conversion.amount.percent(rule.percent)
    if rule.cap is not None:
        earned = earned.min(program.money(rule.cap))
    return earned


def describe(rule: RewardRule, program: Program) -> str:
    if rule.kind is RewardKind.FLAT:
        assert rule.amount is not None
        return f"{program.money(rule.amount)} per {rule.milestone.value}"
    cap = f", at most {program.money(rule.cap)}" if rule.cap else ""
    return f"{rule.percent}% of the deal{cap}"


def compute_rewards(
    conversion: Conversion,
    credits: Sequence[tuple[Contact, Decimal]],
    program: Program,
    flags_of: dict[str, tuple[str, ...]] | None = None,
) -> list[Reward]:
    """The rewards ``conversion`` earns, one per (rule, credited referrer).

    Each rule matching a referrer's type and the conversion's milestone is split among
    the referrers of that type by their credit weights.
    """
    rewards: list[Reward] = []
    payable_at = conversion.occurred_at + timedelta(days=program.holding_days)
    by_type: dict[str, list[tuple[Contact, Decimal]]] = {}
    for contact, weight in credits:
        by_type.setdefault(contact.referrer_type.value, []).append((contact, weight))
    for group in by_type.values():
        referrer_type = group[0][0].referrer_type
        contacts = {c.contact_id: c for c, _ in group}
        for rule in program.rules_for(referrer_type, conversion.milestone):
            whole = rule_amount(rule, conversion, program)
            parts = split(whole, [(c.contact_id, w) for c, w in group])
            for referrer_id, amount in parts:
                if amount.amount_minor <= 0:
                    continue
                share = "" if len(parts) == 1 else f" ({amount} of {whole})"
                rewards.append(
                    Reward(
                        reward_id=Reward.derive_id(conversion.conversion_id, rule.id, referrer_id),
                        conversion_id=conversion.conversion_id,
                        rule_id=rule.id,
                        referrer_id=referrer_id,
                        amount=amount,
                        milestone=conversion.milestone,
                        attribution_model=program.attribution.model,
                        payable_at=payable_at,
                        explanation=f"{describe(rule, program)}{share}",
                        flags=(flags_of or {}).get(contacts[referrer_id].contact_id, ()),
                    )
                )
    return rewards


def route(
    amount: Money, flags: Sequence[str], payable_at: datetime, program: Program, as_of: datetime
) -> Route:
    """Hold until payable; then a person decides on large or flagged rewards."""
    if as_of < payable_at:
        return Route.HOLD
    if flags or amount >= program.auto_payout_threshold:
        return Route.APPROVAL
    return Route.AUTO_PAY


def choose_rail(
    referrer: Contact, available: Collection[PayoutRailKind]
) -> tuple[PayoutRailKind, str | None] | None:
    """How ``referrer`` is paid: (rail, destination), or ``None`` when no rail fits.

    Without a payment provider every payout is ledger-only. With Stripe, a referrer with
    a connected account gets a transfer; a paying customer gets a balance credit; anyone
    else keeps the reward payable and is listed until their profile says how to pay.
    """
    if PayoutRailKind.LEDGER_ONLY in available:
        return PayoutRailKind.LEDGER_ONLY, None
    if referrer.stripe_account_id and PayoutRailKind.STRIPE_TRANSFER in available:
        return PayoutRailKind.STRIPE_TRANSFER, referrer.stripe_account_id
    if referrer.stripe_customer_id and PayoutRailKind.STRIPE_BALANCE in available:
        return PayoutRailKind.STRIPE_BALANCE, referrer.stripe_customer_id
    return None
