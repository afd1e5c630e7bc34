"""Booking payout results in batches: a few statements per call, whatever its size, and
the same exactly-once bookings as one payout at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, select

from domain.models import PayoutOutcome, PayoutRailKind, PayoutResult, RewardStatus
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import NotificationRow
from tests.conftest import contact
from tests.integration.test_payout_crashes import entries, payout_rows, seed_payable_reward

LEDGER = PayoutRailKind.LEDGER_ONLY


def prepared(ledger: SqlLedger, now: datetime, n: int, first: int = 0) -> list[tuple[str, str]]:
    """(reward id, payout id) of ``n`` payable rewards with their payouts written."""
    rewards = [
        seed_payable_reward(ledger, contact(f"C{i}", f"A{i}"), now, key=f"deal-{i}")
        for i in range(first, first + n)
    ]
    payouts = ledger.payouts.prepare([(r, LEDGER, None) for r in rewards], now)
    by_reward = {p.reward_id: p.payout_id for p in payouts}
    return [(r, by_reward[r]) for r in rewards]


@contextmanager
def counted(ledger: SqlLedger) -> Iterator[list[str]]:
    """The SQL statements the ledger sends while the block runs (executemany counts once)."""
    statements: list[str] = []

    def note(*args: Any) -> None:
        statements.append(args[2])

    event.listen(ledger.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(ledger.engine, "before_cursor_execute", note)


def paid_notices(ledger: SqlLedger) -> int:
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(NotificationRow.kind == "reward_paid")
            ).scalar_one()
        )


def test_booking_results_takes_as_many_statements_for_forty_payouts_as_for_two(
    ledger: SqlLedger, now: datetime
) -> None:
    small = prepared(ledger, now, 2)
    large = prepared(ledger, now, 40, first=2)

    def settle(payouts: list[tuple[str, str]]) -> tuple[int, int]:
        results = [
            PayoutResult(p, PayoutOutcome.SUCCEEDED, provider_ref=f"tr_{p[:8]}")
            for _r, p in payouts[:-1]
        ] + [PayoutResult(payouts[-1][1], PayoutOutcome.RETRYABLE, error="rate limited")]
        with counted(ledger) as statements:
            paid = ledger.payouts.record_results(results, now)
        return paid, len(statements)

    (paid_small, few), (paid_large, many) = settle(small), settle(large)

    assert (paid_small, paid_large) == (1, 39)
    assert many == few
    assert few <= 8  # begin, commit and a handful in between
    assert paid_notices(ledger) == 40


def test_a_mixed_batch_books_each_outcome_as_one_at_a_time_would(
    ledger: SqlLedger, now: datetime
) -> None:
    (ok, ok_id), (gone, gone_id), (retry, retry_id), (again, again_id) = prepared(ledger, now, 4)
    assert ledger.payouts.record_results([PayoutResult(again_id, PayoutOutcome.SUCCEEDED)], now)

    paid = ledger.payouts.record_results(
        [
            PayoutResult(ok_id, PayoutOutcome.SUCCEEDED, provider_ref="tr_ok"),
            PayoutResult(gone_id, PayoutOutcome.FAILED, error="refused by Stripe " + "x" * 600),
            PayoutResult(retry_id, PayoutOutcome.RETRYABLE, error=None),
            # Settled already: nothing booked twice.
            PayoutResult(again_id, PayoutOutcome.SUCCEEDED, provider_ref="tr_late"),
            # A payout's success listed twice: one entry, one notice.
            PayoutResult(ok_id, PayoutOutcome.SUCCEEDED, provider_ref="tr_ok"),
        ],
        now,
    )

    assert paid == 1
    [row] = payout_rows(ledger, ok)
    assert (row["status"], row["provider_ref"], row["error"], row["tries"]) == (
        "succeeded",
        "tr_ok",
        None,
        1,
    )
    assert [(e[0], e[2]) for e in entries(ledger, ok, "paid")] == [(-2500, ok_id)]
    [row] = payout_rows(ledger, gone)
    assert (row["status"], len(row["error"]), row["tries"]) == ("failed", 512, 1)
    assert row["claimed_by"] is None
    [row] = payout_rows(ledger, retry)
    assert (row["status"], row["error"], row["tries"]) == ("pending", None, 1)
    [row] = payout_rows(ledger, again)
    assert (row["status"], row["provider_ref"], row["tries"]) == ("succeeded", None, 1)
    assert len(entries(ledger, again, "paid")) == 1
    views = ledger.rewards.of([ok, gone, retry, again])
    assert [views[r].status for r in (ok, gone, retry, again)] == [
        RewardStatus.PAID,
        RewardStatus.PAYABLE,
        RewardStatus.PAYABLE,
        RewardStatus.PAID,
    ]
    assert paid_notices(ledger) == 2
