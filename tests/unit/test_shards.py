"""The shard rules: a key's shard is stable and spread, a shard is claimed by one
worker at a time under a lease, taken over only after the lease, and done once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from domain.shards import (
    MAX_SHARDS,
    Shard,
    ShardState,
    all_done,
    all_shards,
    claimable,
    claimed,
    may_complete,
    needs_takeover,
    renewed,
    run_key,
    shard_of,
    summed,
    to_submit_again,
    worker_identity,
)

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)


def test_a_keys_shard_is_fixed_by_its_bytes_alone() -> None:
    # Fixed values: a change of hash would move rows between the shards of a run
    # already under way in another process (and away from what PostgreSQL computes).
    assert [shard_of(k, 4) for k in ("C1", "C2", "C3", "", "Zoë")] == [1, 1, 2, 1, 3]
    assert shard_of("contact-42", 2**32) == 1_263_948_316  # the MD5's first 32 bits
    assert shard_of("C1", 1) == 0


def test_keys_spread_evenly_over_the_shards() -> None:
    counts = Counter(shard_of(f"C{i:06d}", 4) for i in range(20_000))
    assert set(counts) == {0, 1, 2, 3}
    # Each shard within 5 % of a quarter: the work is split, not piled on one worker.
    assert all(abs(n - 5_000) < 250 for n in counts.values())


def test_every_key_belongs_to_exactly_one_shard() -> None:
    shards = all_shards(5)
    for key in ("C1", "C2", "x" * 200, "Zoë"):
        assert sum(s.holds(key) for s in shards) == 1


@pytest.mark.parametrize(("index", "of"), [(0, 0), (-1, 4), (4, 4), (0, MAX_SHARDS + 1)])
def test_a_shard_outside_its_stage_is_refused(index: int, of: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard(index, of)


def test_an_unclaimed_shard_is_claimed_once_and_held_against_others_until_its_lease_ends() -> None:
    fresh = ShardState("send-ask-emails/run", 0, 2)
    mine = claimed(fresh, "w1", NOW, LEASE)

    assert (mine.claimed_by, mine.lease_until, mine.attempts) == ("w1", NOW + LEASE, 1)
    assert not claimable(mine, "w2", NOW + LEASE - timedelta(seconds=1))
    assert claimable(mine, "w1", NOW)  # a retry of the same run renews its own claim
    assert not needs_takeover(mine, NOW + LEASE - timedelta(seconds=1))

    # The lease ran out unfinished: the worker is taken to be lost.
    assert needs_takeover(mine, NOW + LEASE)
    theirs = claimed(mine, "w2", NOW + LEASE, LEASE)
    assert (theirs.claimed_by, theirs.attempts) == ("w2", 2)
    with pytest.raises(ValueError, match="not claimable"):
        claimed(theirs, "w1", NOW + LEASE, LEASE)


def test_a_done_shard_is_never_claimed_again_nor_done_twice() -> None:
    done = ShardState("k", 1, 2, "w1", NOW, 1, done_at=NOW)

    assert not claimable(done, "w1", NOW + timedelta(days=1))
    assert not claimable(done, "w2", NOW + timedelta(days=1))
    assert not may_complete(done, "w1")
    assert not needs_takeover(done, NOW + timedelta(days=1))


def test_only_the_holder_marks_a_shard_done_even_after_its_lease_when_nobody_took_it() -> None:
    held = claimed(ShardState("k", 0, 1), "w1", NOW, LEASE)
    assert may_complete(held, "w1")
    assert not may_complete(held, "w2")
    # Late but whole: nobody claimed it since, so its mark stands.
    assert may_complete(ShardState("k", 0, 1, "w1", NOW - LEASE, 1), "w1")
    assert not may_complete(ShardState("k", 0, 1), "w1")


def test_the_holder_renews_its_lease_without_counting_an_attempt_and_nobody_else_can() -> None:
    held = claimed(ShardState("k", 0, 1), "w1", NOW, LEASE)
    later = NOW + LEASE / 2

    kept = renewed(held, "w1", later, LEASE)

    assert (kept.claimed_by, kept.lease_until, kept.attempts) == ("w1", later + LEASE, 1)
    with pytest.raises(ValueError, match="only the worker holding"):
        renewed(held, "w2", later, LEASE)
    with pytest.raises(ValueError, match="only the worker holding"):
        renewed(ShardState("k", 0, 1, "w1", NOW, 1, done_at=NOW), "w1", later, LEASE)


def test_the_orchestrator_resubmits_a_shard_only_when_its_workers_lease_ran_out() -> None:
    states = [
        ShardState("k", 0, 4, done_at=NOW, claimed_by="w1", attempts=1),  # done
        ShardState("k", 1, 4, "w1", NOW + timedelta(minutes=1), 1),  # live lease
        ShardState("k", 2, 4, "w2", NOW - timedelta(seconds=1), 1),  # lease ran out
        ShardState("k", 3, 4),  # still queued on the pool: left to wait
    ]
    long_ago = dict.fromkeys(range(4), NOW - timedelta(hours=1))

    assert to_submit_again(states, NOW, long_ago, LEASE) == [2]
    # Submitted again just now: not again before another lease has passed.
    assert to_submit_again(states, NOW, {**long_ago, 2: NOW}, LEASE) == []
    assert to_submit_again(states[2:3], NOW + LEASE, {2: NOW}, LEASE) == [2]


def test_a_stage_run_is_done_when_each_of_its_shards_is() -> None:
    done = [ShardState("k", i, 3, "w", NOW, 1, NOW, {"accepted": i}) for i in range(3)]
    assert all_done(done, 3)
    assert not all_done(done[:2], 3)
    assert summed(done) == {"accepted": 3}


def test_names_are_bounded_and_say_nothing_secret() -> None:
    assert worker_identity("host", 123, "0d9f5c2e-aaaa") == "host:123:0d9f5c2e"
    assert len(worker_identity("h" * 100, 99999, "r" * 40)) <= 64
    assert run_key("send-ask-emails", "0d9f") == "send-ask-emails/0d9f"
    with pytest.raises(ValueError, match="at most"):
        run_key("s", "x" * 200)
