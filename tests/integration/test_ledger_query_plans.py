"""Batch lookups by id read their rows by the key on SQLite, not by a status index.

Without statistics (the ledger never runs ANALYZE) SQLite prefers an index on an
equality such as ``rewarded_at IS NULL`` or ``status IN (...)`` to the primary key's
lookups of an ``id IN (...)`` list, and then reads every row in that state for each
batch: at 1,000,000 customers compute-rewards and plan-routes grew with the square of
the ledger. The plans do not depend on how many rows the tables hold (no statistics),
so an empty ledger shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, select

from domain.models import RewardStatus
from integrations.ledger.base import not_indexed
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_CONVERSIONS
from tests.conftest import NOW


@contextmanager
def _plans(ledger: SqlLedger) -> Iterator[list[str]]:
    """The query plan of every statement run in the block, one string each."""
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            raw = conn.connection.dbapi_connection
            rows = raw.execute("EXPLAIN QUERY PLAN " + statement, params or ()).fetchall()
            plans.append(" | ".join(str(r[3]) for r in rows))

    event.listen(ledger.engine, "before_cursor_execute", explain)
    try:
        yield plans
    finally:
        event.remove(ledger.engine, "before_cursor_execute", explain)


def _plans_of(ledger: SqlLedger, call: Callable[[], object]) -> list[str]:
    with _plans(ledger) as plans:
        call()
    assert plans, "the call ran no statement"
    return plans


def test_a_batch_of_conversions_is_checked_and_marked_rewarded_by_conversion_id(
    sqlite_ledger: SqlLedger,
) -> None:
    ids = ["conv-1", "conv-2", "conv-3"]

    plans = _plans_of(sqlite_ledger, lambda: sqlite_ledger.reward_rules.unrewarded(ids))
    plans += _plans_of(sqlite_ledger, lambda: sqlite_ledger.reward_rules.mark_rewarded(ids, NOW))

    assert all("(conversion_id=?)" in p for p in plans), plans
    assert not any("ix_conversions_unrewarded" in p for p in plans), plans


def test_rewards_are_moved_by_reward_id_not_by_their_status(sqlite_ledger: SqlLedger) -> None:
    plans = _plans_of(
        sqlite_ledger,
        lambda: sqlite_ledger.rewards.move(
            ["r-1", "r-2"], [RewardStatus.HOLDING], RewardStatus.PAYABLE, NOW
        ),
    )

    assert all("(reward_id=?)" in p for p in plans), plans
    assert not any("ix_rewards_status" in p for p in plans), plans


def test_routing_pages_through_rewards_by_id_without_sorting_every_routable_one(
    sqlite_ledger: SqlLedger,
) -> None:
    plans = _plans_of(sqlite_ledger, lambda: sqlite_ledger.rewards.to_route(NOW, "r-5", 100))

    (page, *_) = plans
    assert "(reward_id>?)" in page, page
    assert "ix_rewards_status" not in page, page
    assert "TEMP B-TREE FOR ORDER BY" not in page, page


def test_a_condition_kept_off_its_index_on_sqlite_reads_as_written_on_postgresql() -> None:
    query = select(T_CONVERSIONS.c.conversion_id).where(
        not_indexed(T_CONVERSIONS.c.rewarded_at).is_(None)
    )

    # Dialects of engines never connected: compiling needs no server.
    on_sqlite = create_engine("sqlite://").dialect
    on_pg = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none").dialect
    assert "+conversions.rewarded_at IS NULL" in str(query.compile(dialect=on_sqlite))
    on_postgresql = str(query.compile(dialect=on_pg))
    assert "conversions.rewarded_at IS NULL" in on_postgresql
    assert "+" not in on_postgresql
