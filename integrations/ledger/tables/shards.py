"""Shards of stage runs (issue 17): one row per (stage run key, shard), claimed with a
lease and done once. Triggers (migration 0027) refuse to change a done shard, to delete
any shard, and to count attempts backwards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base


class ShardRow(Base):
    """One shard of one stage run: who holds it until when, how often it was claimed,
    when it was done and what its work reported."""

    __tablename__ = "shards"
    run_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    of_shards: Mapped[int] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    outcome: Mapped[dict[str, Any] | None]
    __table_args__ = (
        CheckConstraint("shard >= 0 AND shard < of_shards", name="shard_in_range"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint("done_at IS NULL OR claimed_by IS NOT NULL", name="done_by_a_claimant"),
    )


T_SHARDS: Table = ShardRow.__table__  # type: ignore[assignment]
