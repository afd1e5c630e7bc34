"""Flow tests run against Prefect's test harness, with adapters chosen by the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from config.settings import load_settings
from domain.models import PayoutRailKind
from domain.program import Program
from flows.bootstrap import App, use_app
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from integrations.sources.files import FileSource
from tests.conftest import approver_ports


@pytest.fixture(scope="session", autouse=True)
def harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def make_app(ledger: SqlLedger, program: Program, inbox: Path) -> App:
    """The flows' adapters: SQLite ledger, file source, recording email/rail/approvals."""
    settings = load_settings(
        database_url=ledger.engine.url.render_as_string(hide_password=False),
        inbox_dir=inbox,
        batch_size=50,
    )
    return App(
        settings=settings,
        program=program,
        ledger=ledger,
        sources=(FileSource(inbox),),
        email=RecordingEmailSender(),
        rails={PayoutRailKind.LEDGER_ONLY: RecordingRail(PayoutRailKind.LEDGER_ONLY)},
        approvals=RecordingApprovalRuns(),
        **approver_ports(ledger.engine),
    )


@pytest.fixture
def test_app(sqlite_ledger: SqlLedger, program: Program, inbox: Path) -> Iterator[App]:
    with use_app(make_app(sqlite_ledger, program, inbox)) as app:
        yield app
