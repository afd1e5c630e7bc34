"""The clawback tables guard their own history, on SQLite and Postgres: a clawback row
is never rewritten or deleted, a reversal never deleted, and each (reward, event) counts
once, whatever writes to the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError

from domain.models import PayoutRailKind, derived_id
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ClawbackRow, ReversalRow
from tests.integration.test_ledger_flow import given_reward, pay


def clawback_row(reward_id: str, event_id: str, now: datetime, **changes: Any) -> dict[str, Any]:
    return {
        "clawback_id": derived_id("clawback", reward_id, event_id),
        "reward_id": reward_id,
        "event_id": event_id,
        "cause": "refund",
        "payment_key": "ch_1",
        "payment_minor": 10_000,
        "refunded_minor": 5_000,
        "disputed_minor": 0,
        "cancelled_minor": 0,
        "clawed_back_minor": 5_000,
        "currency": "EUR",
        "status_before": "paid",
        "occurred_at": now,
        "created_at": now,
    } | changes


def reversal_row(
    clawback: dict[str, Any], payout_id: str, now: datetime, **changes: Any
) -> dict[str, Any]:
    return {
        "reversal_id": derived_id("reversal", clawback["clawback_id"]),
        "clawback_id": clawback["clawback_id"],
        "reward_id": clawback["reward_id"],
        "payout_id": payout_id,
        "rail": PayoutRailKind.LEDGER_ONLY.value,
        "destination": None,
        "payout_ref": None,
        "amount_minor": 5_000,
        "currency": "EUR",
        "idempotency_key": f"reward:{clawback['reward_id']}:reversal:{clawback['event_id']}",
        "status": "pending",
        "tries": 0,
        "created_at": now,
        "updated_at": now,
    } | changes


def write(engine: Engine, table: Any, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(table), row)


@pytest.fixture
def history(ledger: SqlLedger, now: datetime) -> dict[str, Any]:
    reward = given_reward(ledger, now)
    [payout] = pay(ledger, [reward.reward_id], now)
    clawback = clawback_row(reward.reward_id, "evt_1", now)
    write(ledger.engine, ClawbackRow.__table__, clawback)
    write(ledger.engine, ReversalRow.__table__, reversal_row(clawback, payout.payout_id, now))
    return {"clawback": clawback, "payout_id": payout.payout_id}


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE clawbacks SET clawed_back_minor = 0",
        "DELETE FROM clawbacks",
        "DELETE FROM reversals",
    ],
)
def test_clawback_history_refuses_to_be_rewritten(
    engine: Engine, history: dict[str, Any], sql: str
) -> None:
    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(text(sql))


def test_a_reversal_can_still_be_settled(engine: Engine, history: dict[str, Any]) -> None:
    with engine.begin() as conn:
        assert conn.execute(text("UPDATE reversals SET status = 'succeeded'")).rowcount == 1


def test_one_clawback_per_reward_and_event(
    engine: Engine, history: dict[str, Any], now: datetime
) -> None:
    first = history["clawback"]
    with pytest.raises(IntegrityError):
        write(
            engine,
            ClawbackRow.__table__,
            clawback_row(first["reward_id"], "evt_1", now, clawback_id="another-id"),
        )


@pytest.mark.parametrize(
    "changes",
    [{"amount_minor": 0}, {"status": "maybe"}, {"idempotency_key": "the fixture's key"}],
)
def test_a_reversal_breaking_a_rule_is_refused(
    engine: Engine, history: dict[str, Any], now: datetime, changes: dict[str, Any]
) -> None:
    clawback = clawback_row(history["clawback"]["reward_id"], "evt_2", now)
    write(engine, ClawbackRow.__table__, clawback)
    if "idempotency_key" in changes:  # one key per reversal: the first one's, again
        changes = {"idempotency_key": reversal_row(history["clawback"], "", now)["idempotency_key"]}
    with pytest.raises(IntegrityError):
        write(
            engine,
            ReversalRow.__table__,
            reversal_row(clawback, history["payout_id"], now, **changes),
        )


def test_a_clawback_with_a_negative_amount_or_unknown_cause_is_refused(
    engine: Engine, history: dict[str, Any], now: datetime
) -> None:
    reward_id = history["clawback"]["reward_id"]
    cases: tuple[dict[str, Any], ...] = ({"clawed_back_minor": -1}, {"cause": "whim"})
    for n, changes in enumerate(cases):
        with pytest.raises(IntegrityError):
            write(
                engine, ClawbackRow.__table__, clawback_row(reward_id, f"evt_x{n}", now, **changes)
            )
