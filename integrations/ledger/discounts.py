"""The referee-discount outbox of the ledger (tables in ``tables.discounts``).

:class:`SqlDiscountStore` is the ``discounts`` store
(:class:`domain.stores.discounts.DiscountStore`). As for payouts, every write
that precedes a provider call commits the idempotency key first: the coupon's row
(:meth:`SqlDiscountStore.prepare_coupon`) and each code's row
(:meth:`SqlDiscountStore.queue_promotion_codes`, one ``INSERT ... SELECT`` for every code
not published yet). A crash at any point leaves rows ``pending`` with their keys, and
the next run sends the same keys again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import exists, func, literal, select, update

from domain.discounts import (
    CouponInstruction,
    CouponState,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)
from integrations.ledger.base import LedgerBase
from integrations.ledger.tables import (
    T_DISCOUNT_COUPONS,
    T_REFEREE_DISCOUNTS,
    T_REFERRAL_CODES,
)

_MAX_ERROR = 512


class SqlDiscountStore(LedgerBase):
    """Coupon and promotion-code outbox (the ``discounts`` store)."""

    def prepare_coupon(self, coupon: CouponInstruction, now: datetime) -> CouponState:
        """Store the coupon with its idempotency key (once), and say where it stands.

        Returns:
            The stored row: its status, the terms it was first stored with (which may
            differ from ``coupon``'s: a person must then give a new coupon id), and the
            instruction to send, with the key's creation time.
        """
        with self._begin() as conn:
            self._insert_ignore(
                conn,
                T_DISCOUNT_COUPONS,
                [
                    {
                        "coupon_id": coupon.coupon_id,
                        "rail": coupon.rail.value,
                        "terms": coupon.terms,
                        "idempotency_key": coupon.idempotency_key,
                        "status": "pending",
                        "tries": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
                T_DISCOUNT_COUPONS.c.idempotency_key,
            )
            row = (
                conn.execute(
                    select(T_DISCOUNT_COUPONS).where(
                        T_DISCOUNT_COUPONS.c.coupon_id == coupon.coupon_id,
                        T_DISCOUNT_COUPONS.c.rail == coupon.rail.value,
                    )
                )
                .mappings()
                .one()
            )
        return CouponState(
            status=row["status"],
            terms=row["terms"],
            provider_ref=row["provider_ref"],
            error=row["error"],
            instruction=replace(
                coupon,
                idempotency_key=row["idempotency_key"],
                key_created_at=row["created_at"],
            ),
        )

    def record_coupon_result(
        self, coupon: CouponInstruction, result: DiscountResult, now: datetime
    ) -> None:
        """Settle a pending coupon with the provider's answer (``RETRYABLE`` keeps it
        pending, with the error and one more try counted)."""
        with self._begin() as conn:
            conn.execute(
                update(T_DISCOUNT_COUPONS)
                .where(
                    T_DISCOUNT_COUPONS.c.coupon_id == coupon.coupon_id,
                    T_DISCOUNT_COUPONS.c.rail == coupon.rail.value,
                    T_DISCOUNT_COUPONS.c.status == "pending",
                )
                .values(tries=T_DISCOUNT_COUPONS.c.tries + 1, **_settled(result, now))
            )

    def queue_promotion_codes(self, coupon_id: str, rail: DiscountRail, now: datetime) -> int:
        """Store a pending promotion code, with its idempotency key, for every referral
        code not yet published at ``rail``; how many were stored."""
        rc = T_REFERRAL_CODES
        # The key is computed by the database, from the domain's own format.
        prefix, suffix = PromotionCodeInstruction.key_for("\x00", rail).split("\x00")
        published = exists().where(
            T_REFEREE_DISCOUNTS.c.code == rc.c.code, T_REFEREE_DISCOUNTS.c.rail == rail.value
        )
        source = select(
            rc.c.code,
            literal(rail.value),
            rc.c.contact_id,
            literal(coupon_id),
            literal(prefix) + rc.c.code + literal(suffix),
            literal("pending"),
            literal(0),
            literal(now, type_=T_REFEREE_DISCOUNTS.c.created_at.type),
            literal(now, type_=T_REFEREE_DISCOUNTS.c.updated_at.type),
        ).where(~published)
        columns = [
            "code",
            "rail",
            "contact_id",
            "coupon_id",
            "idempotency_key",
            "status",
            "tries",
            "created_at",
            "updated_at",
        ]
        with self._begin() as conn:
            stmt = (
                self._insert(T_REFEREE_DISCOUNTS)
                .from_select(columns, source)
                .on_conflict_do_nothing()
                .returning(T_REFEREE_DISCOUNTS.c.code)
            )
            return len(conn.execute(stmt).all())

    def pending_promotion_codes(
        self, rail: DiscountRail, after: str, limit: int
    ) -> list[PromotionCodeInstruction]:
        """Pending promotion codes at ``rail`` after the code ``after``, by code."""
        t = T_REFEREE_DISCOUNTS
        with self._connect() as conn:
            rows = conn.execute(
                select(t.c.code, t.c.coupon_id, t.c.idempotency_key, t.c.created_at)
                .where(t.c.rail == rail.value, t.c.status == "pending", t.c.code > after)
                .order_by(t.c.code)
                .limit(limit)
            ).all()
        return [
            PromotionCodeInstruction(
                code=code,
                coupon_id=coupon_id,
                rail=rail,
                idempotency_key=key,
                key_created_at=created_at,
            )
            for code, coupon_id, key, created_at in rows
        ]

    def record_promotion_code_results(
        self, rail: DiscountRail, results: Sequence[DiscountResult], now: datetime
    ) -> None:
        """Settle pending promotion codes with the provider's answers, in one
        transaction."""
        with self._begin() as conn:
            for result in results:
                conn.execute(
                    update(T_REFEREE_DISCOUNTS)
                    .where(
                        T_REFEREE_DISCOUNTS.c.code == result.ref,
                        T_REFEREE_DISCOUNTS.c.rail == rail.value,
                        T_REFEREE_DISCOUNTS.c.status == "pending",
                    )
                    .values(tries=T_REFEREE_DISCOUNTS.c.tries + 1, **_settled(result, now))
                )

    def referee_discounts(self, rail: DiscountRail) -> dict[str, int]:
        """How many codes are pending, published and failed at ``rail``."""
        with self._connect() as conn:
            counts: dict[str, int] = {
                status: int(n)
                for status, n in conn.execute(
                    select(T_REFEREE_DISCOUNTS.c.status, func.count())
                    .where(T_REFEREE_DISCOUNTS.c.rail == rail.value)
                    .group_by(T_REFEREE_DISCOUNTS.c.status)
                )
            }
        return {s: counts.get(s, 0) for s in ("pending", "succeeded", "failed")}


def _settled(result: DiscountResult, now: datetime) -> dict[str, object]:
    status = {
        DiscountOutcome.SUCCEEDED: "succeeded",
        DiscountOutcome.FAILED: "failed",
        DiscountOutcome.RETRYABLE: "pending",
    }[result.outcome]
    return {
        "status": status,
        "provider_ref": result.provider_ref,
        "error": (result.error or "")[:_MAX_ERROR] or None,
        "updated_at": now,
    }
