"""What every Stripe adapter calls before each request: the shared rate limits.

Stripe counts requests per account against a global limit (100/s live, 25/s test) and,
separately, against a limit per endpoint (25/s by default; "each named API operation",
so ``POST /v1/transfers`` and ``GET /v1/transfers`` are two endpoints). Adapters name
the endpoint of every request in Stripe's own terms, ids written ``{id}``, so one
throttle can keep both (see :class:`integrations.prefect_limits.StripeRateLimits`).
"""

from __future__ import annotations

from typing import Protocol


class Throttle(Protocol):
    """Blocks until ``requests`` requests to ``endpoint`` may be made under the limits."""

    def __call__(self, requests: int = 1, *, endpoint: str | None = None) -> None: ...


def no_throttle(requests: int = 1, *, endpoint: str | None = None) -> None:
    """No limit: for a single process in tests and scripts."""


# The endpoints our adapters call, as Stripe names its operations.
CREATE_TRANSFER = "POST /v1/transfers"
LIST_TRANSFERS = "GET /v1/transfers"
CREATE_TRANSFER_REVERSAL = "POST /v1/transfers/{id}/reversals"
LIST_TRANSFER_REVERSALS = "GET /v1/transfers/{id}/reversals"
CREATE_BALANCE_TRANSACTION = "POST /v1/customers/{id}/balance_transactions"
LIST_BALANCE_TRANSACTIONS = "GET /v1/customers/{id}/balance_transactions"
CREATE_COUPON = "POST /v1/coupons"
RETRIEVE_COUPON = "GET /v1/coupons/{id}"
CREATE_PROMOTION_CODE = "POST /v1/promotion_codes"
LIST_PROMOTION_CODES = "GET /v1/promotion_codes"
LIST_EVENTS = "GET /v1/events"
RETRIEVE_CHARGE = "GET /v1/charges/{id}"
RETRIEVE_PAYMENT_INTENT = "GET /v1/payment_intents/{id}"
CREATE_ACCOUNT = "POST /v1/accounts"
RETRIEVE_ACCOUNT = "GET /v1/accounts/{id}"
CREATE_ACCOUNT_LINK = "POST /v1/account_links"
