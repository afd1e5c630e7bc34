"""A worker keeps its shard's lease alive while the shard's work runs, and stops when
the work ends or another worker took the shard over."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain.shards import Shard
from integrations.ledger.memory.shards import InMemoryShardStore
from tasks.shards import lease_kept

KEY = "send-ask-emails/run-1"
# Short enough for a test, long enough that a busy machine renews well before it ends.
LEASE = timedelta(seconds=0.6)


def _until(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _renewals(store: InMemoryShardStore) -> int:
    return sum(1 for call in store.calls if call[0] == "renew")


def test_a_shards_lease_is_renewed_while_its_work_runs_and_no_longer_after() -> None:
    store = InMemoryShardStore()
    store.open(KEY, 1, datetime.now(UTC))
    claimed = store.claim(KEY, 0, "w1", datetime.now(UTC), LEASE)
    assert claimed is not None

    with lease_kept(store, KEY, Shard(0, 1), "w1", LEASE) as kept:
        # The work outlasts its first lease: renewals keep it held.
        assert _until(lambda: kept.renewals >= 2)
        (state,) = store.shards(KEY)
        assert state.lease_until is not None
        assert claimed.lease_until is not None
        assert state.lease_until > claimed.lease_until
    after = _renewals(store)
    time.sleep(LEASE.total_seconds())

    assert _renewals(store) == after  # the thread stopped with the work
    (state,) = store.shards(KEY)
    assert (state.claimed_by, state.attempts, kept.lost) == ("w1", 1, False)


def test_renewals_stop_once_another_worker_took_the_shard_over() -> None:
    store = InMemoryShardStore()
    now = datetime.now(UTC)
    store.open(KEY, 1, now)
    store.claim(KEY, 0, "w1", now, LEASE)
    # The lease ran out (a stalled worker) and w2 claimed the shard.
    store.claim(KEY, 0, "w2", now + LEASE * 2, LEASE)

    with lease_kept(store, KEY, Shard(0, 1), "w1", LEASE) as kept:
        assert _until(lambda: kept.lost)
        tried = _renewals(store)
        time.sleep(LEASE.total_seconds())
        assert _renewals(store) == tried  # one refused renewal, then none

    (state,) = store.shards(KEY)
    assert (state.claimed_by, kept.renewals) == ("w2", 0)
