"""Who gets credit for a conversion.

A conversion is attributed through the referral code it carries. When several referrers
touched the same lead, the program's attribution model splits the credit; the model's
name is recorded on every reward so an old reward stays explainable after the program
changes model. Weights are not money: they only feed :func:`domain.money.allocate`,
whose largest-remainder split makes the parts add up exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain.codes import normalize_code
from domain.errors import InputRejected
from domain.models import (
    Contact,
    Conversion,
    EventType,
    Milestone,
    SourceEvent,
    derived_id,
)
from domain.money import Money

MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")

_MILESTONE_OF = {
    EventType.SIGNUP: Milestone.LEAD,
    EventType.DEAL_QUALIFIED: Milestone.QUALIFIED,
    EventType.DEAL_WON: Milestone.CUSTOMER,
}


@dataclass(frozen=True, slots=True)
class Touchpoint:
    referrer_id: str
    at: datetime


def conversion_from_event(
    event: SourceEvent, code_owners: Mapping[str, Contact], currency: str
) -> Conversion | None:
    """The conversion an event stands for, or ``None`` if it carries no referral code.

    Raises:
        InputRejected: the code is malformed or unknown, or the amount is in another
            currency than the program's, or is negative.
    """
    if event.referral_code is None or event.type not in _MILESTONE_OF:
        return None
    code = normalize_code(event.referral_code)
    if code is None:
        raise InputRejected(event.key, "referral_code", "malformed referral code")
    owner = code_owners.get(code)
    if owner is None:
        raise InputRejected(event.key, "referral_code", "unknown referral code")
    amount = event.amount
    if amount is not None:
        if amount.currency != currency:
            raise InputRejected(
                event.key, "amount", f"conversion in {amount.currency}, program pays in {currency}"
            )
        if amount.amount_minor < 0:
            raise InputRejected(event.key, "amount", "negative amount")
    return Conversion(
        conversion_id=derived_id("conversion", event.key),
        source_event=event.key,
        referral_code=code,
        referrer_id=owner.contact_id,
        referee_account_id=event.account_id,
        referee_contact_id=event.contact_id,
        milestone=_MILESTONE_OF[event.type],
        occurred_at=event.occurred_at,
        amount=amount,
        referee_email_domain=event.referee_email_domain,
    )


def credit_weights(
    touchpoints: Sequence[Touchpoint],
    model: str,
    converted_at: datetime,
    half_life_days: Decimal = Decimal(7),
) -> list[tuple[str, Decimal]]:
    """Each referrer's weight under ``model``; touchpoints are taken in time order."""
    if not touchpoints:
        return []
    ordered = sorted(touchpoints, key=lambda t: t.at)
    n = len(ordered)
    weights: list[Decimal]
    if model == "first_touch":
        weights = [Decimal(1)] + [Decimal(0)] * (n - 1)
    elif model == "last_touch":
        weights = [Decimal(0)] * (n - 1) + [Decimal(1)]
    elif model == "linear":
        weights = [Decimal(1)] * n
    elif model == "time_decay":
        seconds = half_life_days * 86400
        weights = [
            Decimal(2) ** (-Decimal((converted_at - t.at).total_seconds()) / seconds)
            for t in ordered
        ]
    elif model == "position_based":
        if n == 1:
            weights = [Decimal(1)]
        elif n == 2:
            weights = [Decimal(1), Decimal(1)]
        else:
            # 40 : 20/(n-2) each : 40, scaled by n-2 so every weight is a whole number
            # and the shares are exactly 40/20/40 (20/3 is no Decimal).
            ends = Decimal(40 * (n - 2))
            weights = [ends] + [Decimal(20)] * (n - 2) + [ends]
    else:
        raise ValueError(f"unknown attribution model {model!r}; use one of {', '.join(MODELS)}")
    merged: dict[str, Decimal] = {}
    for touch, weight in zip(ordered, weights, strict=True):
        merged[touch.referrer_id] = merged.get(touch.referrer_id, Decimal(0)) + weight
    return [(referrer, w) for referrer, w in merged.items() if w > 0]


def split(amount: Money, weights: Sequence[tuple[str, Decimal]]) -> list[tuple[str, Money]]:
    """``amount`` divided by ``weights``; the parts add up to ``amount`` exactly."""
    parts = amount.allocate([w for _, w in weights])
    return [(referrer, part) for (referrer, _), part in zip(weights, parts, strict=True)]
