"""The ledger refuses tampering, on SQLite and on PostgreSQL as the application's role.

Every test here writes with plain SQL, as someone holding the application's database
credentials could, and expects the database itself (revision 0017's triggers, and on
PostgreSQL the roles of :mod:`integrations.ledger.roles`) to refuse it, leaving every
money row as it was. On PostgreSQL these tests connect as a throwaway application role
that does not own the tables, in a schema migrated by a throwaway owner role; both
roles are dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from domain.models import Decision, PayoutOutcome, PayoutResult, RewardStatus
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import alembic_config, upgrade
from integrations.ledger.roles import UnsafeAppRoleError, grant_app_role
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import Base, ClawbackRow, ConversionPaymentRow, ReversalRow
from tests.conftest import POSTGRES_URL
from tests.integration.test_clawback_constraints import clawback_row, reversal_row
from tests.integration.test_ledger_constraints import insert_rows
from tests.integration.test_ledger_flow import LEDGER, decide, given_reward, pay

# -- PostgreSQL: a throwaway owner and application role ------------------------------------


@dataclass(frozen=True)
class Roles:
    owner: str
    app: str
    schema: str
    owner_url: str
    app_url: str
    admin: Engine  # the test server's own (superuser) connection


def _url(role: str, password: str, schema: str) -> str:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(username=role, password=password)
    url = url.update_query_dict({"options": f"-csearch_path={schema}", "application_name": schema})
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def roles() -> Iterator[Roles]:
    """An owner that migrates a schema of its own, and an application role granted by
    :func:`grant_app_role`; both dropped, with the schema, afterwards."""
    if not POSTGRES_URL:
        pytest.skip("REFERRALS_TEST_POSTGRES_URL is not set")
    admin = create_engine(POSTGRES_URL)
    with admin.connect() as conn:
        if not conn.execute(
            text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar():
            admin.dispose()
            pytest.skip("the test server's role cannot create roles")
    suffix = uuid.uuid4().hex[:12]
    owner, app, schema = f"ledger_owner_{suffix}", f"ledger_app_{suffix}", f"t_roles_{suffix}"
    password = uuid.uuid4().hex  # for servers that ask for one; trust auth ignores it
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"CREATE ROLE {app} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"CREATE SCHEMA {schema} AUTHORIZATION {owner}"))
    made = Roles(
        owner, app, schema, _url(owner, password, schema), _url(app, password, schema), admin
    )
    try:
        migrating = make_engine(made.owner_url)
        try:
            upgrade(migrating)
            grant_app_role(migrating, app)
        finally:
            migrating.dispose()
        yield made
    finally:
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE usename IN (:owner, :app) AND pid <> pg_backend_pid()"
                ),
                {"owner": owner, "app": app},
            )
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"DROP OWNED BY {owner}, {app}"))
            conn.execute(text(f"DROP ROLE {app}"))
            conn.execute(text(f"DROP ROLE {owner}"))
        admin.dispose()


@pytest.fixture
def app_url(roles: Roles) -> Iterator[str]:
    """The application role's URL; the schema is emptied (by the server's superuser,
    the guards untouched) after each test."""
    yield roles.app_url
    with roles.admin.begin() as conn:
        names = conn.execute(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables"
                " WHERE schemaname = :schema AND tablename <> 'alembic_version'"
            ),
            {"schema": roles.schema},
        ).scalars()
        listed = ", ".join(f"{roles.schema}.{n}" for n in names)
        conn.execute(text(f"TRUNCATE {listed} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """SQLite, and PostgreSQL as the application role (not the superuser the other
    tests use): the ``engine`` and ``ledger`` fixtures connect through it."""
    name = "sqlite_url" if request.param == "sqlite" else "app_url"
    return str(request.getfixturevalue(name))


# -- a ledger with a row in every state ----------------------------------------------------


@pytest.fixture
def ids(ledger: SqlLedger, now: datetime) -> dict[str, str]:
    """Rewards in every status, payouts failed, succeeded and pending, a pending and a
    succeeded reversal, a conversion's payment and card; their ids by name."""
    paid = given_reward(ledger, now, 1, status=RewardStatus.AWAITING_APPROVAL)
    ledger.record_decision(paid.reward_id, 1, decide(), 1, None, now)
    [failed_payout] = pay(ledger, [paid.reward_id], now, PayoutOutcome.FAILED)
    [paid_payout] = pay(ledger, [paid.reward_id], now)
    rejected = given_reward(ledger, now, 2, status=RewardStatus.REJECTED)
    payable = given_reward(ledger, now, 3)
    owed = given_reward(ledger, now, 4)
    [pending_payout] = ledger.payouts.prepare([(owed.reward_id, LEDGER, None)], now)
    awaiting = given_reward(ledger, now, 5, status=RewardStatus.AWAITING_APPROVAL)
    holding = given_reward(ledger, now, 6, status=RewardStatus.HOLDING)
    cancelled = given_reward(ledger, now, 7, status=RewardStatus.CANCELLED)
    # Three refunds of 10.00 each clawed back after payout: two reversals asked, the
    # third refund's not yet.
    clawbacks = [
        clawback_row(paid.reward_id, f"evt_{n}", now, clawed_back_minor=1_000) for n in (1, 2, 3)
    ]
    reversals = [
        reversal_row(c, paid_payout.payout_id, now, amount_minor=1_000) for c in clawbacks[:2]
    ]
    insert_rows(ledger.engine, ClawbackRow.__table__, *clawbacks)
    insert_rows(ledger.engine, ReversalRow.__table__, *reversals)
    payment = {
        "provider": "stripe",
        "payment_ref": "ch_1",
        "conversion_id": payable.conversion_id,
        "customer_ref": "cus_1",
        "amount_minor": 10_000,
        "currency": "EUR",
        "created_at": now,
    }
    insert_rows(ledger.engine, ConversionPaymentRow.__table__, payment)
    found = {
        "paid": paid.reward_id,
        "rejected": rejected.reward_id,
        "payable": payable.reward_id,
        "owed": owed.reward_id,
        "awaiting": awaiting.reward_id,
        "holding": holding.reward_id,
        "cancelled": cancelled.reward_id,
        "conversion": payable.conversion_id,
        "failed_payout": failed_payout.payout_id,
        "paid_payout": paid_payout.payout_id,
        "pending_payout": pending_payout.payout_id,
        "pending_reversal": reversals[0]["reversal_id"],
        "settled_reversal": reversals[1]["reversal_id"],
        "clawback": clawbacks[0]["clawback_id"],
        "free_clawback": clawbacks[2]["clawback_id"],
        "now": now.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # The legitimate settling of a reversal and learning of a card, which the guards
    # then hold to.
    run(
        ledger.engine,
        "UPDATE reversals SET status = 'succeeded', provider_ref = 'pyr_1'"
        " WHERE reversal_id = '{settled_reversal}'",
        found,
    )
    run(
        ledger.engine,
        "UPDATE conversions SET card_fingerprint = 'fp_1' WHERE conversion_id = '{conversion}'",
        found,
    )
    return found


def run(engine: Engine, sql: str, ids: dict[str, str]) -> int:
    with engine.begin() as conn:
        return conn.execute(text(sql.format(**ids))).rowcount


MONEY_TABLES = (
    "rewards",
    "payouts",
    "reversals",
    "conversions",
    "conversion_payments",
    "approval_decisions",
    "ledger_entries",
    "clawbacks",
)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every money table, in a stable order."""
    with engine.connect() as conn:
        return {
            name: sorted(
                (tuple(map(str, row)) for row in conn.execute(text(f"SELECT * FROM {name}"))),
            )
            for name in MONEY_TABLES
        }


# -- one test per forbidden change ---------------------------------------------------------

_PAYOUT_INSERT = (
    "INSERT INTO payouts (payout_id, reward_id, attempt, rail, destination, amount_minor,"
    " currency, idempotency_key, status, tries, created_at, updated_at) VALUES"
    " ('forged', '{payable}', 1, 'ledger_only', NULL, {amount}, 'EUR', 'forged:key',"
    " '{status}', 0, '{now}', '{now}')"
)
_REVERSAL_INSERT = (
    "INSERT INTO reversals (reversal_id, clawback_id, reward_id, payout_id, rail, amount_minor,"
    " currency, idempotency_key, status, tries, created_at, updated_at) VALUES"
    " ('forged', '{clawback}', '{paid}', '{paid_payout}', 'ledger_only', 100, 'EUR',"
    " 'forged:key', 'succeeded', 0, '{now}', '{now}')"
)
# A reversal for the third clawback, as the ledger would queue it.
_NEW_REVERSAL = (
    "INSERT INTO reversals (reversal_id, clawback_id, reward_id, payout_id, rail, destination,"
    " amount_minor, currency, idempotency_key, status, tries, created_at, updated_at) VALUES"
    " ('forged', '{free_clawback}', '{paid}', '{paid_payout}', 'ledger_only', NULL, 1000,"
    " 'EUR', 'forged:key', 'pending', 0, '{now}', '{now}')"
)
_REWARD_INSERT = (
    "INSERT INTO rewards (reward_id, conversion_id, rule_id, referrer_id, amount_minor,"
    " currency, milestone, attribution_model, explanation, flags, payable_at, status,"
    " created_at, updated_at) VALUES ('forged', '{conversion}', 'forged', 'C1', 100, 'EUR',"
    " 'customer', 'last_touch', 'forged', '', '{now}', '{status}', '{now}', '{now}')"
)
_DECISION_INSERT = (
    "INSERT INTO approval_decisions (decision_id, reward_id, stage, decision, approver, reason,"
    " amount_minor, currency, decided_at) VALUES ('forged', '{reward}', 1, 'approve',"
    " 'Mallory', 'forged', {amount}, 'EUR', '{now}')"
)
_ENTRY_INSERT = (
    "INSERT INTO ledger_entries (reward_id, kind, amount_minor, currency, ref, created_at)"
    " VALUES ('{payable}', 'accrued', {amount}, 'EUR', 'forged', '{now}')"
)

FORBIDDEN = {
    # a payout's terms, whatever its status
    "payout amount": "UPDATE payouts SET amount_minor = 999999 WHERE payout_id = '{paid_payout}'",
    "pending payout amount": (
        "UPDATE payouts SET amount_minor = 999999 WHERE payout_id = '{pending_payout}'"
    ),
    "payout currency": "UPDATE payouts SET currency = 'USD' WHERE payout_id = '{pending_payout}'",
    "payout destination": (
        "UPDATE payouts SET destination = 'acct_attacker' WHERE payout_id = '{pending_payout}'"
    ),
    "payout reward": (
        "UPDATE payouts SET reward_id = '{payable}' WHERE payout_id = '{pending_payout}'"
    ),
    "payout idempotency key": (
        "UPDATE payouts SET idempotency_key = 'attacker:1' WHERE payout_id = '{pending_payout}'"
    ),
    "payout rail": "UPDATE payouts SET rail = 'stripe' WHERE payout_id = '{pending_payout}'",
    "payout attempt": "UPDATE payouts SET attempt = 9 WHERE payout_id = '{pending_payout}'",
    # a payout settles once
    "succeeded payout becomes failed": (
        "UPDATE payouts SET status = 'failed' WHERE payout_id = '{paid_payout}'"
    ),
    "succeeded payout becomes pending": (
        "UPDATE payouts SET status = 'pending' WHERE payout_id = '{paid_payout}'"
    ),
    "failed payout becomes pending": (
        "UPDATE payouts SET status = 'pending' WHERE payout_id = '{failed_payout}'"
    ),
    "failed payout becomes succeeded": (
        "UPDATE payouts SET status = 'succeeded' WHERE payout_id = '{failed_payout}'"
    ),
    "succeeded payout's provider reference": (
        "UPDATE payouts SET provider_ref = 'tr_attacker' WHERE payout_id = '{paid_payout}'"
    ),
    "payout larger than its reward's balance": _PAYOUT_INSERT.replace(
        "{status}", "pending"
    ).replace("{amount}", "10001"),
    "payout of a reward awaiting approval": _PAYOUT_INSERT.replace("{payable}", "{awaiting}")
    .replace("{status}", "pending")
    .replace("{amount}", "100"),
    "payout of a paid reward": _PAYOUT_INSERT.replace("{payable}", "{paid}")
    .replace(", 1, 'ledger_only'", ", 3, 'ledger_only'")
    .replace("{status}", "pending")
    .replace("{amount}", "100"),
    "payout in another currency": _PAYOUT_INSERT.replace("{status}", "pending")
    .replace("{amount}", "100")
    .replace("'EUR'", "'USD'"),
    "payout written succeeded": _PAYOUT_INSERT.replace("{status}", "succeeded").replace(
        "{amount}", "100"
    ),
    # a reward's status moves forward only, along the code's moves
    "paid reward back to awaiting approval": (
        "UPDATE rewards SET status = 'awaiting_approval' WHERE reward_id = '{paid}'"
    ),
    "paid reward back to payable": (
        "UPDATE rewards SET status = 'payable' WHERE reward_id = '{paid}'"
    ),
    "paid reward cancelled": "UPDATE rewards SET status = 'cancelled' WHERE reward_id = '{paid}'",
    "rejected reward approved": (
        "UPDATE rewards SET status = 'approved' WHERE reward_id = '{rejected}'"
    ),
    "rejected reward payable": (
        "UPDATE rewards SET status = 'payable' WHERE reward_id = '{rejected}'"
    ),
    "cancelled reward payable": (
        "UPDATE rewards SET status = 'payable' WHERE reward_id = '{cancelled}'"
    ),
    "holding reward paid": "UPDATE rewards SET status = 'paid' WHERE reward_id = '{holding}'",
    "payable reward approved without approval": (
        "UPDATE rewards SET status = 'approved' WHERE reward_id = '{payable}'"
    ),
    "awaiting reward approved without a decision": (
        "UPDATE rewards SET status = 'approved' WHERE reward_id = '{awaiting}'"
    ),
    "awaiting reward rejected without a decision": (
        "UPDATE rewards SET status = 'rejected' WHERE reward_id = '{awaiting}'"
    ),
    "awaiting reward paid": "UPDATE rewards SET status = 'paid' WHERE reward_id = '{awaiting}'",
    # a reward's terms
    "reward amount": "UPDATE rewards SET amount_minor = 999999 WHERE reward_id = '{payable}'",
    "reward referrer": "UPDATE rewards SET referrer_id = 'attacker' WHERE reward_id = '{payable}'",
    "reward conversion": (
        "UPDATE rewards SET conversion_id = 'other' WHERE reward_id = '{payable}'"
    ),
    "reward written paid": _REWARD_INSERT.replace("{status}", "paid"),
    "reward written approved": _REWARD_INSERT.replace("{status}", "approved"),
    # approvals
    "decision for a reward not awaiting approval": _DECISION_INSERT.replace(
        "{reward}", "{payable}"
    ).replace("{amount}", "10000"),
    "decision rewritten": "UPDATE approval_decisions SET decision = 'reject'",
    # reversals
    "reversal amount": (
        "UPDATE reversals SET amount_minor = 1 WHERE reversal_id = '{pending_reversal}'"
    ),
    "reversal destination": (
        "UPDATE reversals SET destination = 'acct_attacker'"
        " WHERE reversal_id = '{pending_reversal}'"
    ),
    "reversal idempotency key": (
        "UPDATE reversals SET idempotency_key = 'attacker:1'"
        " WHERE reversal_id = '{pending_reversal}'"
    ),
    "reversal payout": (
        "UPDATE reversals SET payout_id = '{failed_payout}'"
        " WHERE reversal_id = '{pending_reversal}'"
    ),
    "succeeded reversal becomes failed": (
        "UPDATE reversals SET status = 'failed' WHERE reversal_id = '{settled_reversal}'"
    ),
    "succeeded reversal becomes pending": (
        "UPDATE reversals SET status = 'pending' WHERE reversal_id = '{settled_reversal}'"
    ),
    "succeeded reversal's provider reference": (
        "UPDATE reversals SET provider_ref = 'attacker' WHERE reversal_id = '{settled_reversal}'"
    ),
    "reversal written succeeded": _REVERSAL_INSERT,
    "reversal to another destination": _NEW_REVERSAL.replace("NULL", "'acct_attacker'"),
    "reversal larger than its clawback": _NEW_REVERSAL.replace(" 1000,", " 1001,"),
    "reversal of a failed payout": _NEW_REVERSAL.replace("{paid_payout}", "{failed_payout}"),
    "reversal of another reward's payout": _NEW_REVERSAL.replace("'{paid}'", "'{payable}'"),
    # what rewards are computed from
    "conversion referrer": (
        "UPDATE conversions SET referrer_id = 'attacker' WHERE conversion_id = '{conversion}'"
    ),
    "conversion amount": (
        "UPDATE conversions SET amount_minor = 999999 WHERE conversion_id = '{conversion}'"
    ),
    "conversion card fingerprint replaced": (
        "UPDATE conversions SET card_fingerprint = 'fp_other' WHERE conversion_id = '{conversion}'"
    ),
    "conversion payment rewritten": "UPDATE conversion_payments SET amount_minor = 1",
    # integer minor units (PostgreSQL refuses text by type)
    "text in a ledger entry's amount": _ENTRY_INSERT.replace("{amount}", "'lots'"),
    "text in a payout's amount": _PAYOUT_INSERT.replace("{status}", "pending").replace(
        "{amount}", "'lots'"
    ),
    "text in a decision's amount": _DECISION_INSERT.replace("{reward}", "{awaiting}").replace(
        "{amount}", "'lots'"
    ),
    "text in a clawback's amount": (
        "INSERT INTO clawbacks (clawback_id, reward_id, event_id, cause, payment_key,"
        " payment_minor, refunded_minor, disputed_minor, cancelled_minor, clawed_back_minor,"
        " currency, status_before, occurred_at, created_at) VALUES ('forged', '{paid}',"
        " 'evt_9', 'refund', 'ch_1', 10000, 'lots', 0, 0, 0, 'EUR', 'paid', '{now}', '{now}')"
    ),
}

# SQLite only: PostgreSQL rounds a fraction written to a BIGINT (an assignment cast),
# which no trigger can see; the application only ever writes Python ints.
FORBIDDEN_ON_SQLITE = {
    "fraction in a ledger entry's amount": _ENTRY_INSERT.replace("{amount}", "2.5"),
    "fraction in a decision's amount": _DECISION_INSERT.replace("{reward}", "{awaiting}").replace(
        "{amount}", "99.5"
    ),
}


# Which guard refuses each change, by the first words of the change's name that match
# (first listed first): a pattern of the guard's message. A change two guards refuse
# may meet either first.
MOVE = "illegal status move"
FIXED = "never change after insert"
DECIDED = f"{MOVE}|by a recorded approval decision"
REASONS = (
    ("rewritten", "append-only"),
    ("text in", "must be integer minor units|invalid input syntax for type bigint"),
    ("written", "a row is written"),
    ("provider reference", "a settled row keeps its provider reference"),
    ("card fingerprint", "a card fingerprint once known never changes"),
    ("without", DECIDED),
    ("payout larger", "a payout pays a payable or approved reward"),
    ("payout of a", "a payout pays a payable or approved reward"),
    ("payout in another", "a payout pays a payable or approved reward"),
    ("reversal to", "a reversal takes back from its clawback's succeeded payout"),
    ("reversal larger", "a reversal takes back from its clawback's succeeded payout"),
    ("reversal of", "a reversal takes back from its clawback's succeeded payout"),
    ("rejected reward approved", DECIDED),
    ("decision for", "only a reward awaiting approval is decided"),
    ("reward amount", "a reward amount never changes"),
    ("becomes", MOVE),
    ("reward paid", MOVE),
    ("reward payable", MOVE),
    ("paid reward", MOVE),
    ("", FIXED),
)


def reason(change: str) -> str:
    return next(said for words, said in REASONS if words in change)


@pytest.mark.parametrize("change", sorted(FORBIDDEN))
def test_the_database_refuses_a_forbidden_change_to_money_rows(
    engine: Engine, ids: dict[str, str], change: str
) -> None:
    before = snapshot(engine)

    with pytest.raises(DBAPIError, match=reason(change)) as refused:
        run(engine, FORBIDDEN[change], ids)

    by_type = change.startswith("text in") and engine.dialect.name == "postgresql"
    assert by_type or isinstance(refused.value, IntegrityError), refused.value
    assert snapshot(engine) == before


@pytest.mark.parametrize("change", sorted(FORBIDDEN_ON_SQLITE))
def test_sqlite_refuses_fractions_in_integer_money_columns(
    ledger: SqlLedger, ids: dict[str, str], change: str
) -> None:
    if ledger.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL rounds by assignment cast; see FORBIDDEN_ON_SQLITE")
    before = snapshot(ledger.engine)

    with pytest.raises(IntegrityError, match="must be integer minor units"):
        run(ledger.engine, FORBIDDEN_ON_SQLITE[change], ids)

    assert snapshot(ledger.engine) == before


def test_a_paid_reward_cannot_be_made_to_pay_twice(
    engine: Engine, ledger: SqlLedger, ids: dict[str, str], now: datetime
) -> None:
    """The issue's attack: the payout succeeded -> failed, the reward back to approved,
    then a second live payout for it. Each step is refused."""
    second = _PAYOUT_INSERT.replace("{payable}", "{paid}").replace(
        ", 1, 'ledger_only'", ", 3, 'ledger_only'"
    )
    before = snapshot(engine)

    with pytest.raises(IntegrityError):
        run(engine, FORBIDDEN["succeeded payout becomes failed"], ids)
    with pytest.raises(IntegrityError):
        run(engine, "UPDATE rewards SET status = 'approved' WHERE reward_id = '{paid}'", ids)
    with pytest.raises(IntegrityError):
        run(engine, second.replace("{status}", "pending").replace("{amount}", "10000"), ids)

    assert ledger.payouts.prepare([(ids["paid"], LEDGER, None)], now) == []
    assert snapshot(engine) == before


def test_sqlite_guards_every_integer_money_column(sqlite_url: str) -> None:
    """Every ``*_minor`` column of the models has its typeof guard on insert and update,
    so a money table added later without one fails here."""
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            triggers = {
                name: sql
                for name, sql in conn.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
                )
            }
    finally:
        engine.dispose()
    columns = [
        (t.name, c.name)
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if c.name.endswith("_minor")
    ]
    unguarded = [
        (name, column, verb)
        for name, column in columns
        for verb in ("insert", "update")
        if f"typeof(NEW.{column})" not in triggers.get(f"{name}_minor_integer_{verb}", "")
    ]
    assert len(columns) >= 15
    assert unguarded == []


def guards(engine: Engine) -> set[str]:
    """The names of the triggers (and, on PostgreSQL, trigger functions) in the ledger."""
    if engine.dialect.name == "sqlite":
        found = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        found = (
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
            " UNION SELECT p.proname || '()' FROM pg_proc p"
            " WHERE p.pronamespace = current_schema()::regnamespace"
        )
    with engine.connect() as conn:
        return set(conn.execute(text(found)).scalars())


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_downgrading_0017_removes_its_guards_and_upgrading_restores_them(
    request: pytest.FixtureRequest, database: str
) -> None:
    # The superuser's migrated schema of the other tests: the app role cannot migrate.
    engine = make_engine(request.getfixturevalue(f"{database}_url"))
    try:
        made = guards(engine)
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0016a")
        before_0017 = guards(engine)
        upgrade(engine)

        assert guards(engine) == made
    finally:
        engine.dispose()
    added = made - before_0017
    assert before_0017 < made
    assert {"payouts_fixed", "rewards_status_moves"} <= added or {
        "payouts_guard",
        "payouts_guard()",
        "rewards_guard",
    } <= added
    assert "rewards_amount_fixed" in before_0017  # revision 0001's guards stay


# -- what the ledger itself does still works -----------------------------------------------


def test_the_legitimate_lifecycle_still_works_under_the_guards(
    ledger: SqlLedger, ids: dict[str, str], now: datetime
) -> None:
    # Routing, approval, payment and a reduction at approval, all through the ledger.
    reviewed = given_reward(ledger, now, 20, status=RewardStatus.AWAITING_APPROVAL)
    status = ledger.record_decision(reviewed.reward_id, 1, decide(amount_minor=8_000), 1, None, now)
    pay(ledger, [reviewed.reward_id, ids["payable"]], now)
    # A pending payout is claimed, released, retried and settled.
    claimed = ledger.payouts.claim("worker-1", now, lease=timedelta(minutes=5))
    assert [c.payout_id for c in claimed] == [ids["pending_payout"]]
    assert ledger.payouts.release([ids["pending_payout"]], "worker-1") == 1
    retry = PayoutResult(ids["pending_payout"], PayoutOutcome.RETRYABLE, None, "timeout")
    settled = PayoutResult(ids["pending_payout"], PayoutOutcome.SUCCEEDED, "ref-owed", None)
    assert ledger.payouts.record_results([retry], now) == 0
    assert ledger.payouts.record_results([settled], now) == 1
    rejected = given_reward(ledger, now, 21, status=RewardStatus.AWAITING_APPROVAL)

    assert status is RewardStatus.APPROVED
    assert (
        ledger.record_decision(rejected.reward_id, 1, decide(Decision.REJECT), 1, None, now)
        is RewardStatus.REJECTED
    )
    views = ledger.rewards.of([reviewed.reward_id, ids["payable"], ids["owed"], rejected.reward_id])
    assert {r: v.status for r, v in views.items()} == {
        reviewed.reward_id: RewardStatus.PAID,
        ids["payable"]: RewardStatus.PAID,
        ids["owed"]: RewardStatus.PAID,
        rejected.reward_id: RewardStatus.REJECTED,
    }
    assert views[reviewed.reward_id].balance.amount_minor == 0


# -- PostgreSQL: the application role cannot lift the guards -------------------------------


def test_a_payout_that_succeeds_after_its_reward_went_to_approval_is_still_recorded(
    ledger: SqlLedger, now: datetime
) -> None:
    """Money that moved is recorded: a reward routed to approval while its payout was on
    its way (a crash, then a stricter rule) becomes paid when that payout succeeds."""
    reward = given_reward(ledger, now, 30)
    [payout] = ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now)
    assert ledger.rewards.move(
        [reward.reward_id], [RewardStatus.PAYABLE], RewardStatus.AWAITING_APPROVAL, now
    ) == [reward.reward_id]

    success = PayoutResult(payout.payout_id, PayoutOutcome.SUCCEEDED, "ref-late", None)
    assert ledger.payouts.record_results([success], now) == 1

    assert ledger.rewards.of([reward.reward_id])[reward.reward_id].status is RewardStatus.PAID


def _app_engine(roles: Roles) -> Engine:
    return make_engine(roles.app_url)


REFUSED_TO_THE_APP = {
    "drop a guard": "DROP TRIGGER payouts_guard ON payouts",
    "replace a guard's function": (
        "CREATE OR REPLACE FUNCTION payouts_guard() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN NEW; END $$"
    ),
    "disable a guard": "ALTER TABLE payouts DISABLE TRIGGER payouts_guard",
    "disable every trigger": "ALTER TABLE ledger_entries DISABLE TRIGGER ALL",
    "alter a table": "ALTER TABLE payouts ALTER COLUMN amount_minor TYPE numeric",
    "drop a check": "ALTER TABLE payouts DROP CONSTRAINT ck_payouts_amount_positive",
    "drop a table": "DROP TABLE ledger_entries",
    "truncate": "TRUNCATE ledger_entries",
    "turn triggers off for the session": "SET session_replication_role = replica",
    "act as the owner": "SET ROLE {owner}",
    "delete rows": "DELETE FROM quarantine",
    "create a table": "CREATE TABLE shadow (id int)",
    "rewrite the migration revision": "UPDATE alembic_version SET version_num = '0001'",
}


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", sorted(REFUSED_TO_THE_APP))
def test_the_application_role_cannot_lift_the_guards(
    roles: Roles, app_url: str, attempt: str
) -> None:
    engine = _app_engine(roles)
    try:
        refused = pytest.raises(DBAPIError, match=r"must be owner|permission denied")
        with refused, engine.begin() as conn:
            conn.execute(text(REFUSED_TO_THE_APP[attempt].format(owner=roles.owner)))
        with engine.connect() as conn:
            guards = conn.execute(
                text(
                    "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :schema AND NOT t.tgisinternal AND t.tgenabled = 'O'"
                ),
                {"schema": roles.schema},
            ).scalar_one()
    finally:
        engine.dispose()
    assert guards >= 20


@pytest.mark.postgres
def test_the_application_role_starts_the_app_on_a_migrated_ledger(
    roles: Roles, app_url: str, now: datetime
) -> None:
    """``build_app`` upgrades the ledger first: at head that reads the revision only."""
    engine = _app_engine(roles)
    try:
        upgrade(engine)
        ledger = SqlLedger(engine)
        reward = given_reward(ledger, now, 1)
        pay(ledger, [reward.reward_id], now)
        assert ledger.rewards.of([reward.reward_id])[reward.reward_id].status is RewardStatus.PAID
        assert "payouts" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_grant_app_role_refuses_a_role_that_could_lift_the_guards(roles: Roles) -> None:
    owner = make_engine(roles.owner_url)
    try:
        with pytest.raises(UnsafeAppRoleError, match="owns"):
            grant_app_role(owner, roles.owner)
        with roles.admin.connect() as conn:
            superuser = str(conn.execute(text("SELECT current_user")).scalar_one())
        with pytest.raises(UnsafeAppRoleError, match="superuser"):
            grant_app_role(owner, superuser)
        with pytest.raises(UnsafeAppRoleError, match="no role"):
            grant_app_role(owner, f"nobody_{uuid.uuid4().hex[:8]}")
    finally:
        owner.dispose()


def test_grant_app_role_is_for_postgresql_only(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with pytest.raises(ValueError, match="PostgreSQL only"):
            grant_app_role(engine, "referrals_app")
    finally:
        engine.dispose()
