"""The money invariants are enforced by the database itself, on SQLite and Postgres.

These tests write with raw SQLAlchemy statements on the ``engine`` fixture, bypassing
the care SqlLedger takes, and expect the database to refuse what would break an
invariant: unique keys, partial unique indexes, check constraints and the append-only
triggers created by the migration. They also check the migration and the models agree.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, insert, inspect, select, table, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from domain.models import PayoutOutcome, RewardStatus
from integrations.ledger.migrate import alembic_config, upgrade
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    NO_DELETE,
    T_APPROVAL_DECISIONS,
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_LEDGER_ENTRIES,
    T_PAYOUTS,
    T_PROVIDER_EVENTS,
    T_REWARDS,
    Base,
    MomentRow,
)
from tasks.use_cases.approvals import record_decision
from tests.integration.test_ledger_flow import decide, given_reward, pay

# -- raw rows ------------------------------------------------------------------------------


def reward_row(conversion_id: str, now: datetime, **changes: Any) -> dict[str, Any]:
    return {
        "reward_id": str(uuid.uuid4()),
        "conversion_id": conversion_id,
        "rule_id": "raw-rule",
        "referrer_id": "C1",
        "amount_minor": 1_000,
        "currency": "EUR",
        "milestone": "customer",
        "attribution_model": "last_touch",
        "explanation": "written by hand",
        "flags": "",
        "payable_at": now,
        "status": "holding",
        "created_at": now,
        "updated_at": now,
    } | changes


def payout_row(reward_id: str, now: datetime, attempt: int = 1, **changes: Any) -> dict[str, Any]:
    return {
        "payout_id": str(uuid.uuid4()),
        "reward_id": reward_id,
        "attempt": attempt,
        "rail": "ledger_only",
        "destination": None,
        "amount_minor": 1_000,
        "currency": "EUR",
        "idempotency_key": f"raw:{uuid.uuid4()}",
        "status": "pending",
        "tries": 0,
        "created_at": now,
        "updated_at": now,
    } | changes


def decision_row(reward_id: str, now: datetime, stage: int = 1, **changes: Any) -> dict[str, Any]:
    return {
        "decision_id": str(uuid.uuid4()),
        "reward_id": reward_id,
        "stage": stage,
        "decision": "approve",
        "approver": "Ann Approver",
        "reason": "ok",
        "amount_minor": 1_000,
        "currency": "EUR",
        "flow_run_id": None,
        "decided_at": now,
    } | changes


def entry_row(reward_id: str, now: datetime, **changes: Any) -> dict[str, Any]:
    return {
        "reward_id": reward_id,
        "kind": "accrued",
        "amount_minor": 1_000,
        "currency": "EUR",
        "ref": str(uuid.uuid4()),
        "created_at": now,
    } | changes


def insert_rows(engine: Engine, table: Any, *rows: dict[str, Any]) -> None:
    with engine.begin() as conn:
        for row in rows:
            conn.execute(insert(table).values(**row))


def insert_settled(engine: Engine, row: dict[str, Any], status: str) -> None:
    """Write a payout as the ledger does: pending first (the database refuses any other
    status at insert), then settled."""
    insert_rows(engine, T_PAYOUTS, row)
    with engine.begin() as conn:
        conn.execute(
            update(T_PAYOUTS).where(T_PAYOUTS.c.payout_id == row["payout_id"]).values(status=status)
        )


def run(engine: Engine, sql: str) -> int:
    with engine.begin() as conn:
        return conn.execute(text(sql)).rowcount


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# -- one reward per (conversion, rule, referrer) -------------------------------------------


def test_a_second_reward_for_the_same_conversion_rule_and_referrer_is_refused(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    same_key = reward_row(reward.conversion_id, now, rule_id=reward.rule_id, referrer_id="C1")

    with pytest.raises(IntegrityError):
        insert_rows(engine, T_REWARDS, same_key)

    # Another rule on the same conversion is another reward.
    insert_rows(engine, T_REWARDS, reward_row(reward.conversion_id, now, rule_id="bonus"))
    assert count(engine, T_REWARDS) == 2


# -- one live payout per reward, one payout per idempotency key ----------------------------


def test_a_second_pending_payout_for_the_same_reward_is_refused(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    insert_rows(engine, T_PAYOUTS, payout_row(reward.reward_id, now, attempt=1))

    with pytest.raises(IntegrityError):
        insert_rows(engine, T_PAYOUTS, payout_row(reward.reward_id, now, attempt=2))

    assert count(engine, T_PAYOUTS) == 1


def test_a_new_attempt_with_another_key_is_allowed_once_the_first_failed(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    first = payout_row(reward.reward_id, now, attempt=1)
    insert_rows(engine, T_PAYOUTS, first)
    with engine.begin() as conn:
        conn.execute(
            update(T_PAYOUTS)
            .where(T_PAYOUTS.c.payout_id == first["payout_id"])
            .values(status="failed")
        )

    insert_rows(engine, T_PAYOUTS, payout_row(reward.reward_id, now, attempt=2))

    with engine.connect() as conn:
        statuses = conn.execute(
            select(T_PAYOUTS.c.attempt, T_PAYOUTS.c.status).order_by(T_PAYOUTS.c.attempt)
        ).all()
    assert [tuple(s) for s in statuses] == [(1, "failed"), (2, "pending")]


def test_two_succeeded_payouts_for_one_reward_are_impossible(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    failed = payout_row(reward.reward_id, now, attempt=1)
    insert_settled(engine, failed, "failed")
    insert_settled(engine, payout_row(reward.reward_id, now, attempt=2), "succeeded")

    with pytest.raises(IntegrityError):
        insert_rows(engine, T_PAYOUTS, payout_row(reward.reward_id, now, attempt=3))
    # Nor can the failed attempt be turned into a second success afterwards.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            update(T_PAYOUTS)
            .where(T_PAYOUTS.c.payout_id == failed["payout_id"])
            .values(status="succeeded")
        )

    assert count(engine, T_PAYOUTS, T_PAYOUTS.c.status == "succeeded") == 1


def test_one_payout_per_idempotency_key(engine: Engine, ledger: SqlLedger, now: datetime) -> None:
    one = given_reward(ledger, now, 1)
    two = given_reward(ledger, now, 2)
    insert_rows(engine, T_PAYOUTS, payout_row(one.reward_id, now, idempotency_key="reward:k"))

    with pytest.raises(IntegrityError):
        # Another reward (so outside the first one's live payout): the key alone decides.
        insert_rows(engine, T_PAYOUTS, payout_row(two.reward_id, now, idempotency_key="reward:k"))

    assert count(engine, T_PAYOUTS) == 1


def test_one_payout_per_reward_and_attempt_number(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    insert_settled(engine, payout_row(reward.reward_id, now, attempt=1), "failed")

    with pytest.raises(IntegrityError):
        insert_rows(engine, T_PAYOUTS, payout_row(reward.reward_id, now, attempt=1))


# -- provider events, decisions ------------------------------------------------------------


def test_a_provider_event_is_applied_once_per_event_id(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    row = {"provider": "stripe", "event_id": "evt_1", "type": "transfer.created"}
    insert_rows(engine, T_PROVIDER_EVENTS, row | {"received_at": now})

    with pytest.raises(IntegrityError):
        insert_rows(engine, T_PROVIDER_EVENTS, row | {"received_at": now, "type": "other"})

    assert (
        ledger.provider_events.record_provider_event("sendgrid", "evt_1", "delivered", now) is True
    )
    assert (
        ledger.provider_events.record_provider_event("sendgrid", "evt_1", "delivered", now) is False
    )
    assert (
        ledger.provider_events.record_provider_event("stripe", "evt_1", "transfer.created", now)
        is False
    )
    assert count(engine, T_PROVIDER_EVENTS) == 2


def test_one_decision_per_reward_and_stage(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)
    insert_rows(engine, T_APPROVAL_DECISIONS, decision_row(reward.reward_id, now, stage=1))

    with pytest.raises(IntegrityError):
        insert_rows(
            engine,
            T_APPROVAL_DECISIONS,
            decision_row(reward.reward_id, now, stage=1, decision="reject", approver="Bob"),
        )

    insert_rows(
        engine, T_APPROVAL_DECISIONS, decision_row(reward.reward_id, now, stage=2, approver="Bob")
    )
    assert count(engine, T_APPROVAL_DECISIONS) == 2


# -- append-only money ---------------------------------------------------------------------


@pytest.fixture
def history(ledger: SqlLedger, now: datetime) -> SqlLedger:
    """A ledger with a row in every guarded table: an approved, adjusted and paid reward,
    a failed payout attempt before the paid one, and an applied provider event."""
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)
    record_decision(ledger, reward.reward_id, 1, decide(amount_minor=8_000), 1, None, now)
    pay(ledger, [reward.reward_id], now, PayoutOutcome.FAILED)
    pay(ledger, [reward.reward_id], now)
    ledger.provider_events.record_provider_event("stripe", "evt_1", "transfer.created", now)
    insert_rows(
        ledger.engine,
        T_CONVERSION_PAYMENTS,
        {
            "provider": "stripe",
            "payment_ref": "ch_1",
            "conversion_id": reward.conversion_id,
            "customer_ref": "cus_1",
            "amount_minor": 10_000,
            "currency": "EUR",
            "created_at": now,
        },
    )
    return ledger


REWRITES = [
    "UPDATE ledger_entries SET amount_minor = 0",
    "UPDATE ledger_entries SET ref = 'rewritten'",
    "DELETE FROM ledger_entries",
    "UPDATE approval_decisions SET decision = 'reject'",
    "DELETE FROM approval_decisions",
    "DELETE FROM rewards",
    "DELETE FROM payouts",
    "DELETE FROM payouts WHERE status = 'failed'",
    "DELETE FROM conversions",
    "UPDATE provider_events SET type = 'rewritten'",
    "DELETE FROM provider_events",
    "DELETE FROM conversion_payments",
]


def refusal(engine: Engine, sql: str) -> str | None:
    """The database's error message for ``sql``, or None if it went through."""
    try:
        run(engine, sql)
    except IntegrityError as exc:
        return str(exc.orig)
    return None


def test_money_history_refuses_to_be_rewritten(engine: Engine, history: SqlLedger) -> None:
    rows_before = {t: count(engine, table(t)) for t in NO_DELETE}

    refusals = {sql: refusal(engine, sql) for sql in REWRITES}

    assert {sql: why for sql, why in refusals.items() if "append-only" not in (why or "")} == {}
    assert {t: count(engine, table(t)) for t in NO_DELETE} == rows_before
    assert all(rows_before.values())


def test_a_rewards_amount_and_currency_cannot_be_changed(
    engine: Engine, history: SqlLedger
) -> None:
    changes = [
        "UPDATE rewards SET amount_minor = amount_minor + 1",
        "UPDATE rewards SET amount_minor = 0",
        "UPDATE rewards SET currency = 'USD'",
        "UPDATE rewards SET amount_minor = 1, status = 'paid'",
    ]

    refusals = {sql: refusal(engine, sql) for sql in changes}

    assert {
        sql: why
        for sql, why in refusals.items()
        if "a reward amount never changes" not in (why or "")
    } == {}
    with engine.connect() as conn:
        row = conn.execute(
            select(T_REWARDS.c.amount_minor, T_REWARDS.c.currency, T_REWARDS.c.status)
        )
        assert tuple(row.one()) == (10_000, "EUR", "paid")


def test_a_rewards_status_can_still_change(
    engine: Engine, history: SqlLedger, now: datetime
) -> None:
    # A legal move (a payable reward cancelled); the paid one can no longer move.
    payable = given_reward(history, now, 2)
    cancel = f"UPDATE rewards SET status = 'cancelled' WHERE reward_id = '{payable.reward_id}'"
    assert run(engine, cancel) == 1
    # Writing amount and currency back unchanged (as a full-row update would) is allowed.
    assert run(engine, "UPDATE rewards SET amount_minor = amount_minor, currency = currency") == 2
    # Payouts are settled by UPDATE, so they stay updatable.
    assert run(engine, "UPDATE payouts SET error = 'checked by ops'") == 2

    with engine.connect() as conn:
        statuses = conn.execute(select(T_REWARDS.c.status).order_by(T_REWARDS.c.status))
        assert list(statuses.scalars()) == ["cancelled", "paid"]


# -- check constraints ---------------------------------------------------------------------


def refused_insert(engine: Engine, target: Any, row: dict[str, Any]) -> type[Exception] | None:
    """The error class the database raised for inserting ``row``, or None."""
    try:
        insert_rows(engine, target, row)
    except DBAPIError as exc:
        return type(exc)
    return None


def test_rows_breaking_a_money_check_are_refused(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)
    conversion, reward_id = reward.conversion_id, reward.reward_id
    cases: dict[str, tuple[Any, dict[str, Any]]] = {
        "negative reward": (T_REWARDS, reward_row(conversion, now, amount_minor=-1)),
        "2-letter reward currency": (T_REWARDS, reward_row(conversion, now, currency="EU")),
        "unknown reward status": (T_REWARDS, reward_row(conversion, now, status="lost")),
        "payout of zero": (T_PAYOUTS, payout_row(reward_id, now, amount_minor=0)),
        "unknown payout status": (T_PAYOUTS, payout_row(reward_id, now, status="sent")),
        "2-letter payout currency": (T_PAYOUTS, payout_row(reward_id, now, currency="EU")),
        "unknown entry kind": (T_LEDGER_ENTRIES, entry_row(reward_id, now, kind="bonus")),
        "2-letter entry currency": (T_LEDGER_ENTRIES, entry_row(reward_id, now, currency="EU")),
        "decision at stage 3": (T_APPROVAL_DECISIONS, decision_row(reward_id, now, stage=3)),
        "unknown decision": (T_APPROVAL_DECISIONS, decision_row(reward_id, now, decision="maybe")),
        "negative decision": (T_APPROVAL_DECISIONS, decision_row(reward_id, now, amount_minor=-5)),
    }

    errors = {case: refused_insert(engine, *target_row) for case, target_row in cases.items()}

    assert {case: e for case, e in errors.items() if e is not IntegrityError} == {}
    assert count(engine, T_REWARDS) == 1
    assert count(engine, T_PAYOUTS) == count(engine, T_APPROVAL_DECISIONS) == 0


def test_a_four_letter_currency_is_refused(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)

    # SQLite refuses it by the check; Postgres already as too long for VARCHAR(3).
    with pytest.raises(DBAPIError):
        insert_rows(engine, T_REWARDS, reward_row(reward.conversion_id, now, currency="EURO"))
    with pytest.raises(DBAPIError):
        run(engine, "UPDATE rewards SET currency = 'EURO'")

    assert count(engine, T_REWARDS) == 1


def test_a_rewards_status_cannot_become_unknown(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)

    with pytest.raises(IntegrityError):
        run(engine, "UPDATE rewards SET status = 'lost'")

    assert ledger.rewards.of([reward.reward_id])[reward.reward_id].status is RewardStatus.PAYABLE


def test_a_conversion_with_a_negative_amount_is_refused(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    with engine.connect() as conn:
        row = dict(conn.execute(select(T_CONVERSIONS)).mappings().one())

    with pytest.raises(IntegrityError):
        insert_rows(
            engine,
            T_CONVERSIONS,
            row | {"conversion_id": "other", "source_event": "test:other", "amount_minor": -1},
        )

    assert row["conversion_id"] == reward.conversion_id
    assert count(engine, T_CONVERSIONS) == 1


# -- migration and models ------------------------------------------------------------------


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_the_migrated_database_matches_the_models(engine: Engine) -> None:
    assert schema_differences(engine) == []


def test_downgrade_to_base_then_upgrade_again_restores_the_schema_and_its_guards(
    engine: Engine, now: datetime
) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]

    upgrade(engine)
    upgrade(engine)  # a second upgrade is a no-op

    assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    assert schema_differences(engine) == []
    ledger = SqlLedger(engine)
    reward = given_reward(ledger, now)
    with pytest.raises(IntegrityError, match="append-only"):
        run(engine, "DELETE FROM ledger_entries")
    with pytest.raises(IntegrityError, match="a reward amount never changes"):
        run(engine, "UPDATE rewards SET amount_minor = 1")
    with pytest.raises(IntegrityError):
        insert_rows(
            engine, T_REWARDS, reward_row(reward.conversion_id, now, rule_id=reward.rule_id)
        )
    assert ledger.rewards.of([reward.reward_id])[reward.reward_id].status is RewardStatus.PAYABLE


@pytest.mark.parametrize("status", ["new", "asked", "skipped"])
def test_a_moment_takes_each_of_its_three_statuses(
    engine: Engine, now: datetime, status: str
) -> None:
    with engine.begin() as conn:
        conn.execute(insert(MomentRow), [_moment(f"m-{status}", now, status)])

    with engine.connect() as conn:
        assert conn.execute(select(MomentRow.status)).scalars().all() == [status]


def test_a_moment_with_any_other_status_is_refused(engine: Engine, now: datetime) -> None:
    # 0028 rewrote the check from IN (...) to ORs, so SQLite checks it cheaply: it must
    # refuse what it refused before.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(MomentRow), [_moment("m-bad", now, "sent")])


def _moment(moment_id: str, now: datetime, status: str) -> dict[str, Any]:
    return {
        "moment_id": moment_id,
        "type": "renewal",
        "contact_id": "C1",
        "occurred_at": now,
        "source_event": moment_id,
        "detail": "renewed",
        "status": status,
    }
