"""Stripe limits a fleet twice: the account's rate and each endpoint's own (25/s by
default). A request naming its endpoint takes a slot of both, the endpoint's first."""

from __future__ import annotations

import pytest

from integrations import prefect_limits
from integrations.prefect_limits import PrefectRateLimit, StripeRateLimits, endpoint_slug


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, int]]:
    """(limit name, its rate, requests) of every slot taken, in order, with no server."""
    slots: list[tuple[str, float, int]] = []

    def take(self: PrefectRateLimit, requests: int = 1) -> None:
        slots.append((self.name, self.per_second, requests))

    monkeypatch.setattr(prefect_limits.PrefectRateLimit, "__call__", take)
    return slots


def test_a_request_takes_its_endpoints_slot_and_then_the_accounts(
    taken: list[tuple[str, float, int]],
) -> None:
    limits = StripeRateLimits("stripe-api", 100, 25)

    limits(1, endpoint="POST /v1/transfers")
    limits(1, endpoint="GET /v1/transfers")
    limits(2, endpoint="POST /v1/transfers")

    assert taken == [
        ("stripe-api-post-v1-transfers", 25, 1),
        ("stripe-api", 100, 1),
        ("stripe-api-get-v1-transfers", 25, 1),
        ("stripe-api", 100, 1),
        ("stripe-api-post-v1-transfers", 25, 2),
        ("stripe-api", 100, 2),
    ]
    # One limit per endpoint, kept for the throttle's life (and its connection with it).
    assert limits.endpoint_limit("POST /v1/transfers") is limits.endpoint_limit(
        "POST /v1/transfers"
    )


def test_a_request_without_an_endpoint_takes_only_the_accounts_slot(
    taken: list[tuple[str, float, int]],
) -> None:
    StripeRateLimits("stripe-api", 100, 25)(3)
    assert taken == [("stripe-api", 100, 3)]


@pytest.mark.parametrize("endpoint_rate", [25.0, 40.0])
def test_an_endpoint_limit_that_could_never_bind_is_not_kept(
    taken: list[tuple[str, float, int]], endpoint_rate: float
) -> None:
    # Test mode: 25/s for the account is already no more than 25/s for any endpoint.
    limits = StripeRateLimits("stripe-api", 25, endpoint_rate)

    limits(1, endpoint="POST /v1/transfers")

    assert limits.endpoint_per_second is None
    assert taken == [("stripe-api", 25, 1)]
    with pytest.raises(ValueError, match="would not bind"):
        limits.endpoint_limit("POST /v1/transfers")


@pytest.mark.parametrize(
    ("endpoint", "slug"),
    [
        ("POST /v1/transfers", "post-v1-transfers"),
        ("POST /v1/transfers/{id}/reversals", "post-v1-transfers-id-reversals"),
        ("GET /v1/customers/{id}/balance_transactions", "get-v1-customers-id-balance_transactions"),
    ],
)
def test_an_endpoints_limit_is_named_without_the_characters_prefect_refuses(
    endpoint: str, slug: str
) -> None:
    assert endpoint_slug(endpoint) == slug


def test_a_name_with_no_endpoint_in_it_is_refused() -> None:
    with pytest.raises(ValueError, match="not an endpoint"):
        endpoint_slug(" / ")
