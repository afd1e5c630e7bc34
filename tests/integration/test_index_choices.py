"""Which index the per-batch statements of computing and paying rewards go through.

SQLite has no statistics on the ledger, so its plans do not depend on the rows: what
a plan is on an empty ledger it is at a million customers. Keyed by ``rewarded_at``
and by ``status``, the old indexes looked cheaper to it than a list of ids on the
primary key, and "these conversions, still unrewarded" read every unrewarded
conversion (and "these payouts, still pending" every pending payout) for each chunk of
ids: computing and paying rewards grew with the square of a cycle's conversions.
Revision 0029r made both indexes partial.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event

from domain.models import PayoutOutcome, PayoutResult
from integrations.ledger.base import CHUNK
from integrations.ledger.sql import SqlLedger
from tasks.payouts import CLAIM_LEASE

# A look-up by the ids themselves (a primary key, or the payouts' reward id).
BY_ID = re.compile(r"^SEARCH \w+ USING (COVERING )?INDEX \w+ \((conversion|payout|reward)_id=\?\)$")
# A batch's worth: SQLite weighs a list of ids by its length, and for a few ids it took
# the primary key even before 0029r.
IDS = [f"id-{i:03}" for i in range(CHUNK)]


@contextmanager
def sent(ledger: SqlLedger) -> Iterator[list[tuple[str, Any]]]:
    """(statement, parameters) of each read or write the ledger sends in the block."""
    statements: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith(("SELECT", "UPDATE")):
            statements.append((statement, parameters))

    event.listen(ledger.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(ledger.engine, "before_cursor_execute", note)


def plans(ledger: SqlLedger, call: Callable[[], object]) -> list[list[str]]:
    """The plan of each statement ``call`` sends: SQLite's lines, PostgreSQL's with
    sequential scans off (a table this small would be scanned anyway)."""
    with sent(ledger) as statements:
        call()
    assert statements
    found = []
    with ledger.engine.connect() as conn:
        for statement, parameters in statements:
            if ledger.engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                found.append([str(row[-1]) for row in rows])
            else:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                found.append([str(row[0]) for row in rows])
    return found


def by_ids(ledger: SqlLedger, now: datetime) -> dict[str, Callable[[], object]]:
    """The statements a batch sends about the ids it holds."""
    worker = "worker-1"
    return {
        "unrewarded": lambda: ledger.reward_rules.unrewarded(IDS),
        "mark_rewarded": lambda: ledger.reward_rules.mark_rewarded(IDS, now),
        "pending": lambda: ledger.payouts.pending(reward_ids=IDS),
        "claim": lambda: ledger.payouts.claim(worker, now, CLAIM_LEASE, reward_ids=IDS),
        "release": lambda: ledger.payouts.release(IDS, worker),
        "record_results": lambda: ledger.payouts.record_results(
            [PayoutResult(i, PayoutOutcome.SUCCEEDED, f"ref-{i}") for i in IDS[::2]]
            + [PayoutResult(i, PayoutOutcome.FAILED, None, "declined") for i in IDS[1::2]],
            now,
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["unrewarded", "mark_rewarded", "pending", "claim", "release", "record_results"],
)
def test_statements_about_a_batchs_ids_look_those_ids_up_on_sqlite(
    sqlite_ledger: SqlLedger, now: datetime, name: str
) -> None:
    for plan in plans(sqlite_ledger, by_ids(sqlite_ledger, now)[name]):
        reads = [line for line in plan if line.startswith(("SEARCH", "SCAN"))]
        assert reads, plan
        assert all(BY_ID.search(line) for line in reads), plan


def test_the_unrewarded_conversions_are_read_in_order_through_their_partial_index(
    ledger: SqlLedger,
) -> None:
    (plan,) = plans(ledger, lambda: ledger.rewards.conversions_to_reward(10))
    assert any("ix_conversions_to_reward" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line or "Sort" in line for line in plan), plan


def test_payouts_a_crash_left_pending_are_found_through_their_partial_index(
    ledger: SqlLedger, now: datetime
) -> None:
    (plan,) = plans(
        ledger,
        lambda: ledger.payouts.claim("worker-1", now, CLAIM_LEASE, stale_before=now),
    )
    assert any("ix_payouts_pending" in line for line in plan), plan
