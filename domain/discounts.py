"""The referee's side of a two-sided reward: a discount at the payment provider.

As Rewardful and FirstPromoter do it: the program has one coupon (the discount's terms,
from the ``referee_discount`` section of the rules), and every referrer's referral code
becomes a promotion code of that coupon, so a referee typing the code at checkout gets
the discount, and the payment carries the code back to its referrer.

Exactly-once works as for payouts: the coupon's idempotency key
(``program:<coupon id>:coupon``) and each code's (``code:<code>:promotion_code``) are
stored in the ledger before the provider is called, and sent on every try. Without a
payment provider the discount is recorded as ledger-only: nothing exists at the
provider, and the ``provider_ref`` (``ledger-only:...``) says so wherever it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from domain.models import PayoutOutcome
from domain.money import Money
from domain.program import Program


class DiscountRail(StrEnum):
    """Where a discount exists: at Stripe, or only in the ledger (no key configured)."""

    STRIPE = "stripe"
    LEDGER_ONLY = "ledger_only"


# The outcomes are the payouts': RETRYABLE means unknown or transient (same key next
# time), FAILED means refused for good.
DiscountOutcome = PayoutOutcome


def _suffix(rail: DiscountRail) -> str:
    # A ledger-only record gets a key of its own, so that adding a Stripe key later
    # publishes the same code at Stripe under the real key.
    return "" if rail is DiscountRail.STRIPE else ":ledger"


@dataclass(frozen=True, slots=True)
class CouponInstruction:
    """The program's coupon, as the provider is asked to create it (once)."""

    coupon_id: str
    name: str
    percent_off: Decimal | None
    amount_off: Money | None
    duration: str
    duration_in_months: int | None
    rail: DiscountRail
    idempotency_key: str
    key_created_at: datetime | None = None

    @staticmethod
    def key_for(coupon_id: str, rail: DiscountRail = DiscountRail.STRIPE) -> str:
        return f"program:{coupon_id}:coupon{_suffix(rail)}"

    @classmethod
    def from_program(cls, program: Program, rail: DiscountRail) -> CouponInstruction | None:
        """The coupon ``program`` asks for, or ``None`` when it has no referee discount."""
        rule = program.referee_discount
        if rule is None:
            return None
        return cls(
            coupon_id=rule.coupon_id,
            name=rule.name,
            percent_off=rule.percent_off,
            amount_off=program.money(rule.amount_off) if rule.amount_off else None,
            duration=rule.duration.value,
            duration_in_months=rule.duration_in_months,
            rail=rail,
            idempotency_key=cls.key_for(rule.coupon_id, rail),
        )

    @property
    def terms(self) -> str:
        """The discount in words, e.g. ``10% off, repeating 3 months``: stored with the
        coupon, so a rules file changing the terms of a coupon already made is caught
        (a coupon's terms never change at the provider)."""
        if self.percent_off is not None:
            off = f"{self.percent_off.normalize():f}% off"
        else:
            assert self.amount_off is not None  # the program model guarantees one
            off = f"{self.amount_off} off"
        months = f" {self.duration_in_months} months" if self.duration_in_months else ""
        return f"{off}, {self.duration}{months}"


@dataclass(frozen=True, slots=True)
class PromotionCodeInstruction:
    """One referral code, to publish as a promotion code of the program's coupon."""

    code: str
    coupon_id: str
    rail: DiscountRail
    idempotency_key: str
    key_created_at: datetime | None = None

    @staticmethod
    def key_for(code: str, rail: DiscountRail = DiscountRail.STRIPE) -> str:
        return f"code:{code}:promotion_code{_suffix(rail)}"


@dataclass(frozen=True, slots=True)
class DiscountResult:
    """What the provider did with a coupon (``ref`` = coupon id) or a promotion code
    (``ref`` = referral code)."""

    ref: str
    outcome: DiscountOutcome
    provider_ref: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CouponState:
    """The program's coupon as the ledger has it at one rail.

    Attributes:
        status: ``pending``, ``succeeded`` or ``failed``.
        terms: the terms the coupon was first stored with.
        provider_ref: the provider's id of the coupon, once created.
        error: the provider's last refusal, if any.
        instruction: the coupon to send, with its stored idempotency key and the
            key's creation time.
    """

    status: str
    terms: str
    provider_ref: str | None
    error: str | None
    instruction: CouponInstruction
