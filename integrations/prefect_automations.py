"""Prefect automations that tell on-call and approvers what needs a person.

Created from code (``referrals automations create --webhook-url URL``), idempotently:
a webhook notification block and two automations, updated in place when run again.

* a run of any flow that a deployment of prefect.yaml runs failed or crashed -> notify,
  with the run's state message (the cause in one line);
* an approval waits longer than its SLA (the ``referrals.approval.overdue`` event that
  the ``approval-sla`` flow emits) -> notify, with the link to the waiting run.

Notifications carry run names, reward ids and links: never an email address.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast
from uuid import UUID

import yaml

from config.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

ALERTS_BLOCK = "referrals-alerts"
FAILED_RUNS = "referrals: a run failed or crashed"
OVERDUE_APPROVALS = "referrals: an approval waits past its SLA"
OVERDUE_EVENT = "referrals.approval.overdue"

PREFECT_FILE = PROJECT_ROOT / "prefect.yaml"


def deployment_flows(prefect_file: Path = PREFECT_FILE) -> dict[str, str]:
    """Each deployment of prefect.yaml and the name of the flow it runs.

    Read from the entrypoints' ``@flow(name=...)`` decorators without importing them
    (integrations sit below flows), so a deployment added to prefect.yaml is covered
    by the alerts the next time they are created, with nothing else to edit.

    Raises:
        ValueError: an entrypoint names a function that is not a flow in its file.
    """
    config = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    flows: dict[str, str] = {}
    for deployment in config.get("deployments") or []:
        path, function = deployment["entrypoint"].split(":")
        flows[deployment["name"]] = _flow_name(prefect_file.parent / path, function)
    return flows


def _flow_name(path: Path, function: str) -> str:
    """The name Prefect gives the flow ``function`` of ``path``: its decorator's
    ``name``, else the function's name with dashes (Prefect's default)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name != function:
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if not (isinstance(target, ast.Name) and target.id == "flow") and not (
                isinstance(target, ast.Attribute) and target.attr == "flow"
            ):
                continue
            for keyword in call.keywords if call else []:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
            return function.replace("_", "-")
    raise ValueError(f"{path}: no flow {function} (an entrypoint of prefect.yaml)")


def failed_runs_automation(block_id: UUID, flow_names: Iterable[str]) -> AutomationCore:
    """The automation that notifies when a run of one of ``flow_names`` fails or crashes.

    Its body carries the run's state message: for a start-up error, the one line that
    names the setting or file at fault.
    """
    from prefect.automations import EventTrigger, Posture, SendNotification
    from prefect.events.schemas.automations import AutomationCore

    return AutomationCore(
        name=FAILED_RUNS,
        description="A flow run of the referral program failed or crashed.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "flow",
                "prefect.resource.name": sorted(set(flow_names)),
            },
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="Referral run {{ flow_run.name }} is {{ flow_run.state.name }}",
                body="Flow run {{ flow_run.name }} of {{ flow.name }} ended "
                "{{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
                "{{ flow_run|ui_url }}",
            )
        ],
    )


def save_alerts_block(webhook_url: str) -> UUID:
    """Create or replace the webhook block notifications are sent through."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="referral program alerts",
        url=webhook_url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    return cast(UUID, block.save(ALERTS_BLOCK, overwrite=True))


def ensure_automations(webhook_url: str) -> dict[str, UUID]:
    """Create (or update) the alerting automations; returns name -> automation id."""
    from prefect.automations import EventTrigger, Posture, SendNotification
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    block_id = save_alerts_block(webhook_url)
    wanted = [
        failed_runs_automation(block_id, deployment_flows().values()),
        AutomationCore(
            name=OVERDUE_APPROVALS,
            description="A reward waits for an approver longer than its SLA.",
            trigger=EventTrigger(
                expect={OVERDUE_EVENT},
                match={"prefect.resource.id": "referrals.reward.*"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[
                SendNotification(
                    block_document_id=block_id,
                    subject="A referral reward waits for approval",
                    body="Reward {{ event.payload.reward_id }} has waited more than "
                    "{{ event.payload.waiting_hours_at_least }} h for a decision: "
                    "{{ event.payload.run_url }}",
                )
            ],
        ),
    ]
    ids: dict[str, UUID] = {}
    with get_client(sync_client=True) as client:
        for automation in wanted:
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                ids[automation.name] = existing[0].id
                for duplicate in existing[1:]:
                    client.delete_automation(duplicate.id)
            else:
                ids[automation.name] = client.create_automation(automation)
    return ids
