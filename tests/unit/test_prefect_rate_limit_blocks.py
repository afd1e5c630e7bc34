"""The Stripe throttle takes slots from the Prefect server a block at a time."""

from __future__ import annotations

import pytest
from prefect.concurrency import sync

from integrations import prefect_limits
from integrations.prefect_limits import PrefectRateLimit


class Server:
    def __init__(self) -> None:
        self.occupied: list[int] = []

    def rate_limit(self, name: str, occupy: int, strict: bool) -> None:
        assert strict
        self.occupied.append(occupy)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    fake = Server()
    monkeypatch.setattr(sync, "rate_limit", fake.rate_limit)
    return fake


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(prefect_limits.time, "monotonic", lambda: now[0])
    return now


def ready(limit: PrefectRateLimit) -> PrefectRateLimit:
    limit._ready = True  # the server-side limit is another test's business
    return limit


def test_twenty_five_calls_under_100_per_second_ask_the_server_three_times_for_ten(
    server: Server, clock: list[float]
) -> None:
    throttle = ready(PrefectRateLimit("stripe", per_second=100))

    for _ in range(25):
        throttle()

    assert server.occupied == [10, 10, 10]


def test_slots_left_over_from_an_earlier_second_are_not_spent_later(
    server: Server, clock: list[float]
) -> None:
    throttle = ready(PrefectRateLimit("stripe", per_second=100))
    throttle()  # a block of ten, one spent
    clock[0] += 5  # an idle spell: the nine left stood for a second long gone

    throttle()

    assert server.occupied == [10, 10]


def test_a_call_needing_more_than_a_block_takes_as_many_blocks_as_it_needs(
    server: Server, clock: list[float]
) -> None:
    throttle = ready(PrefectRateLimit("stripe", per_second=25))

    throttle(7)

    assert server.occupied == [3, 3, 3]
