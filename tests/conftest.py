"""Shared fixtures: a migrated ledger on SQLite and (when configured) on PostgreSQL.

``REFERRALS_TEST_POSTGRES_URL`` (``.ci/run`` sets it to the machine's server) turns on
the Postgres half of every test that takes the ``ledger`` fixture; each such test gets
a schema of its own, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from config.program import load_program
from config.settings import PROJECT_ROOT
from domain.models import Account, Contact, ReferrerType
from domain.ports import SourceBatch
from domain.program import Program
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger

POSTGRES_URL = os.environ.get("REFERRALS_TEST_POSTGRES_URL")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied per test: migrating once keeps the suite fast."""
    path = tmp_path_factory.mktemp("ledger-template") / "ledger.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated schema on the test Postgres server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("REFERRALS_TEST_POSTGRES_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> SqlLedger:
    """The ledger on SQLite, and on Postgres when REFERRALS_TEST_POSTGRES_URL is set."""
    return SqlLedger(engine)


@pytest.fixture
def sqlite_ledger(sqlite_url: str) -> Iterator[SqlLedger]:
    """The ledger on SQLite only, for tests about behaviour rather than the database."""
    engine = make_engine(sqlite_url)
    yield SqlLedger(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def program() -> Program:
    """The program rules shipped in config/program.yaml."""
    return load_program(PROJECT_ROOT / "config" / "program.yaml")


@pytest.fixture
def now() -> datetime:
    return NOW


def people_batch(*contacts: Contact, tenure_days: int = 400) -> SourceBatch:
    """A source batch that only introduces accounts and contacts."""
    accounts = {
        c.account_id: Account(
            c.account_id,
            f"Account {c.account_id}",
            f"{c.account_id.lower()}.example",
            customer_since=(NOW - timedelta(days=tenure_days)).date(),
        )
        for c in contacts
        if c.account_id
    }
    return SourceBatch(
        source="test",
        accounts=list(accounts.values()),
        contacts=list(contacts),
        records_in=len(accounts) + len(contacts),
        reference_only=len(accounts) + len(contacts),
    )


def contact(
    contact_id: str,
    account_id: str = "A1",
    *,
    kind: ReferrerType = ReferrerType.CUSTOMER,
    email: str | None = "",
    **extra: object,
) -> Contact:
    """A contact with a plausible name and an address on the account's domain."""
    address = f"{contact_id.lower()}@{account_id.lower()}.example" if email == "" else email
    return Contact(
        contact_id=contact_id,
        account_id=account_id,
        name=f"Person {contact_id}",
        email=address,
        referrer_type=kind,
        **extra,  # type: ignore[arg-type]
    )


def day(offset: int) -> date:
    return (NOW + timedelta(days=offset)).date()
