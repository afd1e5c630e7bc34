"""Prefect automations that tell on-call and approvers what needs a person.

Created from code (``referrals automations create --webhook-url URL``), idempotently:
a webhook notification block and two automations, updated in place when run again.

* a referral flow run failed or crashed -> notify;
* an approval waits longer than its SLA (the ``referrals.approval.overdue`` event that
  the ``approval-sla`` flow emits) -> notify, with the link to the waiting run.

Notifications carry run names, reward ids and links: never an email address.
"""

from __future__ import annotations

from typing import cast
from uuid import UUID

ALERTS_BLOCK = "referrals-alerts"
FAILED_RUNS = "referrals: a run failed or crashed"
OVERDUE_APPROVALS = "referrals: an approval waits past its SLA"
OVERDUE_EVENT = "referrals.approval.overdue"

# The flows whose failures page someone: every flow of this project.
FLOWS = (
    "referral-cycle",
    "detect-moments",
    "send-asks",
    "check-conversions",
    "route-rewards",
    "notify-referrers",
    "payout-approval",
    "approval-sla",
    "reconcile-payouts",
    "apply-clawbacks",
    "program-metrics",
    "expire-registrations",
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
        AutomationCore(
            name=FAILED_RUNS,
            description="A flow run of the referral program failed or crashed.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": list(FLOWS),
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
        ),
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
