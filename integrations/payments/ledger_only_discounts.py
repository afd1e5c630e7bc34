"""The ledger-only referee discount: used when no Stripe key is configured."""

from __future__ import annotations

from collections.abc import Sequence

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)


class LedgerOnlyDiscounts:
    """A :class:`domain.ports.RefereeDiscounts` that CREATES NOTHING at any provider.

    The discount is only recorded: no coupon and no promotion code exist, so a referee
    typing the code at checkout gets no discount until it is published for real (the
    ``provider_ref`` ``ledger-only:...`` says so wherever it is shown). Adding a Stripe
    key later publishes every code at Stripe, under its own key.
    """

    rail: DiscountRail = DiscountRail.LEDGER_ONLY

    def create_coupon(self, coupon: CouponInstruction) -> DiscountResult:
        if coupon.rail is not self.rail:
            return DiscountResult(
                coupon.coupon_id,
                DiscountOutcome.FAILED,
                error=f"a {coupon.rail.value} coupon sent to the ledger-only adapter",
            )
        return DiscountResult(
            coupon.coupon_id, DiscountOutcome.SUCCEEDED, f"ledger-only:{coupon.coupon_id}"
        )

    def create_promotion_codes(
        self, codes: Sequence[PromotionCodeInstruction]
    ) -> list[DiscountResult]:
        return [
            DiscountResult(c.code, DiscountOutcome.SUCCEEDED, f"ledger-only:{c.code}")
            if c.rail is self.rail
            else DiscountResult(
                c.code,
                DiscountOutcome.FAILED,
                error=f"a {c.rail.value} promotion code sent to the ledger-only adapter",
            )
            for c in codes
        ]
