"""The failure alert covers every deployment of prefect.yaml, and only this project.

The automation built from code is checked with the Prefect server's own matching
(``EventTrigger.covers``) against the event a failed run of each deployment emits.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from prefect.server.events.schemas.automations import EventTrigger
from prefect.server.events.schemas.events import ReceivedEvent

from config.settings import PROJECT_ROOT
from integrations.prefect_automations import deployment_flows, failed_runs_automation

PREFECT_YAML = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
DEPLOYMENTS = [item["name"] for item in PREFECT_YAML["deployments"]]


def _real_flow_name(entrypoint: str) -> str:
    path, function = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return str(getattr(module, function).name)


def _failed_run_event(deployment: str, flow_name: str, state: str = "Failed") -> ReceivedEvent:
    run_id, flow_id, deployment_id = uuid4(), uuid4(), uuid4()
    return ReceivedEvent(
        event=f"prefect.flow-run.{state}",
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run_id}",
            "prefect.resource.name": "some-run-name",
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow_name,
            },
            {
                "prefect.resource.id": f"prefect.deployment.{deployment_id}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": deployment,
            },
        ],
        id=uuid4(),
        occurred=datetime.now(UTC),
    )


def _trigger() -> EventTrigger:
    built: Any = failed_runs_automation(uuid4(), deployment_flows().values())
    return EventTrigger.model_validate(built.trigger.model_dump(mode="json"))


def test_the_flow_names_read_from_prefect_yaml_are_the_flows_prefect_runs() -> None:
    found = deployment_flows()

    assert list(found) == DEPLOYMENTS
    for spec in PREFECT_YAML["deployments"]:
        assert found[spec["name"]] == _real_flow_name(spec["entrypoint"])


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
@pytest.mark.parametrize("state", ["Failed", "Crashed"])
def test_a_failed_or_crashed_run_of_every_deployment_alerts(deployment: str, state: str) -> None:
    spec = next(item for item in PREFECT_YAML["deployments"] if item["name"] == deployment)
    flow_name = _real_flow_name(spec["entrypoint"])

    assert _trigger().covers(_failed_run_event(deployment, flow_name, state))


def test_the_stripe_poll_and_what_if_named_in_issue_16_alert() -> None:
    trigger = _trigger()

    assert trigger.covers(_failed_run_event("stripe-events-poll", "poll-stripe-events"))
    assert trigger.covers(_failed_run_event("what-if", "what-if"))


def test_a_run_that_completes_or_belongs_to_another_project_does_not_alert() -> None:
    trigger = _trigger()

    assert not trigger.covers(_failed_run_event("referral-cycle", "referral-cycle", "Completed"))
    assert not trigger.covers(_failed_run_event("nightly-etl", "someone-elses-flow"))


def test_a_flow_without_a_name_is_named_as_prefect_names_it(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "from prefect import flow\n\n@flow\ndef nightly_export():\n    pass\n", encoding="utf-8"
    )
    (tmp_path / "prefect.yaml").write_text(
        "deployments:\n  - name: export\n    entrypoint: jobs.py:nightly_export\n",
        encoding="utf-8",
    )

    assert deployment_flows(tmp_path / "prefect.yaml") == {"export": "nightly-export"}


def test_an_entrypoint_that_is_not_a_flow_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text("def helper():\n    pass\n", encoding="utf-8")
    (tmp_path / "prefect.yaml").write_text(
        "deployments:\n  - name: export\n    entrypoint: jobs.py:helper\n", encoding="utf-8"
    )

    with pytest.raises(ValueError, match="no flow helper"):
        deployment_flows(tmp_path / "prefect.yaml")
