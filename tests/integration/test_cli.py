"""The `referrals` command line, with recording adapters in place of Prefect runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.settings import PROJECT_ROOT, load_settings
from domain.models import (
    Conversion,
    Milestone,
    PayoutRailKind,
    ReferrerType,
    RewardStatus,
    derived_id,
)
from domain.money import Money
from domain.program import Program
from domain.rewards import compute_rewards
from flows.bootstrap import App, use_app
from flows.cli import app as cli
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from tasks.approvals import request_approvals
from tests.conftest import NOW, approver_ports, contact, people_batch

runner = CliRunner()
CODE = "R" + "B" * 20


@pytest.fixture
def cli_app(
    sqlite_ledger: SqlLedger, program: Program, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    # The CLI fills in PREFECT_* defaults; set them here so they are undone afterwards.
    for name in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_HOME"):
        monkeypatch.setenv(name, "http://127.0.0.1:1/api" if "URL" in name else str(tmp_path))
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
        yield app


def _waiting_reward(app: App, deal_minor: int = 1_230_000) -> tuple[str, str]:
    ledger = app.ledger
    partner = contact("P9", "PZ", kind=ReferrerType.PARTNER)
    ledger.record_batch(people_batch(partner), NOW)
    ledger.record_ask_decisions([], {"P9": CODE}, NOW, NOW)
    conversion = Conversion(
        conversion_id=derived_id("conversion", "cli:1"),
        source_event="cli:1",
        referral_code=CODE,
        referrer_id="P9",
        referee_account_id="X",
        referee_contact_id="XC",
        milestone=Milestone.CUSTOMER,
        occurred_at=NOW - timedelta(days=30),
        amount=Money(deal_minor, "EUR"),
    )
    ledger.record_conversions([], [conversion], [], NOW)
    (reward,) = compute_rewards(conversion, [(partner, Decimal(1))], app.program)
    ledger.record_rewards([conversion.conversion_id], [reward], [], NOW)
    ledger.move_rewards(
        [reward.reward_id], [RewardStatus.HOLDING], RewardStatus.AWAITING_APPROVAL, NOW
    )
    runs = request_approvals.fn(ledger, app.approvals, [reward.reward_id], NOW)
    return reward.reward_id, runs[reward.reward_id]


def test_config_check_accepts_the_shipped_rules() -> None:
    result = runner.invoke(cli, ["config", "check", str(PROJECT_ROOT / "config/program.yaml")])
    assert result.exit_code == 0
    assert "valid" in result.output
    assert "500.00 EUR" in result.output


def test_config_check_names_the_wrong_field_and_exits_non_zero(tmp_path: Path) -> None:
    rules = (
        (PROJECT_ROOT / "config/program.yaml")
        .read_text()
        .replace('auto_payout_threshold: "500.00"', 'auto_payout_threshold: "500.001"')
    )
    bad = tmp_path / "program.yaml"
    bad.write_text(rules)
    result = runner.invoke(cli, ["config", "check", str(bad)])
    assert result.exit_code != 0
    assert "approvals.auto_payout_threshold" in str(result.exception or result.output)


def test_approvals_list_says_when_nothing_waits(cli_app: App) -> None:
    result = runner.invoke(cli, ["approvals", "list"])
    assert result.exit_code == 0
    assert "No reward is waiting" in result.output


def test_approvals_list_shows_each_waiting_reward_with_its_run_link(cli_app: App) -> None:
    reward_id, run_id = _waiting_reward(cli_app)
    result = runner.invoke(cli, ["approvals", "list"])
    assert result.exit_code == 0
    assert reward_id in result.output
    assert "1,845.00 EUR" in result.output
    assert run_id in result.output


def test_approve_resumes_the_waiting_run_with_the_typed_decision(cli_app: App) -> None:
    reward_id, run_id = _waiting_reward(cli_app)
    result = runner.invoke(
        cli,
        [
            "approvals",
            "approve",
            reward_id[:8],
            "--approver",
            "Maya Chen",
            "--reason",
            "deal verified",
            "--amount",
            "1500.00",
            "--wait",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    runs = cli_app.approvals
    assert isinstance(runs, RecordingApprovalRuns)
    assert runs.resumed == [
        (
            run_id,
            {
                "decision": "approve",
                "approver": "Maya Chen",
                "reason": "deal verified",
                "adjusted_amount": "1500.00",
            },
        )
    ]


def test_reject_accepts_the_start_of_the_run_id_from_the_ui_link(cli_app: App) -> None:
    _, run_id = _waiting_reward(cli_app)
    result = runner.invoke(
        cli,
        ["approvals", "reject", run_id[:12], "--approver", "Maya", "--reason", "no", "--wait", "0"],
    )
    assert result.exit_code == 0, result.output
    runs = cli_app.approvals
    assert isinstance(runs, RecordingApprovalRuns)
    assert runs.resumed[0][1]["decision"] == "reject"


def test_an_id_matching_no_waiting_reward_is_refused(cli_app: App) -> None:
    result = runner.invoke(
        cli, ["approvals", "approve", "ffff", "--approver", "A", "--reason", "B", "--wait", "0"]
    )
    assert result.exit_code == 2
    assert "no reward waiting" in result.output


def test_asks_preview_renders_the_personal_ask_for_a_moment_and_referrer_type() -> None:
    result = runner.invoke(
        cli,
        [
            "asks",
            "preview",
            "--moment",
            "renewal",
            "--referrer-type",
            "employee",
            "--detail",
            "renewed",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Template: ask_renewal" in result.output
    assert "Hi Alex" in result.output
    assert "300.00 EUR" in result.output  # the employee's reward for a closed deal


def test_asks_preview_uses_a_real_contact_and_their_code(cli_app: App) -> None:
    _waiting_reward(cli_app)  # P9 holds a code
    result = runner.invoke(cli, ["asks", "preview", "--contact", "P9", "--moment", "nps_promoter"])
    assert result.exit_code == 0, result.output
    assert "Hi Person" in result.output
    assert CODE in result.output
    assert "@" not in result.output.split("Unsubscribe")[0]


def test_asks_preview_refuses_an_unknown_moment() -> None:
    result = runner.invoke(cli, ["asks", "preview", "--moment", "birthday"])
    assert result.exit_code == 2
    assert "birthday" in result.output


def test_config_what_if_shows_the_cost_of_a_changed_rule_without_paying(
    cli_app: App, tmp_path: Path
) -> None:
    _waiting_reward(cli_app)  # one partner conversion: 15% of 12,300.00 EUR
    rules = (
        (PROJECT_ROOT / "config/program.yaml")
        .read_text()
        .replace("    percent: 15\n", "    percent: 20\n")
    )
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(rules)
    before = cli_app.ledger.summary()

    result = runner.invoke(cli, ["config", "what-if", str(proposed)])

    assert result.exit_code == 0, result.output
    assert "partner-first-year" in result.output
    assert "1,845.00 EUR" in result.output
    assert "2,460.00 EUR" in result.output
    assert "615.00 EUR" in result.output  # the difference
    assert cli_app.ledger.summary() == before


def test_reconcile_without_a_stripe_key_says_there_is_nothing_to_compare(cli_app: App) -> None:
    result = runner.invoke(cli, ["reconcile"])
    assert result.exit_code == 2
    assert "ledger-only" in result.output
