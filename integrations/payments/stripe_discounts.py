"""The referee's discount at Stripe: one coupon, a promotion code per referral code.

:class:`StripeDiscounts` implements :class:`domain.ports.RefereeDiscounts` on the
official ``stripe`` library (``client.v1.coupons`` and ``client.v1.promotion_codes``).

Exactly-once rests, as for payouts, on the idempotency key stored in the ledger before
the first call and sent on every create. Two things make it hold past the key's life
(Stripe keeps keys 24 hours) and after a crash that lost a response:

* the coupon has our own id (``coupon_id`` from the rules), so creating it twice is
  refused (``resource_already_exists``); the coupon found under that id is ours if its
  terms are the ones asked for, and a coupon of other terms is a failure for a person
  (coupon terms never change at Stripe: the rules need a new id);
* a promotion code's ``code`` is unique among active codes, so past the key's life, or
  on ``resource_already_exists``, the code is looked up (``GET /v1/promotion_codes?code=``)
  and one of our coupon is taken as the one created before.

Promotion-code metadata carries the referral code only (what the Stripe conversions
read back from a Checkout Session's discounts); never a name or an address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from stripe.params import CouponCreateParams

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)
from integrations.payments.stripe_rail import KEY_LOOKUP_AFTER, classify_stripe_error
from integrations.payments.throttle import (
    CREATE_COUPON,
    CREATE_PROMOTION_CODE,
    LIST_PROMOTION_CODES,
    RETRIEVE_COUPON,
    Throttle,
    no_throttle,
)

_ALREADY_EXISTS = "resource_already_exists"
_LIST_PAGE = 100


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _code_of(exc: stripe.StripeError) -> str | None:
    return exc.code or (exc.error.code if exc.error is not None else None)


class StripeDiscounts:
    """Creates the program's coupon and its promotion codes at Stripe.

    Args:
        client: built by :func:`integrations.payments.stripe_rail.build_stripe_client`.
        clock: the current time, to tell how old an idempotency key is.
        key_lookup_after: from this key age on, look for the object before creating it.
        throttle: called with the number of requests about to be made (the shared
            Stripe rate limit).
    """

    rail: DiscountRail = DiscountRail.STRIPE

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        clock: Callable[[], datetime] = _utc_now,
        key_lookup_after: timedelta = KEY_LOOKUP_AFTER,
        throttle: Throttle | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._key_lookup_after = key_lookup_after
        self._throttle: Throttle = throttle or no_throttle

    # -- coupon ------------------------------------------------------------------------

    def create_coupon(self, coupon: CouponInstruction) -> DiscountResult:
        """Create the coupon once; an existing coupon of the same id and terms is it.

        Never raises for a Stripe failure: it becomes ``RETRYABLE`` or ``FAILED``.
        """
        if coupon.rail is not self.rail:
            return self._refuse(coupon.coupon_id, coupon.rail)
        try:
            if self._old(coupon.key_created_at):
                found = self._existing_coupon(coupon)
                if found is not None:
                    return found
            self._throttle(1, endpoint=CREATE_COUPON)
            created = self._client.v1.coupons.create(
                self._coupon_params(coupon),
                options={"idempotency_key": coupon.idempotency_key},
            )
            return DiscountResult(coupon.coupon_id, DiscountOutcome.SUCCEEDED, created.id)
        except stripe.StripeError as exc:
            if isinstance(exc, stripe.IdempotencyError) or _code_of(exc) == _ALREADY_EXISTS:
                try:
                    found = self._existing_coupon(coupon)
                except stripe.StripeError as lookup_exc:
                    return self._failure(coupon.coupon_id, lookup_exc, unknown=True)
                if found is not None:
                    return found
            return self._failure(coupon.coupon_id, exc)

    @staticmethod
    def _coupon_params(coupon: CouponInstruction) -> CouponCreateParams:
        params: CouponCreateParams = {
            "id": coupon.coupon_id,
            "name": coupon.name,
            "duration": coupon.duration,
            "metadata": {"program_coupon": coupon.coupon_id},
        }
        if coupon.percent_off is not None:
            params["percent_off"] = float(coupon.percent_off)
        else:
            assert coupon.amount_off is not None
            params["amount_off"] = coupon.amount_off.amount_minor
            params["currency"] = coupon.amount_off.currency.lower()
        if coupon.duration_in_months is not None:
            params["duration_in_months"] = coupon.duration_in_months
        return params

    def _existing_coupon(self, coupon: CouponInstruction) -> DiscountResult | None:
        """The coupon already at Stripe under our id: ours when its terms match."""
        self._throttle(1, endpoint=RETRIEVE_COUPON)
        try:
            found = self._client.v1.coupons.retrieve(coupon.coupon_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        if _same_terms(found, coupon):
            return DiscountResult(coupon.coupon_id, DiscountOutcome.SUCCEEDED, found.id)
        return DiscountResult(
            coupon.coupon_id,
            DiscountOutcome.FAILED,
            error=f"a Stripe coupon '{coupon.coupon_id}' exists with other terms; coupon "
            "terms never change at Stripe, so give the new discount a new coupon_id",
        )

    # -- promotion codes ---------------------------------------------------------------

    def create_promotion_codes(
        self, codes: Sequence[PromotionCodeInstruction]
    ) -> list[DiscountResult]:
        """Publish each referral code as a promotion code; one result per code, in order.

        Never raises for a Stripe failure.
        """
        return [self._publish(code) for code in codes]

    def _publish(self, code: PromotionCodeInstruction) -> DiscountResult:
        if code.rail is not self.rail:
            return self._refuse(code.code, code.rail)
        try:
            if self._old(code.key_created_at):
                found = self._existing_code(code)
                if found is not None:
                    return found
            self._throttle(1, endpoint=CREATE_PROMOTION_CODE)
            promo = self._client.v1.promotion_codes.create(
                {
                    "code": code.code,
                    "promotion": {"type": "coupon", "coupon": code.coupon_id},
                    # Opaque ids only: metadata is visible to anyone with dashboard access.
                    "metadata": {"referral_code": code.code},
                },
                options={"idempotency_key": code.idempotency_key},
            )
            return DiscountResult(code.code, DiscountOutcome.SUCCEEDED, promo.id)
        except stripe.StripeError as exc:
            if isinstance(exc, stripe.IdempotencyError) or _code_of(exc) == _ALREADY_EXISTS:
                try:
                    found = self._existing_code(code)
                except stripe.StripeError as lookup_exc:
                    return self._failure(code.code, lookup_exc, unknown=True)
                if found is not None:
                    return found
            return self._failure(code.code, exc)

    def _existing_code(self, code: PromotionCodeInstruction) -> DiscountResult | None:
        """An active promotion code with this code: ours if it is of our coupon."""
        self._throttle(1, endpoint=LIST_PROMOTION_CODES)
        page = self._client.v1.promotion_codes.list(
            {"code": code.code, "active": True, "limit": _LIST_PAGE}
        )
        for promo in page.auto_paging_iter():
            if _coupon_of(promo) == code.coupon_id:
                return DiscountResult(code.code, DiscountOutcome.SUCCEEDED, promo.id)
            return DiscountResult(
                code.code,
                DiscountOutcome.FAILED,
                error="an active Stripe promotion code with this code exists for another coupon",
            )
        return None

    # -- shared ------------------------------------------------------------------------

    def _old(self, key_created_at: datetime | None) -> bool:
        if key_created_at is None:
            return False
        if key_created_at.tzinfo is None:
            key_created_at = key_created_at.replace(tzinfo=UTC)  # the ledger stores UTC
        return self._clock() - key_created_at >= self._key_lookup_after

    def _refuse(self, ref: str, rail: DiscountRail) -> DiscountResult:
        return DiscountResult(
            ref,
            DiscountOutcome.FAILED,
            error=f"a {rail.value} discount cannot go through the {self.rail.value} adapter",
        )

    @staticmethod
    def _failure(ref: str, exc: stripe.StripeError, *, unknown: bool = False) -> DiscountResult:
        outcome, text = classify_stripe_error(exc)
        if unknown:
            # Whether the object exists is unknown until a lookup works: try again.
            outcome = DiscountOutcome.RETRYABLE
        return DiscountResult(ref, outcome, error=text)


def _coupon_of(promo: stripe.PromotionCode) -> str | None:
    """The coupon id of a promotion code (``promotion.coupon``, expanded or not)."""
    promotion = promo.promotion
    coupon: object = promotion.coupon if promotion is not None else None
    if isinstance(coupon, stripe.Coupon):
        return coupon.id
    return coupon if isinstance(coupon, str) else None


def _same_terms(found: stripe.Coupon, coupon: CouponInstruction) -> bool:
    if coupon.percent_off is not None:
        off_matches = found.percent_off is not None and Decimal(str(found.percent_off)) == (
            coupon.percent_off
        )
    else:
        assert coupon.amount_off is not None
        off_matches = (
            found.amount_off == coupon.amount_off.amount_minor
            and (found.currency or "").upper() == coupon.amount_off.currency
        )
    return (
        off_matches
        and found.duration == coupon.duration
        and found.duration_in_months == coupon.duration_in_months
    )
