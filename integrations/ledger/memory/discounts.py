"""The ``discounts`` store in memory: the coupon and promotion-code outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain.discounts import (
    CouponInstruction,
    CouponState,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)

_STATUS = {
    DiscountOutcome.SUCCEEDED: "succeeded",
    DiscountOutcome.FAILED: "failed",
    DiscountOutcome.RETRYABLE: "pending",
}


@dataclass
class _Row:
    instruction: Any  # CouponInstruction or PromotionCodeInstruction, key and time set
    terms: str = ""
    status: str = "pending"
    tries: int = 0
    provider_ref: str | None = None
    error: str | None = None


class InMemoryDiscountStore:
    """A recording fake of :class:`domain.stores.discounts.DiscountStore`.

    Attributes:
        referral_codes: referral code -> its owner (set by the test; in SQL, the
            ``referral_codes`` table the asks fill).
        coupons: (coupon id, rail) -> its row.
        codes: (referral code, rail) -> its promotion code's row.
        calls: (method, arguments) of every call, in order.
    """

    def __init__(self) -> None:
        self.referral_codes: dict[str, str] = {}
        self.coupons: dict[tuple[str, str], _Row] = {}
        self.codes: dict[tuple[str, str], _Row] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def prepare_coupon(self, coupon: CouponInstruction, now: datetime) -> CouponState:
        self.calls.append(("prepare_coupon", (coupon, now)))
        row = self.coupons.setdefault(
            (coupon.coupon_id, coupon.rail.value),
            _Row(replace(coupon, key_created_at=now), terms=coupon.terms),
        )
        return CouponState(
            status=row.status,
            terms=row.terms,
            provider_ref=row.provider_ref,
            error=row.error,
            instruction=replace(
                coupon,
                idempotency_key=row.instruction.idempotency_key,
                key_created_at=row.instruction.key_created_at,
            ),
        )

    def record_coupon_result(
        self, coupon: CouponInstruction, result: DiscountResult, now: datetime
    ) -> None:
        self.calls.append(("record_coupon_result", (coupon, result, now)))
        row = self.coupons.get((coupon.coupon_id, coupon.rail.value))
        if row is not None and row.status == "pending":
            _settle(row, result)

    def queue_promotion_codes(self, coupon_id: str, rail: DiscountRail, now: datetime) -> int:
        self.calls.append(("queue_promotion_codes", (coupon_id, rail, now)))
        new = 0
        for code in self.referral_codes:
            if (code, rail.value) not in self.codes:
                key = PromotionCodeInstruction.key_for(code, rail)
                self.codes[(code, rail.value)] = _Row(
                    PromotionCodeInstruction(code, coupon_id, rail, key, now)
                )
                new += 1
        return new

    def pending_promotion_codes(
        self, rail: DiscountRail, after: str, limit: int
    ) -> list[PromotionCodeInstruction]:
        self.calls.append(("pending_promotion_codes", (rail, after, limit)))
        return [
            row.instruction
            for (code, at), row in sorted(self.codes.items())
            if at == rail.value and row.status == "pending" and code > after
        ][:limit]

    def record_promotion_code_results(
        self, rail: DiscountRail, results: Sequence[DiscountResult], now: datetime
    ) -> None:
        self.calls.append(("record_promotion_code_results", (rail, list(results), now)))
        for result in results:
            row = self.codes.get((result.ref, rail.value))
            if row is not None and row.status == "pending":
                _settle(row, result)

    def referee_discounts(self, rail: DiscountRail) -> dict[str, int]:
        self.calls.append(("referee_discounts", (rail,)))
        statuses = [row.status for (_, at), row in self.codes.items() if at == rail.value]
        return {s: statuses.count(s) for s in ("pending", "succeeded", "failed")}


def _settle(row: _Row, result: DiscountResult) -> None:
    row.tries += 1
    row.status = _STATUS[result.outcome]
    row.provider_ref = result.provider_ref
    row.error = (result.error or "")[:512] or None
