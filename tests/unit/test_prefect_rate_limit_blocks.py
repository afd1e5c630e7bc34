"""The Stripe throttle takes calls from the Prefect server a block at a time, waits
for a refused block exactly as long as the server's decay needs, and spends no
faster than the rate."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from integrations.prefect_limits import SLOTS_PER_CALL, PrefectRateLimit, wait_for_slots


class Server:
    """The Prefect server as the throttle sees it, answering from a script."""

    def __init__(self, limit: PrefectRateLimit) -> None:
        self.limit = limit
        self.occupied: list[int] = []
        self.answers: list[int] = []  # statuses to give before granting
        self.active_when_read = 0

    def ask(self, client: object, slots: int) -> int:
        if self.answers:
            return self.answers.pop(0)
        self.occupied.append(slots)
        return 200

    def read_global_concurrency_limit_by_name(self, name: str) -> SimpleNamespace:
        assert name == self.limit.name
        return SimpleNamespace(
            active_slots=self.active_when_read,
            limit=self.limit.server_limit,
            slot_decay_per_second=self.limit.server_decay_per_second,
        )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock that only moves when the throttle sleeps (or a test moves it)."""
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    # The throttle reads the time module's clock: patched there, for this test only.
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "sleep", sleep)
    return now


def connected(limit: PrefectRateLimit, monkeypatch: pytest.MonkeyPatch) -> Server:
    server = Server(limit)
    limit._ready = True  # creating the limit is tests/flows/test_rate_limit.py's business
    monkeypatch.setattr(limit, "_connected", lambda: server)
    monkeypatch.setattr(limit, "_ask", server.ask)
    return server


def test_twenty_five_calls_under_100_per_second_ask_the_server_three_times_for_ten(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)
    server = connected(throttle, monkeypatch)

    for _ in range(25):
        throttle()

    assert server.occupied == [10 * SLOTS_PER_CALL] * 3


def test_slots_left_over_from_an_earlier_second_are_not_spent_later(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)
    server = connected(throttle, monkeypatch)
    throttle()  # a block of ten, one spent
    clock[0] += 5  # an idle spell: the nine left stood for a second long gone

    throttle()

    assert server.occupied == [10 * SLOTS_PER_CALL] * 2


def test_a_call_needing_more_than_a_block_takes_as_many_blocks_as_it_needs(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=25)
    server = connected(throttle, monkeypatch)

    throttle(7)

    assert server.occupied == [3 * SLOTS_PER_CALL] * 3


def test_a_refused_block_is_asked_for_again_once_enough_slots_have_decayed(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)
    server = connected(throttle, monkeypatch)
    server.answers = [423]
    server.active_when_read = 1500  # of 2,000: 500 more must decay, at 10,000 a second
    began = clock[0]

    throttle()

    assert server.occupied == [1000]
    assert clock[0] - began == pytest.approx(501 / 10_000)


def test_calls_are_spent_no_faster_than_the_rate_even_from_a_block_in_hand(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)
    connected(throttle, monkeypatch)
    began = clock[0]

    for _ in range(10):
        throttle()

    # The tenth call goes nine hundredths of a second after the first, not at once.
    assert clock[0] - began == pytest.approx(0.09)


def test_the_wait_for_a_block_is_the_shortfall_plus_the_slot_the_floored_reading_hides() -> None:
    assert wait_for_slots(occupied=2000, limit=2000, wanted=1000, decay_per_second=10_000) == (
        pytest.approx(0.1001)
    )
    assert wait_for_slots(occupied=0, limit=2000, wanted=1000, decay_per_second=10_000) == (
        pytest.approx(0.0001)
    )


def test_the_wait_is_capped_so_a_raised_or_abandoned_limit_is_looked_at_again() -> None:
    assert wait_for_slots(occupied=10**9, limit=2000, wanted=1000, decay_per_second=1) == 1.0
    assert wait_for_slots(occupied=0, limit=2000, wanted=1000, decay_per_second=0) == 1.0


def test_a_busy_server_is_asked_again_within_milliseconds_not_the_clients_seconds(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)
    server = connected(throttle, monkeypatch)
    server.answers = [503, 503, 503]
    began = clock[0]

    throttle()

    assert server.occupied == [1000]
    assert clock[0] - began == pytest.approx(0.01 + 0.02 + 0.04)


def test_only_a_grant_a_refusal_or_a_busy_server_is_waited_on_anything_else_is_raised() -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)

    def answering(status: int) -> Any:
        def send(request: httpx.Request) -> httpx.Response:
            assert request.url.path.endswith("/v2/concurrency_limits/increment")
            return httpx.Response(status, request=request)

        http = httpx.Client(base_url="http://prefect.test/api", transport=httpx.MockTransport(send))
        return SimpleNamespace(_client=http)

    for status in (200, 423, 503):
        assert throttle._ask(answering(status), 1000) == status
    with pytest.raises(httpx.HTTPStatusError):
        throttle._ask(answering(404), 1000)


def _answering_then_granting(failures: list[Exception]) -> Any:
    """A Prefect server whose first answers are lost (``failures``), then grants."""

    def send(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, request=request)

    http = httpx.Client(base_url="http://prefect.test/api", transport=httpx.MockTransport(send))
    return SimpleNamespace(_client=http)


def test_a_request_that_timed_out_or_lost_its_connection_is_asked_again_not_fatal(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Prefect client retries these itself; the throttle sends past it, so it must.
    throttle = PrefectRateLimit("stripe", per_second=100)
    throttle._ready = True
    server = _answering_then_granting(
        [
            httpx.ReadTimeout("timed out"),
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.ReadError("connection reset"),
        ]
    )
    monkeypatch.setattr(throttle, "_connected", lambda: server)

    throttle()

    assert throttle._left == throttle.block - 1


def test_a_server_that_never_answers_fails_the_call_after_five_minutes_with_its_error(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = PrefectRateLimit("stripe", per_second=100)
    throttle._ready = True
    began = clock[0]

    def send(request: httpx.Request) -> httpx.Response:
        clock[0] += 60  # each attempt waits out the client's read timeout
        raise httpx.ReadTimeout("timed out")

    http = httpx.Client(base_url="http://prefect.test/api", transport=httpx.MockTransport(send))
    monkeypatch.setattr(throttle, "_connected", lambda: SimpleNamespace(_client=http))

    with pytest.raises(httpx.ReadTimeout):
        throttle()

    # Five attempts a minute apart, their short pauses between: then the error is raised.
    assert 300 <= clock[0] - began < 302
