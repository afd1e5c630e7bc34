"""Rate limits shared by every worker, kept by the Prefect server.

Stripe allows 100 requests/s live and 25/s in test mode, across all of an account's
clients. A strict Prefect global rate limit makes every worker ask the server for a
slot before each call, so the whole fleet stays under the rate, not each worker alone.
"""

from __future__ import annotations

import math
import threading
import time


class PrefectRateLimit:
    """A strict global rate limit named ``name`` allowing ``per_second`` calls.

    The limit is created (or corrected) on first use. Its capacity is a fifth of a
    second's worth of calls, so a burst after an idle spell cannot overshoot the rate
    by more than that.

    Slots are taken from the server a block (a tenth of a second's worth) at a time
    and spent here, call by call. One server round trip per slot would cap the rate
    far below the limit: Prefect 3.8's server decays occupied slots by
    ``floor(rate * seconds since the row's last update)``, and every request, granted
    or denied, updates the row; a denial even drops the decay owed since the last
    update. With requests milliseconds apart most of the decay is lost and the fleet
    crawls (measured: 10/s under a 100/s limit). Blocks keep the requests to a few per
    second. A block not spent within the second it was granted for is dropped, so
    slots saved up during a pause cannot be spent on top of other workers' later.
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

    def ensure(self) -> None:
        """Create the limit on the Prefect server, or set it to this rate."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import (
            GlobalConcurrencyLimitCreate,
            GlobalConcurrencyLimitUpdate,
        )
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                current = client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=self.name,
                        limit=self.capacity,
                        slot_decay_per_second=self.per_second,
                        active=True,
                    )
                )
            else:
                if (current.limit, current.slot_decay_per_second, current.active) != (
                    self.capacity,
                    self.per_second,
                    True,
                ):
                    client.update_global_concurrency_limit(
                        self.name,
                        GlobalConcurrencyLimitUpdate(
                            limit=self.capacity,
                            slot_decay_per_second=self.per_second,
                            active=True,
                        ),
                    )
        self._ready = True

    def __call__(self, requests: int = 1) -> None:
        """Block until ``requests`` calls may be made under the rate."""
        from prefect.concurrency.sync import rate_limit

        if not self._ready:
            self.ensure()
        with self._lock:
            if time.monotonic() > self._good_until:
                self._left = 0
            while self._left < requests:
                rate_limit(self.name, occupy=self.block, strict=True)
                self._left += self.block
                self._good_until = time.monotonic() + 1.0
            self._left -= requests
