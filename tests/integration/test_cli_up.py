"""`referrals up` prints what it kept from the UI and passes --reset-schedules on.

The stack itself is replaced: tests/integration/test_up_keeps_ui_changes.py runs the
real one against a server.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from integrations.prefect_stack import Drift, LocalStack


@pytest.fixture
def stacks(monkeypatch: pytest.MonkeyPatch) -> list[LocalStack]:
    started: list[LocalStack] = []

    def up(stack: LocalStack) -> list[Drift]:
        started.append(stack)
        return [Drift("referral-cycle", "paused", "True", "False", kept=not stack.reset_schedules)]

    monkeypatch.setattr(LocalStack, "up", up)
    return started


def test_up_lists_each_ui_change_it_kept(stacks: list[Any]) -> None:
    result = CliRunner().invoke(app, ["up"])

    assert result.exit_code == 0, result.output
    assert stacks[0].reset_schedules is False
    assert (
        "referral-cycle: paused on the server True, in prefect.yaml False: kept "
        "(referrals up --reset-schedules puts prefect.yaml's back)"
    ) in result.output


def test_up_with_reset_schedules_puts_prefect_yaml_back_and_says_so(stacks: list[Any]) -> None:
    result = CliRunner().invoke(app, ["up", "--reset-schedules"])

    assert result.exit_code == 0, result.output
    assert stacks[0].reset_schedules is True
    assert "referral-cycle: paused on the server True, in prefect.yaml False: put back" in (
        result.output
    )
