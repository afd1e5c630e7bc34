"""Rate limits shared by every worker, kept by the Prefect server.

Stripe allows 100 requests/s live and 25/s in test mode, across all of an account's
clients. A strict Prefect global rate limit makes every worker ask the server for
slots before it calls, so the whole fleet stays under the rate, not each worker alone.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

# The server's limit counts hundredths of a call. Prefect 3.8's server decays occupied
# slots by floor(decay x seconds since the row's last grant) and restarts that clock on
# every grant, so each grant throws away the fraction of a slot decayed since the last
# whole one: up to a whole call per grant when a slot is a call (measured: 86 % of the
# rate for one worker), a hundredth of one here (99.7 %).
SLOTS_PER_CALL = 100
# Never sleep longer than this between two looks at a limit that keeps refusing: the
# limit may have been raised, or its holders may have gone.
MAX_WAIT_S = 1.0
GRANTED, LOCKED, BUSY = 200, 423, 503
# A busy server is asked again after this, doubling up to MAX_WAIT_S.
FIRST_BUSY_PAUSE_S = 0.01
# A request that got no answer (timed out, connection dropped) is asked again until the
# server has been unreachable this long. A Prefect server on SQLite holds a request up
# to 60 s while another connection keeps its database locked (its busy_timeout), the
# same as the client's read timeout, and such a spell must not fail a payout run.
UNANSWERED_GIVE_UP_S = 300.0


class PrefectRateLimit:
    """A strict global rate limit named ``name`` allowing ``per_second`` calls.

    Calls are taken from the server a block (a tenth of a second's worth) at a time and
    spent here, call by call, so a worker asks the server a few times a second, not
    once per call. The limit's capacity is two blocks: enough that one worker's grant
    never waits for another's block to drain, small enough that a burst after an idle
    spell overshoots the rate by at most a fifth of a second's worth. A block not spent
    within the second it was granted for is dropped, so calls saved up during a pause
    cannot be spent on top of other workers' later; and a block is spent no faster
    than the rate (measured: a third fewer 429s from Stripe's one-second window).

    A refused request costs the server nothing (Prefect rolls the attempt back), but
    the Prefect client would then sleep a jittered guess (its ``Retry-After``) while
    freed slots go unused. Instead this reads the limit's occupied slots and sleeps
    until exactly enough have decayed for a block.
    """

    def __init__(self, name: str, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.name = name
        self.per_second = per_second
        self.block = max(1, math.ceil(per_second / 10))
        self.capacity = 2 * self.block
        self._ready = False
        self._lock = threading.Lock()
        self._left = 0
        self._good_until = 0.0
        self._paced_until = 0.0
        self._client: SyncPrefectClient | None = None
        self._closing: weakref.finalize[Any, Any] | None = None

    @property
    def server_limit(self) -> int:
        """The limit's size on the Prefect server, in hundredths of a call."""
        return self.capacity * SLOTS_PER_CALL

    @property
    def server_decay_per_second(self) -> float:
        """The limit's slot decay on the Prefect server, in hundredths of a call."""
        return self.per_second * SLOTS_PER_CALL

    def ensure(self) -> None:
        """Create the limit on the Prefect server, or set it to this rate."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import (
            GlobalConcurrencyLimitCreate,
            GlobalConcurrencyLimitUpdate,
        )
        from prefect.exceptions import ObjectNotFound

        wanted = (self.server_limit, self.server_decay_per_second, True)
        with get_client(sync_client=True) as client:
            try:
                current = client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=self.name,
                        limit=self.server_limit,
                        slot_decay_per_second=self.server_decay_per_second,
                        active=True,
                    )
                )
            else:
                if (current.limit, current.slot_decay_per_second, current.active) != wanted:
                    client.update_global_concurrency_limit(
                        self.name,
                        GlobalConcurrencyLimitUpdate(
                            limit=self.server_limit,
                            slot_decay_per_second=self.server_decay_per_second,
                            active=True,
                        ),
                    )
        self._ready = True

    def __call__(self, requests: int = 1) -> None:
        """Block until ``requests`` calls may be made under the rate."""
        if not self._ready:
            self.ensure()
        with self._lock:
            if time.monotonic() > self._good_until:
                self._left = 0
            while self._left < requests:
                self._left += self._take_block()
                self._good_until = time.monotonic() + 1.0
            self._left -= requests
            # Spent no faster than the rate: a block spent at once, on top of the other
            # workers' blocks, bursts past Stripe's window even though the server's
            # grants keep to the rate.
            now = time.monotonic()
            start = max(self._paced_until, now)
            if start > now:
                time.sleep(start - now)
            self._paced_until = start + requests / self.per_second

    def close(self) -> None:
        """Close the connection to the Prefect server, if one was opened."""
        with self._lock:
            closing, self._closing = self._closing, None
            self._client = None
        if closing is not None:
            closing()

    def __enter__(self) -> PrefectRateLimit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_block(self) -> int:
        """Occupy one block of calls on the server, waiting as long as it takes; the
        number of calls occupied."""
        client = self._connected()
        slots = self.block * SLOTS_PER_CALL
        busy_pause = FIRST_BUSY_PAUSE_S
        unanswered_since: float | None = None
        while True:
            asked_at = time.monotonic()
            try:
                status = self._ask(client, slots)
            except httpx.TransportError:
                # What the Prefect client would have retried (read timeouts, dropped
                # and reset connections); bypassing it must not make them fatal.
                unanswered_since = unanswered_since or asked_at
                if time.monotonic() - unanswered_since >= UNANSWERED_GIVE_UP_S:
                    raise
                # Slots the lost request may have taken are not counted here: at
                # worst this worker runs below the rate for a moment, never above.
                status = BUSY
            else:
                unanswered_since = None
            if status == GRANTED:
                return self.block
            if status == BUSY:
                time.sleep(busy_pause)
                busy_pause = min(2 * busy_pause, MAX_WAIT_S)
                continue
            limit = client.read_global_concurrency_limit_by_name(self.name)
            time.sleep(
                wait_for_slots(limit.active_slots, limit.limit, slots, limit.slot_decay_per_second)
            )

    def _ask(self, client: SyncPrefectClient, slots: int) -> int:
        """One request for ``slots``: 200 granted, 423 refused, 503 the server was busy.

        Sent past the Prefect client's own retries: a Prefect server on SQLite answers
        503 when another write lands inside its read-then-update (often: the run's own
        task events), and the client then sleeps 2 s, 4 s, 8 s before asking again
        (even with PREFECT_CLIENT_MAX_RETRIES=0, once). That was most of the time from
        an approval to its payout (measured: 1.7-2.5 s in half the runs).
        """
        http = client._client  # the plain httpx client under Prefect's retrying one
        request = http.build_request(
            "POST",
            "/v2/concurrency_limits/increment",
            json={"names": [self.name], "slots": slots, "mode": "rate_limit"},
        )
        response = httpx.Client.send(http, request)
        if response.status_code not in (GRANTED, LOCKED, BUSY):
            response.raise_for_status()
        return response.status_code

    def _connected(self) -> SyncPrefectClient:
        # One connection for the throttle's life: opening a client per block cost a
        # fifth of the rate (measured, 4 workers on 2 CPUs).
        if self._client is None:
            from prefect.client.orchestration import get_client

            client: Any = get_client(sync_client=True)
            self._client = client.__enter__()
            # Also closed when the throttle is collected: callers rarely close it.
            self._closing = weakref.finalize(self, _close_client, client)
        return self._client


def wait_for_slots(occupied: int, limit: int, wanted: int, decay_per_second: float) -> float:
    """Seconds until ``wanted`` slots fit under ``limit``, ``occupied`` decaying.

    One slot more than the shortfall, since the server's reading is floored: up to a
    slot has decayed already that it does not show yet.
    """
    if decay_per_second <= 0:
        return MAX_WAIT_S
    short = max(occupied + wanted - limit, 0) + 1
    return min(short / decay_per_second, MAX_WAIT_S)


def _close_client(client: Any) -> None:
    # At interpreter shutdown the connection goes with the process anyway.
    with contextlib.suppress(Exception):
        client.__exit__(None, None, None)


class StripeRateLimits:
    """Stripe's two limits for the whole fleet: the account's rate and each endpoint's.

    Every request takes a slot of the global limit ``name`` (``per_second``); a request
    naming its endpoint first takes one of that endpoint's own limit
    (``<name>-post-v1-transfers`` for ``POST /v1/transfers``, ``endpoint_per_second``),
    created on the server the first time the endpoint is called. Stripe allows 25
    requests/s per endpoint by default besides 100/s live: without the second limit a
    live fleet paying at 100/s would see three transfers in four answered 429. An
    endpoint limit at or above the global one could never bind and is not kept.
    """

    def __init__(
        self, name: str, per_second: float, endpoint_per_second: float | None = None
    ) -> None:
        self.overall = PrefectRateLimit(name, per_second)
        self.endpoint_per_second = (
            endpoint_per_second
            if endpoint_per_second is not None and endpoint_per_second < per_second
            else None
        )
        self._endpoints: dict[str, PrefectRateLimit] = {}
        self._lock = threading.Lock()

    def __call__(self, requests: int = 1, *, endpoint: str | None = None) -> None:
        """Block until ``requests`` requests to ``endpoint`` fit under both limits."""
        if endpoint is not None and self.endpoint_per_second is not None:
            # The narrower limit first: a global slot taken and then held while the
            # endpoint's limit makes us wait would be a slot other endpoints lose.
            self.endpoint_limit(endpoint)(requests)
        self.overall(requests)

    def endpoint_limit(self, endpoint: str) -> PrefectRateLimit:
        """The limit of one endpoint (``"POST /v1/transfers"``), made on first use."""
        if self.endpoint_per_second is None:
            raise ValueError("no endpoint limit is kept: it would not bind")
        with self._lock:
            limit = self._endpoints.get(endpoint)
            if limit is None:
                name = f"{self.overall.name}-{endpoint_slug(endpoint)}"
                limit = self._endpoints[endpoint] = PrefectRateLimit(name, self.endpoint_per_second)
            return limit

    def close(self) -> None:
        """Close every limit's connection to the Prefect server."""
        with self._lock:
            limits = [self.overall, *self._endpoints.values()]
        for limit in limits:
            limit.close()


def endpoint_slug(endpoint: str) -> str:
    """``"POST /v1/transfers/{id}/reversals"`` -> ``"post-v1-transfers-id-reversals"``.

    Prefect refuses ``/`` (and a few other characters) in a limit's name.
    """
    words = re.findall(r"[a-z0-9_]+", endpoint.lower())
    if not words:
        raise ValueError(f"not an endpoint: {endpoint!r}")
    return "-".join(words)
