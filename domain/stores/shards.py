"""The ``shards`` store: one row per (stage run, shard), claimed with a lease, done once.

The rules are :mod:`domain.shards`; this store applies them atomically (a claim is one
conditional update, so two workers racing for a shard cannot both hold it). A done
shard is never changed again: the SQL table refuses it by trigger.

:meth:`ShardStore.complete` may run inside a unit of work (``with ledger.transaction()
as uow: work(uow); uow.shards.complete(...)``): the shard's work and its done mark then
commit together, or neither does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from domain.shards import ShardState


class ShardStore(Protocol):
    """Shards of stage runs: opened, claimed with a lease, completed once."""

    def open(self, run_key: str, of_shards: int, now: datetime) -> None:
        """Make the rows of shards 0 to ``of_shards - 1`` of ``run_key`` (those missing).

        Raises:
            ValueError: ``run_key`` was opened with another number of shards.
        """
        ...

    def claim(
        self, run_key: str, shard: int, worker: str, now: datetime, lease: timedelta
    ) -> ShardState | None:
        """Claim the shard for ``worker`` until ``now + lease`` when
        :func:`domain.shards.claimable`; the shard as claimed, or None (done, held by
        another worker's live lease, or never opened)."""
        ...

    def renew(self, run_key: str, shard: int, worker: str, now: datetime, lease: timedelta) -> bool:
        """Extend ``worker``'s lease to ``now + lease`` when it holds the shard and the
        shard is not done (:func:`domain.shards.renewed`); whether it was extended."""
        ...

    def complete(
        self, run_key: str, shard: int, worker: str, now: datetime, outcome: Mapping[str, int]
    ) -> bool:
        """Mark the shard done with its ``outcome`` when ``worker`` holds it
        (:func:`domain.shards.may_complete`); whether it was marked now."""
        ...

    def shards(self, run_key: str) -> list[ShardState]:
        """Every shard of ``run_key``, by shard number."""
        ...
