"""The Stripe rate limit lives on the Prefect server, shared by every worker."""

from __future__ import annotations

from prefect.client.orchestration import get_client

from integrations.prefect_limits import PrefectRateLimit, StripeRateLimits


def _limit(name: str) -> tuple[int, float, bool]:
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.limit, limit.slot_decay_per_second, limit.active


def test_the_limit_is_created_on_first_use_counting_hundredths_of_a_call() -> None:
    throttle = PrefectRateLimit("stripe-test-create", per_second=25)
    for _ in range(5):
        throttle()
    # 25 calls a second: blocks of 3 calls, room for two (600 hundredths), decaying 2,500/s.
    assert _limit("stripe-test-create") == (600, 2500.0, True)


def test_a_changed_rate_corrects_the_existing_limit() -> None:
    PrefectRateLimit("stripe-test-change", per_second=25)()
    PrefectRateLimit("stripe-test-change", per_second=100)()
    assert _limit("stripe-test-change") == (2000, 10000.0, True)


def test_calls_past_the_capacity_wait_on_the_server_and_keep_to_the_rate() -> None:
    import time

    throttle = PrefectRateLimit("stripe-test-rate", per_second=50)
    began = time.monotonic()
    for _ in range(40):
        throttle()
    # A lower bound, not a timing: 40 calls at 50/s cannot all go in under 39/50 s.
    assert time.monotonic() - began >= 39 / 50


def test_an_endpoint_gets_its_own_limit_on_the_server_beside_the_accounts() -> None:
    limits = StripeRateLimits("stripe-test-endpoints", per_second=100, endpoint_per_second=25)
    limits(1, endpoint="POST /v1/transfers")
    limits.close()
    assert _limit("stripe-test-endpoints") == (2000, 10000.0, True)
    assert _limit("stripe-test-endpoints-post-v1-transfers") == (600, 2500.0, True)
