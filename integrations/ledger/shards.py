"""The ``shards`` store on SQL, and the shard of a key computed in SQL.

Typed by :class:`domain.stores.shards.ShardStore`. A claim is one conditional
``UPDATE ... RETURNING``: on PostgreSQL a second worker racing for the same row waits
for the first's commit and then finds the condition false (a live lease, not its own);
on SQLite every write transaction holds the database's write lock
(``BEGIN IMMEDIATE``). Triggers (migration 0027) refuse any change to a done shard.

:func:`shard_sql` is :func:`domain.shards.shard_of` in SQL, for stores whose queries take
a shard: PostgreSQL computes it with its ``md5``; SQLite, with the function
``referrals_shard`` every ledger engine registers (:mod:`integrations.ledger.engine`),
which is the domain's function itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Integer,
    and_,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from domain.shards import MAX_SHARDS, Shard, ShardState
from integrations.ledger.base import LedgerBase
from integrations.ledger.tables import T_SHARDS, ShardRow

#: The SQLite function name of :func:`domain.shards.shard_of`.
SQLITE_SHARD_FUNCTION = "referrals_shard"


class _ShardOf(FunctionElement[int]):
    """``shard_of(key, of_shards)`` as a SQL expression (compiled per dialect below)."""

    type = Integer()
    inherit_cache = True
    name = "shard_of"


@compiles(_ShardOf, "postgresql")
def _shard_of_postgresql(element: _ShardOf, compiler: Any, **kw: Any) -> str:
    key, of = list(element.clauses)
    # The first 32 bits of the MD5 as an unsigned integer: what domain.shards.shard_of
    # takes from Python's hashlib.
    return (
        f"mod(('x' || substr(md5({compiler.process(key, **kw)}), 1, 8))::bit(32)::bigint, "
        f"{compiler.process(of, **kw)})"
    )


@compiles(_ShardOf, "sqlite")
def _shard_of_sqlite(element: _ShardOf, compiler: Any, **kw: Any) -> str:
    return f"{SQLITE_SHARD_FUNCTION}({compiler.process(element.clauses, **kw)})"


def shard_sql(key: ColumnExpressionArgument[Any], of_shards: int) -> ColumnElement[int]:
    """The shard of ``key`` among ``of_shards``, computed by the database."""
    return _ShardOf(key, literal(of_shards, Integer()))


def in_shard(key: ColumnExpressionArgument[Any], shard: Shard | None) -> ColumnElement[bool]:
    """The condition that keeps the rows of ``shard`` (every row when None or 1 of 1)."""
    if shard is None or shard.of == 1:
        return literal(True)
    return shard_sql(key, shard.of) == shard.index


def _state(row: RowMapping) -> ShardState:
    return ShardState(
        run_key=row["run_key"],
        shard=row["shard"],
        of_shards=row["of_shards"],
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
        attempts=row["attempts"],
        done_at=row["done_at"],
        outcome=dict(row["outcome"] or {}),
    )


class SqlShardStore(LedgerBase):
    """Shards of stage runs: opened, claimed with a lease, completed once."""

    def open(self, run_key: str, of_shards: int, now: datetime) -> None:
        if not 1 <= of_shards <= MAX_SHARDS:
            raise ValueError(f"a stage splits into 1 to {MAX_SHARDS} shards")
        with self._begin() as conn:
            sizes = set(
                conn.execute(
                    select(ShardRow.of_shards).where(ShardRow.run_key == run_key).distinct()
                ).scalars()
            )
            if sizes - {of_shards}:
                raise ValueError(f"stage run {run_key!r} was opened with another shard count")
            self._insert_ignore(
                conn,
                ShardRow,
                [
                    {
                        "run_key": run_key,
                        "shard": index,
                        "of_shards": of_shards,
                        "attempts": 0,
                        "opened_at": now,
                    }
                    for index in range(of_shards)
                ],
                ShardRow.shard,
            )

    def claim(
        self, run_key: str, shard: int, worker: str, now: datetime, lease: timedelta
    ) -> ShardState | None:
        if lease <= timedelta(0):
            raise ValueError("a lease lasts some time")
        c = T_SHARDS.c
        with self._begin() as conn:
            row = (
                conn.execute(
                    update(T_SHARDS)
                    .where(
                        c.run_key == run_key,
                        c.shard == shard,
                        c.done_at.is_(None),
                        # domain.shards.claimable, as one condition.
                        or_(
                            c.claimed_by.is_(None),
                            c.claimed_by == worker,
                            and_(c.lease_until.is_not(None), c.lease_until <= now),
                        ),
                    )
                    .values(claimed_by=worker, lease_until=now + lease, attempts=c.attempts + 1)
                    .returning(*T_SHARDS.c)
                )
                .mappings()
                .first()
            )
        return _state(row) if row is not None else None

    def renew(self, run_key: str, shard: int, worker: str, now: datetime, lease: timedelta) -> bool:
        if lease <= timedelta(0):
            raise ValueError("a lease lasts some time")
        return self._update_held(run_key, shard, worker, lease_until=now + lease)

    def complete(
        self, run_key: str, shard: int, worker: str, now: datetime, outcome: Mapping[str, int]
    ) -> bool:
        return self._update_held(
            run_key, shard, worker, done_at=now, outcome={k: int(v) for k, v in outcome.items()}
        )

    def _update_held(self, run_key: str, shard: int, worker: str, **values: Any) -> bool:
        """Set ``values`` on the shard if ``worker`` holds it and it is not done
        (:func:`domain.shards.may_complete`, as one conditional update); whether it did."""
        c = T_SHARDS.c
        with self._begin() as conn:
            held = conn.execute(
                update(T_SHARDS)
                .where(
                    c.run_key == run_key,
                    c.shard == shard,
                    c.done_at.is_(None),
                    c.claimed_by == worker,
                )
                .values(**values)
                .returning(c.shard)
            ).first()
        return held is not None

    def shards(self, run_key: str) -> list[ShardState]:
        with self._connect() as conn:
            rows = conn.execute(
                select(T_SHARDS).where(ShardRow.run_key == run_key).order_by(ShardRow.shard)
            ).mappings()
            return [_state(r) for r in rows]
