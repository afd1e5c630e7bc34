"""The ``discounts`` store: the referee discount's outbox (the coupon, then the codes).

Every row that precedes a provider call is stored with its idempotency key first, so a
crash leaves it ``pending`` and the next run sends the same key again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from domain.discounts import (
    CouponInstruction,
    CouponState,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)


class DiscountStore(Protocol):
    """Coupon and promotion-code outbox."""

    def prepare_coupon(self, coupon: CouponInstruction, now: datetime) -> CouponState:
        """Store the coupon with its idempotency key (once), and say where it stands.

        Args:
            coupon: the coupon the rules ask for.
            now: the time of the write.

        Returns:
            The stored coupon: its status, the terms it was first stored with (which
            may differ from ``coupon``'s), and the instruction to send, with its key.
        """
        ...

    def record_coupon_result(
        self, coupon: CouponInstruction, result: DiscountResult, now: datetime
    ) -> None:
        """Settle a pending coupon with the provider's answer.

        Args:
            coupon: the coupon sent.
            result: the provider's answer; ``RETRYABLE`` keeps it pending, one more try
                counted.
            now: the time of the write.
        """
        ...

    def queue_promotion_codes(self, coupon_id: str, rail: DiscountRail, now: datetime) -> int:
        """Store a pending promotion code, with its key, for every referral code not yet
        published at ``rail``.

        Args:
            coupon_id: the coupon the codes belong to.
            rail: where the codes are published.
            now: the time of the write.

        Returns:
            How many codes were stored.
        """
        ...

    def pending_promotion_codes(
        self, rail: DiscountRail, after: str, limit: int
    ) -> list[PromotionCodeInstruction]:
        """Pending promotion codes at ``rail`` after the code ``after``, by code.

        Args:
            rail: where the codes are published.
            after: the last code of the previous page ("" for the first).
            limit: at most this many.
        """
        ...

    def record_promotion_code_results(
        self, rail: DiscountRail, results: Sequence[DiscountResult], now: datetime
    ) -> None:
        """Settle pending promotion codes with the provider's answers, in one transaction.

        Args:
            rail: where the codes were published.
            results: one per code (``ref`` is the referral code).
            now: the time of the write.
        """
        ...

    def referee_discounts(self, rail: DiscountRail) -> dict[str, int]:
        """How many codes are ``pending``, ``succeeded`` and ``failed`` at ``rail``."""
        ...
