"""Running a stage as shards (issue 17): claiming and completing one shard, and
watching a stage run's shards until every one is done.

The rules are :mod:`domain.shards`; the shard table is the ``shards`` store; where a
shard runs is the ``ShardRuns`` port (a deployment run on the work pool).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.shards import (
    Shard,
    ShardRuns,
    ShardState,
    all_done,
    all_shards,
    summed,
    to_submit_again,
)
from domain.stores.shards import ShardStore
from tasks._support import run_logger


class ShardsNotDone(RuntimeError):
    """A sharded stage's deadline passed before all its shards were done."""


@task(name="claim-shard", cache_policy=NO_CACHE)
def claim_shard(
    store: ShardStore, key: str, shard: Shard, worker: str, now: datetime, lease: timedelta
) -> ShardState | None:
    """Claim ``shard`` of stage run ``key`` for ``worker``; None when it is done or
    another worker holds it under a live lease (this run then has nothing to do)."""
    state = store.claim(key, shard.index, worker, now, lease)
    if state is None:
        run_logger().info("shard %d of %d: done or held by another worker", shard.index, shard.of)
    else:
        run_logger().info(
            "shard %d of %d claimed (attempt %d)", shard.index, shard.of, state.attempts
        )
    return state


@dataclass
class LeaseKeeping:
    """What keeping a shard's lease came to: renewals made, and whether the shard was
    found taken over (its lease had run out and another worker claimed it)."""

    renewals: int = 0
    lost: bool = False


@contextmanager
def lease_kept(
    store: ShardStore,
    key: str,
    shard: Shard,
    worker: str,
    lease: timedelta,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[LeaseKeeping]:
    """Renew ``worker``'s lease on ``shard`` every third of ``lease`` while the block runs.

    A shard whose work outlasts one lease would otherwise look lost to the stage run,
    which submits it again: a second worker would then redo the shard's reads for
    nothing (its writes are idempotent per row). Renewing from a thread keeps the lease
    live exactly as long as this process is; a killed worker stops renewing, and its
    shard is taken over one lease later, as before. A renewal refused (the shard was
    taken over meanwhile) stops the renewals; the work goes on and its done mark is
    refused (:func:`complete_shard`).
    """
    kept = LeaseKeeping()
    stop = threading.Event()
    every = lease.total_seconds() / 3

    def renew_until_stopped() -> None:
        while not stop.wait(every):
            try:
                if not store.renew(key, shard.index, worker, clock(), lease):
                    kept.lost = True
                    run_logger().warning(
                        "shard %d of %d: its lease was taken over; not renewed any more",
                        shard.index,
                        shard.of,
                    )
                    return
                kept.renewals += 1
            except Exception:
                # A busy database now and then: the next third of the lease tries again.
                run_logger().warning(
                    "shard %d of %d: lease renewal failed; trying again", shard.index, shard.of
                )

    # The run's context goes with the thread, so its warnings reach the run's log.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(renew_until_stopped,), name="shard-lease", daemon=True
    )
    thread.start()
    try:
        yield kept
    finally:
        stop.set()
        thread.join()


@task(name="complete-shard", cache_policy=NO_CACHE)
def complete_shard(
    store: ShardStore,
    key: str,
    shard: Shard,
    worker: str,
    now: datetime,
    outcome: Mapping[str, int],
) -> bool:
    """Mark ``shard`` done with what its work reported; False when another worker took
    it over meanwhile (its work was per row idempotent: nothing was done twice)."""
    marked = store.complete(key, shard.index, worker, now, outcome)
    if not marked:
        run_logger().warning(
            "shard %d of %d was taken over before it finished here", shard.index, shard.of
        )
    return marked


@task(name="run-sharded", cache_policy=NO_CACHE)
def run_sharded(
    store: ShardStore,
    runs: ShardRuns,
    stage: str,
    key: str,
    of_shards: int,
    now: datetime,
    lease: timedelta,
    deadline: timedelta,
    poll_seconds: float = 2.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, int]:
    """Split ``stage`` into ``of_shards`` shard runs and wait until all are done.

    Opens the shards (a retry of the same stage run finds those already done), submits
    one run per shard not done, then watches the shard table: a shard whose lease ran
    out unfinished is submitted again, and the first worker to claim it takes it over
    (:func:`domain.shards.to_submit_again`). Counts only are logged.

    Args:
        store: the shard table.
        runs: where shard runs start (the run-shard deployment on the work pool).
        stage: the stage's name, as the run-shard flow knows its work.
        key: the stage run's key (:func:`domain.shards.run_key`).
        of_shards: how many shards.
        now: the stage's time, handed to every shard's work.
        lease: how long a claim lasts.
        deadline: how long to wait for every shard.
        poll_seconds: how often the shard table is read.
        clock: the time now (tests replace it).

    Returns:
        The shards' outcomes added up, with ``shard_runs`` (runs submitted) and
        ``shards_taken_over`` (of those, submitted again).

    Raises:
        ShardsNotDone: the deadline passed first; the message counts the shards left.
    """
    store.open(key, of_shards, now)
    submitted: dict[int, datetime] = {}
    attempts: dict[int, int] = {}
    taken_over = 0
    states = store.shards(key)
    for shard in all_shards(of_shards):
        if not states[shard.index].done:
            runs.submit(stage, key, shard, now, attempt=1)
            submitted[shard.index], attempts[shard.index] = clock(), 1
    run_logger().info("%s: %d shard runs submitted", stage, len(submitted))
    give_up = clock() + deadline
    while not all_done(states := store.shards(key), of_shards):
        current = clock()
        if current >= give_up:
            left = sum(1 for s in states if not s.done)
            raise ShardsNotDone(f"{stage}: {left} of {of_shards} shards not done by the deadline")
        for index in to_submit_again(states, current, submitted, lease):
            attempts[index] = attempts.get(index, 0) + 1
            runs.submit(stage, key, Shard(index, of_shards), now, attempt=attempts[index])
            submitted[index] = current
            taken_over += 1
            run_logger().warning(
                "%s: shard %d of %d submitted again (attempt %d): its lease ran out unfinished",
                stage,
                index,
                of_shards,
                attempts[index],
            )
        time.sleep(poll_seconds)
    total = summed(states)
    run_logger().info("%s: all %d shards done", stage, of_shards)
    return {**total, "shard_runs": len(submitted) + taken_over, "shards_taken_over": taken_over}
