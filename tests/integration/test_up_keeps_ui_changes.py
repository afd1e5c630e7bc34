"""`referrals up` keeps what revenue ops changed in the Prefect UI, on a real server.

A schedule's cron, a schedule's active flag, a paused deployment, a parameter and a
schedule added to an unscheduled deployment are changed through the API (as the UI
does); deploying again keeps each and reports it; with ``reset_schedules`` prefect.yaml's
values are back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import temporary_settings

from config.settings import PROJECT_ROOT
from integrations.prefect_stack import Drift, LocalStack, free_port
from tests.conftest import POSTGRES_URL
from tests.prefect_database import prefect_server_database

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # No worker: nothing runs, only the deployments are registered and read.
    root = tmp_path_factory.mktemp("up-keeps")
    with prefect_server_database(POSTGRES_URL) as server_database:
        stack = LocalStack(
            PROJECT_ROOT,
            port=free_port(),
            home=root / "prefect",
            run_dir=root / "run",
            extra_env=server_database,
        )
        try:
            stack.start_server()
            assert stack.deploy() == []  # a fresh server has nothing to keep
            yield stack
        finally:
            stack.down()


def _deployment(client: SyncPrefectClient, name: str) -> Any:
    for deployment in client.read_deployments():
        if deployment.name == name:
            return deployment
    raise AssertionError(f"no deployment {name}")


def _state(stack: LocalStack) -> dict[str, Any]:
    with temporary_settings(stack.client_settings()), get_client(sync_client=True) as client:
        cycle = _deployment(client, "referral-cycle")
        clawbacks = _deployment(client, "apply-clawbacks")
        poll = _deployment(client, "stripe-events-poll")
        metrics = _deployment(client, "program-metrics")
        what_if = _deployment(client, "what-if")
        return {
            "cycle paused": cycle.paused,
            "clawbacks crons": [s.schedule.cron for s in clawbacks.schedules],
            "poll active": [s.active for s in poll.schedules],
            "metrics periods": metrics.parameters.get("periods"),
            "what-if crons": [s.schedule.cron for s in what_if.schedules],
        }


PREFECT_YAML = {
    "cycle paused": False,
    "clawbacks crons": ["45 * * * *"],
    "poll active": [True],
    "metrics periods": 6,
    "what-if crons": [],
}
CHANGED_IN_UI = {
    "cycle paused": True,
    "clawbacks crons": ["50 */2 * * *"],
    "poll active": [False],
    "metrics periods": 12,
    "what-if crons": ["0 9 * * 1"],
}


def _change_as_revenue_ops_does_in_the_ui(stack: LocalStack) -> None:
    with temporary_settings(stack.client_settings()), get_client(sync_client=True) as client:
        client.pause_deployment(_deployment(client, "referral-cycle").id)
        clawbacks = _deployment(client, "apply-clawbacks")
        client.update_deployment_schedule(
            clawbacks.id,
            clawbacks.schedules[0].id,
            schedule=CronSchedule(cron="50 */2 * * *", timezone="Europe/Paris"),
        )
        poll = _deployment(client, "stripe-events-poll")
        client.update_deployment_schedule(poll.id, poll.schedules[0].id, active=False)
        metrics = _deployment(client, "program-metrics")
        client.update_deployment(
            metrics.id,
            DeploymentUpdate(parameters={**metrics.parameters, "periods": 12}),
        )
        what_if = _deployment(client, "what-if")
        client.create_deployment_schedules(
            what_if.id,
            [
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron="0 9 * * 1", timezone="Europe/Paris"), active=True
                )
            ],
        )


def _items(drifts: list[Drift]) -> set[tuple[str, str]]:
    return {(drift.deployment, drift.item) for drift in drifts}


EXPECTED_DRIFTS = {
    ("referral-cycle", "paused"),
    ("apply-clawbacks", "schedules"),
    ("stripe-events-poll", "schedules"),
    ("program-metrics", "parameters"),
    ("what-if", "schedules"),
}


def test_up_keeps_and_reports_ui_changes_and_reset_puts_prefect_yaml_back(
    stack: LocalStack, tmp_path: Path
) -> None:
    assert _state(stack) == PREFECT_YAML
    _change_as_revenue_ops_does_in_the_ui(stack)
    assert _state(stack) == CHANGED_IN_UI

    kept = stack.deploy()

    assert _state(stack) == CHANGED_IN_UI
    assert _items(kept) == EXPECTED_DRIFTS
    assert all(drift.kept for drift in kept)
    report = "\n".join(map(str, kept))
    assert "apply-clawbacks: schedules on the server [cron '50 */2 * * *'" in report
    assert "in prefect.yaml [cron '45 * * * *' Europe/Paris, active]" in report
    assert "--reset-schedules" in report

    assert _items(stack.deploy()) == EXPECTED_DRIFTS  # kept again, still reported

    put_back = stack.deploy(reset_schedules=True)

    assert _items(put_back) == EXPECTED_DRIFTS
    assert not any(drift.kept for drift in put_back)
    assert _state(stack) == PREFECT_YAML
    assert stack.deploy() == []
