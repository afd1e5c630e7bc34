"""A throttle that keeps what it was asked, for the Stripe adapters' tests."""

from __future__ import annotations

import fnmatch


class RecordingThrottle:
    """Records every ``(requests, endpoint)`` an adapter announced before a request."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []

    def __call__(self, requests: int = 1, *, endpoint: str | None = None) -> None:
        self.calls.append((requests, endpoint))

    @property
    def requests(self) -> int:
        return sum(n for n, _ in self.calls)

    @property
    def endpoints(self) -> list[str | None]:
        return [endpoint for _, endpoint in self.calls]


def endpoint_matches(endpoint: str | None, route: str) -> bool:
    """Whether Stripe's name of an endpoint (ids as ``{id}``) is a route the fake saw."""
    return endpoint is not None and fnmatch.fnmatchcase(route, endpoint.replace("{id}", "*"))
