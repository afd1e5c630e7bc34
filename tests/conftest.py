"""Shared fixtures: a migrated ledger on SQLite and (when configured) on PostgreSQL.

``REFERRALS_TEST_POSTGRES_URL`` (``.ci/run`` sets it to the machine's server) turns on
the Postgres half of every test that takes the ``ledger`` fixture; each such test gets
a migrated schema of its own, empty, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from sqlalchemy import Engine

from config.program import load_program
from config.settings import PROJECT_ROOT
from domain.models import Account, Contact, ReferrerType
from domain.ports import SourceBatch
from domain.program import Program
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from tests.pg_schemas import SchemaPool

POSTGRES_URL = os.environ.get("REFERRALS_TEST_POSTGRES_URL")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# The approvers' secrets are encrypted with this key in every test (and in the workers
# the server tests start, which inherit the environment): never the key file in data/.
TEST_APPROVER_KEY = "bGVkZ2VyLXRlc3QtYXBwcm92ZXItc2VjcmV0LWtleSE="
os.environ["REFERRALS_APPROVER_SECRET_KEY"] = TEST_APPROVER_KEY


def approver_ports(engine: Engine) -> dict[str, Any]:
    """The ``approvers`` and ``codes`` fields of an App on ``engine``."""
    from integrations.approvers.totp import TotpCodes
    from integrations.ledger.approvers import SqlApprovers

    approvers = SqlApprovers(engine)
    return {"approvers": approvers, "codes": TotpCodes(approvers, TEST_APPROVER_KEY)}


# Under ``make test`` (pytest-xdist) each test file goes to one worker whole (its module
# fixtures run once), and the files of each group below run on one worker, one after
# another. The flow tests share one Prefect test harness per worker: all of them on one
# worker start it once. The tests that start Prefect servers of their own (a server, a
# worker and deployments; the benchmarks' smoke tests) run one at a time: two of them
# side by side on a 2-CPU machine starve each other.
XDIST_GROUPS = {
    "tests/flows/": "prefect-harness",
    "tests/integration/test_approval_ui.py": "prefect-servers",
    "tests/integration/test_cycle_on_server.py": "prefect-servers",
    "tests/unit/test_bench_smoke.py": "prefect-servers",
}


class _XdistScheduling:
    """A plugin for pytest-xdist's controller, registered only when xdist is active."""

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """``-n N`` alone (``--dist load``) schedules by file; another ``--dist`` as it says."""
        if config.getvalue("dist") != "load":
            return None
        from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

        class ByFile(LoadScopeScheduling):  # type: ignore[misc]
            """Whole test files to the workers, the files of a group in XDIST_GROUPS together."""

            def _split_scope(self, nodeid: str) -> str:
                path = nodeid.split("::", 1)[0]
                for prefix, group in XDIST_GROUPS.items():
                    if path.startswith(prefix):
                        return group
                return path

        return ByFile(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistScheduling(), "referrals-xdist-scheduling")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test that ran against a local Prefect stack carries the end of its
    server's and worker's logs: in CI they are gone with the machine, and a stalled or
    failed server call says little without them."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and stack is not None:
        local = stack[0] if isinstance(stack, tuple) else stack
        for name in ("server", "worker"):
            log = Path(local.run_dir) / f"{name}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-120:]
                report.sections.append((f"Prefect {name} log (last lines)", "\n".join(tail)))
    return report


@pytest.fixture(scope="session", autouse=True)
def no_flow_run_heartbeats() -> Iterator[None]:
    """Flow runs started by the tests themselves send no heartbeats.

    At the end of every flow run Prefect (3.8.8) joins the run's heartbeat thread, which
    sleeps in 1 s steps: up to a second per flow run, several seconds per cycle, for a
    crash detection no test relies on. Flow runs in the server tests' worker processes
    keep theirs.
    """
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


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


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[SchemaPool]:
    """Migrated schemas on the test Postgres server, reused test after test."""
    if not POSTGRES_URL:
        pytest.skip("REFERRALS_TEST_POSTGRES_URL is not set")
    pool = SchemaPool(POSTGRES_URL)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def postgres_url(postgres_schemas: SchemaPool) -> Iterator[str]:
    """A migrated schema of the test's own on the test Postgres server, empty.

    Migrated once and emptied after each test rather than migrated per test (see
    ``tests/pg_schemas.py``): no test ever sees another's rows, and a schema that a test
    left different from what the migrations made (a downgrade not upgraded again, a
    dropped trigger) is dropped afterwards, never reused.
    """
    url = postgres_schemas.acquire()
    try:
        yield url
    finally:
        postgres_schemas.release(url)


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


@pytest.fixture(autouse=True)
def fast_stripe_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stripe library sleeps 0.5-5 s between its own retries; tests need the
    retries, never the wait."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.02)
