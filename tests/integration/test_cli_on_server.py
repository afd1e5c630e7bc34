"""The CLI finds the stack `up` started, on a real Prefect server with basic auth: its
port and secret without any variable, its health in `referrals status`, and a setting
changed since its worker started."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import cli
from flows.bootstrap import App
from integrations.prefect_stack import LISTENER, LocalStack, read_record
from tests.integration import test_cli as cli_tests
from tests.integration.test_cli_stack import _unset
from tests.prefect_database import running_stack

pytestmark = [pytest.mark.server, pytest.mark.slow]
runner = CliRunner()
#: The CLI tests' app: SQLite ledger and recording adapters (a fixture).
cli_app = cli_tests.cli_app


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("cli-stack")
    with running_stack(root, {"REFERRALS_BATCH_SIZE": "40"}) as started:
        yield started


@pytest.fixture
def found(stack: LocalStack, cli_app: App, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """The CLI as a person runs it: no Prefect variable, no port, the stack's run dir."""
    monkeypatch.setattr(cli, "RUN_DIR", stack.run_dir)
    _unset(
        monkeypatch,
        "REFERRALS_PREFECT_PORT",
        "REFERRALS_PREFECT_API_URL",
        "PREFECT_API_URL",
        "PREFECT_UI_API_URL",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
    )
    monkeypatch.setenv("REFERRALS_BATCH_SIZE", "40")
    return stack


def test_up_records_the_port_and_the_prefect_home_of_the_stack(stack: LocalStack) -> None:
    assert stack.run_dir is not None
    record = read_record(stack.run_dir)

    assert record is not None
    assert record["port"] == stack.port
    assert record["prefect_home"] == str(stack.home)
    assert "REFERRALS_BATCH_SIZE" in record["worker"]["settings"]


def test_status_finds_the_stack_and_is_let_in_without_any_variable(
    found: LocalStack, cli_app: App
) -> None:
    cli_tests._waiting_reward(cli_app)

    result = runner.invoke(cli.app, ["status"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"server: up at {found.api_url}, authenticated"
    assert lines[1] == f"worker: running (PID {found.running('worker')})"
    assert lines[2] == f"approval listener: running (PID {found.running(LISTENER)})"
    assert lines[3] == "last cycle: never run"
    assert lines[4].startswith("waiting approvals: 1, the oldest waiting ")
    assert lines[5] == "failed runs in the last day: 0"
    assert "warning" not in result.output


def test_a_setting_exported_after_up_is_named_in_one_warning(
    found: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFERRALS_BATCH_SIZE", "41")

    result = runner.invoke(cli.app, ["status"])

    warnings = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1
    assert "REFERRALS_BATCH_SIZE" in warnings[0]
    assert "41" not in warnings[0]


def test_the_stack_secret_is_the_one_the_cli_read(found: LocalStack) -> None:
    cli._prefect_env()

    assert os.environ["PREFECT_API_URL"] == found.api_url
    assert os.environ["PREFECT_API_AUTH_STRING"] == Path(found.auth_file).read_text().strip()


def test_up_starts_the_approval_listener_following_the_approval_runs(stack: LocalStack) -> None:
    assert stack.run_dir is not None
    log = stack.run_dir / f"{LISTENER}.log"
    deadline = time.monotonic() + 90  # the listener imports the app and finds the deployment
    while time.monotonic() < deadline and "following the resumes" not in _text(log):
        time.sleep(0.5)

    assert stack.running(LISTENER) is not None
    assert "following the resumes of deployment" in _text(log)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
