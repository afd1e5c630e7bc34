"""The CLI finds the stack `referrals up` started, says plainly when there is none, warns
when its settings differ from the worker's, and reports the stack's health."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows import cli, cli_status
from flows.bootstrap import App
from flows.cli import app as cli_app_
from integrations.prefect_stack import LISTENER, LocalStack, free_port, read_record
from tests.integration import test_cli as cli_tests

runner = CliRunner()
#: The CLI tests' app: SQLite ledger and recording adapters (a fixture).
cli_app = cli_tests.cli_app
SECRET = "sk_test_never_shown_1234567890"


def _unset(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Remove ``names`` from the environment, and have them restored afterwards even if
    the CLI sets them meanwhile (it fills in PREFECT_* defaults)."""
    for name in names:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's run directory, empty, and no Prefect address in the environment."""
    folder = tmp_path / "run"
    monkeypatch.setattr(cli, "RUN_DIR", folder)
    _unset(
        monkeypatch,
        "REFERRALS_PREFECT_PORT",
        "REFERRALS_PREFECT_API_URL",
        "PREFECT_API_URL",
        "PREFECT_UI_API_URL",
        "PREFECT_API_AUTH_STRING",
    )
    return folder


def _stack(tmp_path: Path, run_dir: Path, port: int) -> LocalStack:
    return LocalStack(tmp_path, port=port, run_dir=run_dir, home=tmp_path / "home")


def _worker_started(stack: LocalStack, env: dict[str, str]) -> None:
    """As `up` leaves it: the worker's PID file (this process: alive) and the record."""
    assert stack.run_dir is not None
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    (stack.run_dir / "worker.pid").write_text(str(os.getpid()))
    stack.write_record(env)


def test_up_records_its_port_and_the_workers_setting_names_never_their_values(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _stack(tmp_path, run_dir, 4311)
    monkeypatch.setenv("REFERRALS_STRIPE_API_KEY", SECRET)
    for step in ("start_server", "deploy"):
        monkeypatch.setattr(stack, step, lambda: None)
    monkeypatch.setattr(stack, "start_worker", lambda: True)
    monkeypatch.setattr(stack, "start_listener", lambda: True)

    stack.up()

    record = read_record(run_dir)
    assert record is not None
    assert (record["port"], record["api_url"]) == (4311, "http://127.0.0.1:4311/api")
    assert record["project_dir"] == str(tmp_path)
    assert "REFERRALS_STRIPE_API_KEY" in record["worker"]["settings"]
    assert SECRET not in (run_dir / "stack.json").read_text()
    assert stat.S_IMODE((run_dir / "stack.json").stat().st_mode) == 0o600


def test_a_worker_already_running_keeps_the_settings_recorded_when_it_started(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _stack(tmp_path, run_dir, 4311)
    _worker_started(stack, {"REFERRALS_BATCH_SIZE": "5"})
    before = read_record(run_dir)
    assert before is not None
    for step in ("start_server", "deploy"):
        monkeypatch.setattr(stack, step, lambda: None)
    monkeypatch.setattr(stack, "start_worker", lambda: False)
    monkeypatch.setattr(stack, "start_listener", lambda: False)

    stack.up()

    after = read_record(run_dir)
    assert after is not None
    assert after["worker"] == before["worker"]


def test_down_forgets_the_stack_so_the_cli_no_longer_looks_for_it(
    tmp_path: Path, run_dir: Path
) -> None:
    stack = _stack(tmp_path, run_dir, 4311)
    stack.write_record(None)

    stack.down()

    assert read_record(run_dir) is None


def test_the_cli_talks_to_the_port_up_recorded_without_the_port_variable(
    tmp_path: Path, run_dir: Path
) -> None:
    _stack(tmp_path, run_dir, 4311).write_record(None)

    cli._prefect_env()

    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4311/api"
    assert cli._stack().port == 4311


def test_the_port_variable_still_wins_over_the_record(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack(tmp_path, run_dir, 4311).write_record(None)
    monkeypatch.setenv("REFERRALS_PREFECT_PORT", "4322")

    assert cli._port() == 4322


def test_a_cycle_without_a_running_stack_says_so_in_one_line_and_exits_2(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFERRALS_PREFECT_PORT", str(free_port()))

    result = runner.invoke(cli_app_, ["cycle"])

    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "No Prefect stack is running" in line
    assert "`make up`" in line


def test_a_setting_changed_since_the_worker_started_is_named_in_one_warning_line(
    tmp_path: Path, run_dir: Path, cli_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unset(monkeypatch, "PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_API_AUTH_STRING")
    monkeypatch.setenv("REFERRALS_STRIPE_API_KEY", SECRET)
    _worker_started(_stack(tmp_path, run_dir, free_port()), dict(os.environ))
    monkeypatch.setenv("REFERRALS_STRIPE_API_KEY", SECRET + "-new")

    result = runner.invoke(cli_app_, ["approvals", "list"])

    assert result.exit_code == 0
    (warning,) = [line for line in result.output.splitlines() if "warning" in line]
    assert "REFERRALS_STRIPE_API_KEY" in warning
    assert "make down && make up" in warning
    assert SECRET not in result.output


def test_settings_as_the_worker_has_them_raise_no_warning(
    tmp_path: Path, run_dir: Path, cli_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unset(monkeypatch, "PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_API_AUTH_STRING")
    _worker_started(_stack(tmp_path, run_dir, free_port()), dict(os.environ))

    result = runner.invoke(cli_app_, ["approvals", "list"])

    assert result.exit_code == 0
    assert "warning" not in result.output


# -- referrals status ----------------------------------------------------------------------


def _status(
    monkeypatch: pytest.MonkeyPatch, server: cli_status.Server, runs: cli_status.Runs
) -> Any:
    monkeypatch.setattr(cli_status, "probe_server", lambda url, auth: server)
    monkeypatch.setattr(cli_status, "read_runs", lambda since, url, auth: runs)
    return runner.invoke(cli_app_, ["status"])


def test_status_prints_one_plain_line_per_part_of_a_healthy_stack(
    tmp_path: Path, run_dir: Path, cli_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unset(monkeypatch, "PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_API_AUTH_STRING")
    stack = _stack(tmp_path, run_dir, free_port())
    _worker_started(stack, dict(os.environ))
    cli_tests._waiting_reward(cli_app)
    # The time of the test itself: a module-level clock is minutes old by the time it runs.
    now = datetime.now(UTC)
    runs = cli_status.Runs(
        last_cycle=cli_status.RunSeen("referral-cycle", "Completed", now - timedelta(hours=2)),
        failed=[cli_status.RunSeen("poll-stripe-events", "Failed", now)],
    )

    result = _status(monkeypatch, cli_status.Server(stack.api_url, True, True), runs)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"server: up at {stack.api_url}, authenticated"
    assert lines[1] == f"worker: running (PID {os.getpid()})"
    # Not started here: said so, and not counted against the stack's health.
    assert lines[2].startswith(
        "approval listener: not running (none started by `make up` here): approvals are paid"
    )
    # A busy machine may take a minute between the runs read and the line printed.
    assert re.fullmatch(
        r"last cycle: \d{4}-\d\d-\d\d \d\d:\d\d UTC \(2 h [01] min ago\), Completed", lines[3]
    ), lines[3]
    assert lines[4].startswith("waiting approvals: 1, the oldest waiting ")
    assert lines[5] == "failed runs in the last day: 1 (poll-stripe-events)"
    assert len(lines) == 6


def test_status_says_the_server_is_down_and_the_worker_gone_and_exits_1(
    tmp_path: Path, run_dir: Path, cli_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unset(monkeypatch, "PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_API_AUTH_STRING")
    stack = _stack(tmp_path, run_dir, free_port())
    run_dir.mkdir(parents=True)
    (run_dir / "worker.pid").write_text("999999999")
    (run_dir / f"{LISTENER}.pid").write_text("999999998")

    result = _status(
        monkeypatch,
        cli_status.Server(stack.api_url, False, None),
        cli_status.Runs(None, []),
    )

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"server: down (no answer at {stack.api_url}); start it with `make up`"
    assert lines[1].startswith("worker: not running (PID 999999999 is gone)")
    assert lines[2].startswith("approval listener: not running (PID 999999998 is gone)")
    assert lines[3] == "last cycle: unknown (the server does not answer)"
    assert lines[4] == "waiting approvals: none"
    assert lines[5] == "failed runs in the last day: unknown (the server does not answer)"


def test_status_says_when_the_server_refuses_our_credentials(
    tmp_path: Path, run_dir: Path, cli_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unset(monkeypatch, "PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_API_AUTH_STRING")
    stack = _stack(tmp_path, run_dir, free_port())

    result = _status(
        monkeypatch, cli_status.Server(stack.api_url, True, False), cli_status.Runs(None, [])
    )

    assert result.exit_code == 1
    assert "refuses our credentials" in result.output.splitlines()[0]


# -- referrals cycle's summary -------------------------------------------------------------


def test_the_cycle_prints_what_this_run_did_beside_the_totals_with_money_formatted(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import cycle

    report = {
        "this run": {"new asks": 0, "paid now": "1 payout, 600.00 EUR"},
        "totals": {"paid": "1,200.00 EUR"},
    }
    monkeypatch.setattr(cli, "_api_answers", lambda url: True)
    monkeypatch.setattr(
        cycle,
        "referral_cycle",
        lambda as_of=None: {"summary": {"paid": {"EUR": 120_000}}, "report": report},
    )

    result = runner.invoke(cli_app_, ["cycle"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == report
    assert "120000" not in result.output
