"""The ``shards`` store in memory (issue 17): the rules of :mod:`domain.shards` applied
to a dict, as the SQL store applies them to the ``shards`` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from domain.shards import MAX_SHARDS, ShardState, claimable, claimed, may_complete, renewed


class InMemoryShardStore:
    """Shards of stage runs, as the SQL store
    (:class:`~integrations.ledger.shards.SqlShardStore`) keeps them.

    Differences from the SQL store: the table's triggers are the rules themselves here
    (a done shard is never written again because no method writes one).

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
        rows: (run key, shard) -> its state.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.rows: dict[tuple[str, int], ShardState] = {}

    def open(self, run_key: str, of_shards: int, now: datetime) -> None:
        self.calls.append(("open", run_key, of_shards, now))
        if not 1 <= of_shards <= MAX_SHARDS:
            raise ValueError(f"a stage splits into 1 to {MAX_SHARDS} shards")
        if any(k == run_key and s.of_shards != of_shards for (k, _), s in self.rows.items()):
            raise ValueError(f"stage run {run_key!r} was opened with another shard count")
        for index in range(of_shards):
            self.rows.setdefault((run_key, index), ShardState(run_key, index, of_shards))

    def claim(
        self, run_key: str, shard: int, worker: str, now: datetime, lease: timedelta
    ) -> ShardState | None:
        self.calls.append(("claim", run_key, shard, worker, now, lease))
        if lease <= timedelta(0):
            raise ValueError("a lease lasts some time")
        state = self.rows.get((run_key, shard))
        if state is None or not claimable(state, worker, now):
            return None
        self.rows[(run_key, shard)] = claimed(state, worker, now, lease)
        return self.rows[(run_key, shard)]

    def renew(self, run_key: str, shard: int, worker: str, now: datetime, lease: timedelta) -> bool:
        self.calls.append(("renew", run_key, shard, worker, now, lease))
        if lease <= timedelta(0):
            raise ValueError("a lease lasts some time")
        state = self.rows.get((run_key, shard))
        if state is None or not may_complete(state, worker):
            return False
        self.rows[(run_key, shard)] = renewed(state, worker, now, lease)
        return True

    def complete(
        self, run_key: str, shard: int, worker: str, now: datetime, outcome: Mapping[str, int]
    ) -> bool:
        self.calls.append(("complete", run_key, shard, worker, now, dict(outcome)))
        state = self.rows.get((run_key, shard))
        if state is None or not may_complete(state, worker):
            return False
        self.rows[(run_key, shard)] = replace(
            state, done_at=now, outcome={k: int(v) for k, v in outcome.items()}
        )
        return True

    def shards(self, run_key: str) -> list[ShardState]:
        self.calls.append(("shards", run_key))
        return [s for (k, _), s in sorted(self.rows.items()) if k == run_key]
