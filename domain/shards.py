"""Shards: a stage's work split by key so several workers share it, each shard once.

A stage that shards (today: sending the queued asks and the referrer notifications)
splits its rows by a stable hash of a key (the contact id), ``shard_of(key, of_shards)``.
The same key lands in the same shard in every process, on SQLite and on PostgreSQL
(both compute the same hash in SQL: :mod:`integrations.ledger.shards`), so a shard's rows
are a fixed set whoever runs it.

Each (stage run, shard) is one row of the shard table, claimed before its work with a
lease (``claimed_by``, ``lease_until``), the way payouts are claimed
(``payouts.claimed_by``/``claimed_until``). The rules here decide:

* who may claim: nobody once the shard is done; anyone while it is unclaimed; another
  worker only after the holder's lease ran out (:func:`claimable`);
* when the orchestrator takes a shard over: claimed, not done, lease run out
  (:func:`needs_takeover`); it then submits the shard again, and the first worker to
  claim it holds it;
* who may mark it done: the worker holding the claim, once (:func:`may_complete`).

A done shard is never un-done nor claimed again: the rules say so, and triggers on
the table refuse it (migration 0027).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

#: Most shards a stage splits into: a shard is a flow run, and a few per worker suffice.
MAX_SHARDS = 256
#: Longest worker identity kept (``shards.claimed_by``).
WORKER_CHARS = 64
#: Longest stage run key kept (``shards.run_key``).
RUN_KEY_CHARS = 128


def shard_of(key: str, of_shards: int) -> int:
    """The shard of ``key`` among ``of_shards``: the first 32 bits of the MD5 of its
    UTF-8 bytes, modulo ``of_shards``.

    MD5 here is a spreading function, not a security one; it is the hash PostgreSQL
    has built in, so the database picks a shard's rows with the same answer.
    """
    if of_shards < 1:
        raise ValueError("a stage splits into at least one shard")
    digest = hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % of_shards


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``of``: the rows whose key :func:`shard_of` puts there."""

    index: int
    of: int

    def __post_init__(self) -> None:
        if not 1 <= self.of <= MAX_SHARDS:
            raise ValueError(f"a stage splits into 1 to {MAX_SHARDS} shards")
        if not 0 <= self.index < self.of:
            raise ValueError("a shard's index is from 0 to the number of shards less one")

    def holds(self, key: str) -> bool:
        """Whether ``key``'s rows are this shard's."""
        return shard_of(key, self.of) == self.index


def all_shards(of_shards: int) -> list[Shard]:
    """Every shard of a stage split ``of_shards`` ways."""
    return [Shard(i, of_shards) for i in range(of_shards)]


@dataclass(frozen=True)
class ShardState:
    """One shard of one stage run, as the shard table holds it."""

    run_key: str
    shard: int
    of_shards: int
    claimed_by: str | None = None
    lease_until: datetime | None = None
    attempts: int = 0
    done_at: datetime | None = None
    # What the shard's work reported (counts), kept with its done mark.
    outcome: Mapping[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.done_at is not None


def claimable(state: ShardState, worker: str, now: datetime) -> bool:
    """Whether ``worker`` may claim ``state`` at ``now``.

    Never a done shard. An unclaimed one, yes. One whose lease ran out, yes (its holder
    is taken to be lost). One ``worker`` holds already, yes (a retry of the same run
    renews its own lease). Otherwise no: another worker holds it.
    """
    if state.done:
        return False
    if state.claimed_by is None or state.claimed_by == worker:
        return True
    return state.lease_until is not None and state.lease_until <= now


def claimed(state: ShardState, worker: str, now: datetime, lease: timedelta) -> ShardState:
    """``state`` after ``worker`` claims it at ``now`` for ``lease`` (one more attempt).

    Raises:
        ValueError: the claim is not allowed (:func:`claimable`).
    """
    if not claimable(state, worker, now):
        raise ValueError("shard not claimable: done, or held by another worker's lease")
    if lease <= timedelta(0):
        raise ValueError("a lease lasts some time")
    return ShardState(
        state.run_key,
        state.shard,
        state.of_shards,
        claimed_by=worker,
        lease_until=now + lease,
        attempts=state.attempts + 1,
    )


def may_complete(state: ShardState, worker: str) -> bool:
    """Whether ``worker`` may mark ``state`` done: it holds the claim and it is not done.

    A worker whose lease ran out still may, as long as nobody claimed the shard since:
    its work is whole. Once another worker claimed it, the late one's mark is refused
    (and a stage whose work commits with the mark rolls that work back).
    """
    return not state.done and state.claimed_by == worker


def renewed(state: ShardState, worker: str, now: datetime, lease: timedelta) -> ShardState:
    """``state`` with ``worker``'s lease extended to ``now + lease`` (not a new attempt).

    A worker renews while its shard's work runs, so a shard slower than one lease is not
    taken over from a live worker. Only the holder of a shard not done may renew, even
    after its lease ran out as long as nobody claimed it since (:func:`may_complete`).

    Raises:
        ValueError: ``worker`` does not hold the shard, or it is done.
    """
    if not may_complete(state, worker):
        raise ValueError("only the worker holding a shard not done renews its lease")
    if lease <= timedelta(0):
        raise ValueError("a lease lasts some time")
    return replace(state, lease_until=now + lease)


def needs_takeover(state: ShardState, now: datetime) -> bool:
    """Whether the orchestrator should submit ``state`` again: claimed, not done, and
    its lease ran out (its worker is lost, killed, or far too slow)."""
    return (
        not state.done
        and state.claimed_by is not None
        and state.lease_until is not None
        and state.lease_until <= now
    )


def all_done(states: Iterable[ShardState], of_shards: int) -> bool:
    """Whether every one of the ``of_shards`` shards is done."""
    done = {s.shard for s in states if s.done}
    return done == set(range(of_shards))


def worker_identity(host: str, pid: int, run: str = "") -> str:
    """Who claims: ``host:pid`` (and the first characters of the flow run id), cut to
    the column's size. Nothing secret: a host name and a process id."""
    name = f"{host[:40]}:{pid}" + (f":{run[:8]}" if run else "")
    return name[:WORKER_CHARS]


def run_key(stage: str, run: str) -> str:
    """The key of one stage run's shards: the stage and the run that orchestrates it
    (a retry of that run finds its shards, and the done ones are not redone)."""
    key = f"{stage}/{run}"
    if len(key) > RUN_KEY_CHARS:
        raise ValueError(f"a stage run key has at most {RUN_KEY_CHARS} characters")
    return key


def summed(states: Iterable[ShardState]) -> dict[str, int]:
    """The shards' outcomes added up, count by count."""
    total: dict[str, int] = {}
    for state in states:
        for name, value in state.outcome.items():
            total[name] = total.get(name, 0) + int(value)
    return dict(sorted(total.items()))


def to_submit_again(
    states: Iterable[ShardState],
    now: datetime,
    submitted_at: Mapping[int, datetime],
    lease: timedelta,
) -> list[int]:
    """The shards the orchestrator submits again at ``now``: claimed, not done, their
    lease run out (:func:`needs_takeover`: the worker is lost), and not submitted again
    within the last ``lease`` (the new run may still be waiting for a worker).

    A shard no worker claimed yet is left alone however long it waits: with fewer
    workers than shards, runs queue behind each other on the pool, and a second run
    would only find the shard done. A run lost before its claim is the deadline's to
    catch; the stage run's retry submits every shard not done.
    """
    return [
        state.shard
        for state in states
        if needs_takeover(state, now)
        and (state.shard not in submitted_at or now - submitted_at[state.shard] >= lease)
    ]


class ShardRuns(Protocol):
    """Where shards run: one run per call, on whichever worker picks it up."""

    def submit(self, stage: str, key: str, shard: Shard, now: datetime, attempt: int) -> str:
        """Start a run of ``shard`` of stage run ``key`` (``stage``'s work, dated
        ``now``); the run's id. ``attempt`` numbers the submissions of one shard (the
        same number twice starts one run)."""
        ...
