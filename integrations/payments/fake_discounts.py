"""An in-memory referee-discount provider that records what it created, for tests."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Literal

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)

ScriptedDiscount = DiscountOutcome | Literal["lost_response"]
"""What a scripted call does; ``"lost_response"`` creates but answers ``RETRYABLE``."""


class RecordingDiscounts:
    """A :class:`domain.ports.RefereeDiscounts` keeping coupons and codes in memory.

    Idempotency keys behave as at Stripe: a key that created something (or was refused
    for good) gives the same result again without creating twice; transient failures
    save nothing.

    Attributes:
        rail: the rail this fake stands for.
        coupons: every coupon created, once each.
        promotion_codes: every promotion code created, once each.
        calls: idempotency keys of every call received, replays included.
    """

    def __init__(self, rail: DiscountRail = DiscountRail.STRIPE) -> None:
        self.rail: DiscountRail = rail
        self.coupons: list[CouponInstruction] = []
        self.promotion_codes: list[PromotionCodeInstruction] = []
        self.calls: list[str] = []
        self._by_key: dict[str, DiscountResult] = {}
        self._scripts: dict[str, deque[ScriptedDiscount]] = {}
        self._lock = threading.Lock()

    def script(self, ref: str, outcomes: Sequence[ScriptedDiscount]) -> None:
        """Queue what the next calls for ``ref`` (a coupon id or a code) do, one each."""
        with self._lock:
            self._scripts.setdefault(ref, deque()).extend(outcomes)

    def create_coupon(self, coupon: CouponInstruction) -> DiscountResult:
        with self._lock:
            result, created = self._call(
                coupon.coupon_id, coupon.idempotency_key, f"coupon_{coupon.coupon_id}"
            )
            if created:
                self.coupons.append(coupon)
            return result

    def create_promotion_codes(
        self, codes: Sequence[PromotionCodeInstruction]
    ) -> list[DiscountResult]:
        results = []
        with self._lock:
            for code in codes:
                result, created = self._call(code.code, code.idempotency_key, f"promo_{code.code}")
                if created:
                    self.promotion_codes.append(code)
                results.append(result)
        return results

    def _call(self, ref: str, key: str, provider_ref: str) -> tuple[DiscountResult, bool]:
        """(the answer, whether something was created now)."""
        self.calls.append(key)
        if key in self._by_key:
            return self._by_key[key], False
        queue = self._scripts.get(ref)
        step: ScriptedDiscount = queue.popleft() if queue else DiscountOutcome.SUCCEEDED
        if step is DiscountOutcome.RETRYABLE:
            return DiscountResult(ref, step, error="scripted transient failure"), False
        if step is DiscountOutcome.FAILED:
            self._by_key[key] = DiscountResult(ref, step, error="scripted refusal")
            return self._by_key[key], False
        self._by_key[key] = DiscountResult(ref, DiscountOutcome.SUCCEEDED, provider_ref)
        if step == "lost_response":
            return DiscountResult(ref, DiscountOutcome.RETRYABLE, error="response lost"), True
        return self._by_key[key], True
