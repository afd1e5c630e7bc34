"""`referrals report`: the metrics printed from the ledger and the charts written as PNGs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from config.settings import load_settings
from domain.models import PayoutRailKind
from domain.program import Program
from flows.bootstrap import App, use_app
from flows.cli_report import report_app
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from integrations.reporting.metrics import CHARTS
from tests.conftest import approver_ports
from tests.integration.test_ledger_metrics import given_program_history

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
# Registered the way flows/cli.py registers it: `referrals report ...`.
cli = typer.Typer()
cli.add_typer(report_app, name="report")


@cli.command()
def version() -> None:
    """A second command, so `report` is reached by name as in the real CLI."""


@pytest.fixture
def report_ledger(
    sqlite_ledger: SqlLedger, program: Program, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SqlLedger]:
    # No Prefect server anywhere: the report must not need one.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    given_program_history(sqlite_ledger)
    app = App(
        settings=load_settings(inbox_dir=tmp_path),
        program=program,
        ledger=sqlite_ledger,
        sources=(),
        email=RecordingEmailSender(),
        rails={PayoutRailKind.LEDGER_ONLY: RecordingRail(PayoutRailKind.LEDGER_ONLY)},
        approvals=RecordingApprovalRuns(),
        **approver_ports(sqlite_ledger.engine),
    )
    with use_app(app):
        yield sqlite_ledger


def test_the_report_prints_a_table_per_source_and_writes_the_charts(
    report_ledger: SqlLedger, tmp_path: Path
) -> None:
    out = tmp_path / "charts"

    result = runner.invoke(
        cli, ["report", "--as-of", "2026-11-02T09:00:00", "--periods", "3", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert "as of 2026-11-02 09:00 UTC, by month" in result.output
    for title in ("Customers", "Partners", "Employees", "All sources", "other channels"):
        assert title in result.output
    assert "2026-11 (to date)" in result.output
    assert "referral rate" in result.output
    assert "7.00 / 7.00 (1) ⚠" in result.output  # paid exactly 7 days after the deal
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == sorted(CHARTS)
    assert all(p.read_bytes().startswith(PNG) for p in written)


def test_the_same_numbers_draw_the_same_charts(report_ledger: SqlLedger, tmp_path: Path) -> None:
    args = ["report", "--as-of", "2026-11-02T09:00:00", "--period", "week"]

    first = runner.invoke(cli, [*args, "--out", str(tmp_path / "a")])
    second = runner.invoke(cli, [*args, "--out", str(tmp_path / "b")])

    assert first.exit_code == second.exit_code == 0
    assert first.output.replace(str(tmp_path / "a"), "") == second.output.replace(
        str(tmp_path / "b"), ""
    )
    for chart in (tmp_path / "a").glob("*.png"):
        assert chart.read_bytes() == (tmp_path / "b" / chart.name).read_bytes()


def test_an_unknown_period_is_refused_with_the_choices(report_ledger: SqlLedger) -> None:
    result = runner.invoke(cli, ["report", "--period", "fortnight"])

    assert result.exit_code == 2
    assert "month" in result.output
