"""`referrals up` keeps what revenue ops changed in the Prefect UI, on a real server.

A schedule's cron, a schedule's active flag, a paused deployment, a parameter and a
schedule added to an unscheduled deployment are changed through the API (as the UI
does); deploying again keeps each and reports it; with ``reset_schedules`` prefect.yaml's
values are back. And in the UI itself, by mouse: a schedule switched off on the deployment
page stays off after `referrals up`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import temporary_settings

from config.settings import PROJECT_ROOT
from integrations.prefect_stack import Drift, LocalStack, free_port
from tests.conftest import POSTGRES_URL
from tests.integration.browser import chromium_missing, launch_chromium
from tests.prefect_database import prefect_server_database

pytestmark = [pytest.mark.server, pytest.mark.slow]
SCREENSHOT = PROJECT_ROOT / "test-output" / "schedule-switched-off.png"


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


def _schedule_active(stack: LocalStack, name: str) -> list[bool]:
    with temporary_settings(stack.client_settings()), get_client(sync_client=True) as client:
        return [s.active for s in _deployment(client, name).schedules]


@pytest.mark.browser
@pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")
def test_a_schedule_switched_off_in_the_ui_by_mouse_stays_off_after_up(stack: LocalStack) -> None:
    name = "expire-registrations"
    with temporary_settings(stack.client_settings()), get_client(sync_client=True) as client:
        deployment_id = _deployment(client, name).id
    assert _schedule_active(stack, name) == [True]

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            # Longer than the minute Prefect's SQLite server can stall for (README).
            page.set_default_timeout(90_000)
            page.goto(stack.ui_url)
            password = page.locator("input[type=password]")
            password.click()
            password.press_sequentially(stack.auth_string)
            page.get_by_role("button", name=re.compile("log ?in", re.IGNORECASE)).click()
            expect(password).to_be_hidden(timeout=90_000)
            page.goto(f"{stack.ui_url}/deployments/deployment/{deployment_id}")
            switch = page.get_by_role("switch").first
            expect(switch).to_be_checked(timeout=90_000)
            switch.click()
            expect(switch).not_to_be_checked(timeout=90_000)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    deadline = time.monotonic() + 90
    while _schedule_active(stack, name) != [False] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _schedule_active(stack, name) == [False]

    drifts = stack.deploy()  # what `referrals up` does

    assert _schedule_active(stack, name) == [False], "the UI's change stays"
    assert [(d.deployment, d.item, d.kept) for d in drifts if d.deployment == name] == [
        (name, "schedules", True)
    ]
