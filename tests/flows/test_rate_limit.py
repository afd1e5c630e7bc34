"""The Stripe rate limit lives on the Prefect server, shared by every worker."""

from __future__ import annotations

from prefect.client.orchestration import get_client

from integrations.prefect_limits import PrefectRateLimit


def _limit(name: str) -> tuple[int, float, bool]:
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.limit, limit.slot_decay_per_second, limit.active


def test_the_limit_is_created_on_first_use_with_a_fifth_of_a_second_of_capacity() -> None:
    throttle = PrefectRateLimit("stripe-test-create", per_second=25)
    for _ in range(5):
        throttle()
    assert _limit("stripe-test-create") == (6, 25.0, True)


def test_a_changed_rate_corrects_the_existing_limit() -> None:
    PrefectRateLimit("stripe-test-change", per_second=25)()
    PrefectRateLimit("stripe-test-change", per_second=100)()
    assert _limit("stripe-test-change") == (20, 100.0, True)
