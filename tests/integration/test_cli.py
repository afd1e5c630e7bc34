"""The `referrals` command line, with recording adapters in place of Prefect runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from config.settings import PROJECT_ROOT, load_settings
from domain.approvers import make_approver
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
from flows import cli as cli_module
from flows.bootstrap import App, use_app
from flows.cli import app as cli
from flows.demo import enrol_demo_approvers
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from tasks.approvals import apply_decision, request_approvals
from tasks.use_cases.approvals import Question
from tasks.use_cases.asks import record_ask_decisions
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
    # The recording approval runs stand in for the Prefect API: the CLI's check that
    # one answers before resuming a run is answered for them.
    monkeypatch.setattr(cli_module, "_api_answers", lambda _url: True)
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
    ledger.sources.record_batch(people_batch(partner), NOW)
    record_ask_decisions(ledger, [], {"P9": CODE}, NOW, NOW)
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
    ledger.conversions.record_conversions([], [conversion], [], NOW)
    (reward,) = compute_rewards(conversion, [(partner, Decimal(1))], app.program)
    ledger.rewards.record([conversion.conversion_id], [reward], [], NOW)
    ledger.rewards.move(
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


def _register(app: App, approver_id: str, limit: str = "20000.00", **extra: object) -> str:
    """Register and enrol an approver; their current code."""
    fields: dict[str, object] = {
        "approver_id": approver_id,
        "display_name": approver_id.title(),
        "email": f"{approver_id}@corp.example",
        "contact_id": None,
        "limit": Money.parse(limit, "EUR"),
    }
    app.approvers.add(make_approver(**fields | extra), "test", NOW)  # type: ignore[arg-type]
    app.codes.enrol(approver_id, "test", NOW)
    return _code(app, approver_id)


def _code(app: App, approver_id: str) -> str:
    totp = app.codes._totp(approver_id)
    assert totp is not None
    return totp.now()


def _the_run_decides(app: App, spend_first: bool = False) -> None:
    """Play the approval run in-process when the CLI resumes it, as the worker would."""
    runs = app.approvals
    assert isinstance(runs, RecordingApprovalRuns)

    def run(reward_id: str, form: dict[str, object]) -> None:
        now = datetime.now(UTC)
        if spend_first:  # the code was used elsewhere between the CLI's check and the run
            app.codes.verify(str(form["approver_id"]), str(form["code"]), now)
        apply_decision.fn(
            app.ledger,
            app.approvers,
            app.codes,
            app.program,
            reward_id,
            form,
            Question("run-1", "stage-1-try-0", now),
            now,
        )

    runs.on_resume = run


def _approve(reward: str, approver_id: str, code: str, *extra: str) -> Any:
    args = ["approvals", "approve", reward, "--approver-id", approver_id, "--code", code]
    return runner.invoke(cli, [*args, "--reason", "deal verified", "--wait", "5", *extra])


def test_approve_resumes_the_run_which_records_the_decision_and_the_cli_says_so(
    cli_app: App,
) -> None:
    reward_id, run_id = _waiting_reward(cli_app)
    code = _register(cli_app, "maya")
    _the_run_decides(cli_app)

    result = _approve(reward_id[:8], "maya", code, "--amount", "1500.00")

    assert result.exit_code == 0, result.output
    assert f"Reward {reward_id} is now approved" in result.output
    runs = cli_app.approvals
    assert isinstance(runs, RecordingApprovalRuns)
    assert runs.resumed == [
        (
            run_id,
            {
                "approver_id": "maya",
                "code": code,
                "approve": True,
                "reject": False,
                "reason": "deal verified",
                "adjusted_amount": "1500.00",
            },
        )
    ]
    (decision,) = cli_app.ledger.approvals.view(reward_id).decisions
    assert (decision.approver_id, decision.amount.format()) == ("maya", "1,500.00 EUR")


@pytest.mark.parametrize(
    ("approver_id", "code", "why"),
    [
        ("Maya Chen", None, "no registered approver"),
        ("maya", "000000", "one-time code is wrong"),
        ("pat", None, "same contact as the referrer"),
        ("lou", None, "above the limit of approver lou"),
    ],
)
def test_a_refused_decision_is_answered_at_once_with_its_reason_and_nothing_is_resumed(
    cli_app: App, approver_id: str, code: str | None, why: str
) -> None:
    reward_id, _ = _waiting_reward(cli_app)
    codes = {
        "maya": _register(cli_app, "maya"),
        "pat": _register(cli_app, "pat", contact_id="P9"),
        "lou": _register(cli_app, "lou", limit="1000.00"),
    }
    if code == "000000" and codes["maya"] == code:
        code = "000001"

    result = _approve(reward_id[:8], approver_id, code or codes.get(approver_id, "123456"))

    assert result.exit_code == 1
    assert why in result.output
    assert "Nothing was recorded or paid" in result.output
    runs = cli_app.approvals
    assert isinstance(runs, RecordingApprovalRuns)
    assert runs.resumed == []
    assert why in cli_app.approvers.refusals(reward_id)[-1]["reason"]


def test_a_decision_the_run_refuses_is_reported_with_its_reason(cli_app: App) -> None:
    reward_id, _ = _waiting_reward(cli_app)
    code = _register(cli_app, "maya")
    _the_run_decides(cli_app, spend_first=True)

    result = _approve(reward_id[:8], "maya", code)

    assert result.exit_code == 1
    assert "already used" in result.output
    assert cli_app.ledger.approvals.view(reward_id).decisions == ()


def test_reject_accepts_the_start_of_the_run_id_from_the_ui_link(cli_app: App) -> None:
    reward_id, run_id = _waiting_reward(cli_app)
    code = _register(cli_app, "maya")
    _the_run_decides(cli_app)
    result = runner.invoke(
        cli,
        [
            *["approvals", "reject", run_id[:12], "--approver-id", "maya", "--code", code],
            *["--reason", "no", "--wait", "5"],
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"Reward {reward_id} is now rejected" in result.output


def test_a_run_that_never_answers_is_reported_in_one_line_exit_2(cli_app: App) -> None:
    reward_id, _ = _waiting_reward(cli_app)
    code = _register(cli_app, "maya")
    result = _approve(reward_id[:8], "maya", code, "--wait", "1")
    assert result.exit_code == 2
    assert "is the worker running" in result.output


def test_an_id_matching_no_waiting_reward_is_refused(cli_app: App) -> None:
    result = runner.invoke(
        cli,
        ["approvals", "approve", "ffff", "--approver-id", "a", "--code", "1", "--reason", "B"],
    )
    assert result.exit_code == 2
    assert "no reward waiting" in result.output


def test_approvers_are_added_listed_disabled_with_a_change_log(
    cli_app: App, tmp_path: Path
) -> None:
    added = runner.invoke(
        cli,
        [
            *["approvers", "add", "maya.chen", "--name", "Maya Chen"],
            *["--email", "Maya@Corp.example", "--limit", "20000.00 EUR", "--qr-dir", str(tmp_path)],
        ],
    )
    assert added.exit_code == 0, added.output
    assert "otpauth://totp/" in added.output
    png = tmp_path / "approver-maya.chen.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert png.stat().st_mode & 0o077 == 0, "the QR code is readable by its owner only"

    again = runner.invoke(
        cli,
        [
            *["approvers", "add", "maya2", "--name", "M", "--email", "maya+x@corp.example"],
            *["--limit", "1.00 EUR", "--no-enrol"],
        ],
    )
    assert again.exit_code == 2, "one mailbox, one approver"

    assert runner.invoke(cli, ["approvers", "disable", "maya.chen"]).exit_code == 0
    listed = runner.invoke(cli, ["approvers", "list"])
    assert "maya.chen" in listed.output
    assert "DISABLED" in listed.output
    assert "@" not in listed.output
    history = runner.invoke(cli, ["approvers", "history", "maya.chen"])
    assert [line.split()[2] for line in history.output.splitlines()] == [
        "added",
        "enrolled",
        "disabled",
    ]


def test_demo_codes_are_shown_for_demo_approvers_only(cli_app: App) -> None:
    enrol_demo_approvers(cli_app, NOW)
    _register(cli_app, "maya")

    demo = runner.invoke(cli, ["approvers", "demo-code", "maya.chen"])
    assert demo.exit_code == 0
    assert demo.output.strip() == _code(cli_app, "maya.chen")
    real = runner.invoke(cli, ["approvers", "demo-code", "maya"])
    assert real.exit_code == 2
    assert "authenticator app only" in real.output


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
    before = cli_app.ledger.metrics.summary()

    result = runner.invoke(cli, ["config", "what-if", str(proposed)])

    assert result.exit_code == 0, result.output
    assert "partner-first-year" in result.output
    assert "1,845.00 EUR" in result.output
    assert "2,460.00 EUR" in result.output
    assert "615.00 EUR" in result.output  # the difference
    assert cli_app.ledger.metrics.summary() == before


def test_reconcile_without_a_stripe_key_says_there_is_nothing_to_compare(cli_app: App) -> None:
    result = runner.invoke(cli, ["reconcile"])
    assert result.exit_code == 2
    assert "ledger-only" in result.output
