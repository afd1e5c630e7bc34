"""Alerting automations are created from code, once, and updated in place."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client

from integrations.prefect_automations import (
    FAILED_RUNS,
    OVERDUE_APPROVALS,
    OVERDUE_EVENT,
    deployment_flows,
    ensure_automations,
)


def test_failed_runs_and_overdue_approvals_notify_through_the_webhook_block() -> None:
    ids = ensure_automations("http://127.0.0.1:9/hooks/referrals")

    with get_client(sync_client=True) as client:
        failed = client.read_automation(ids[FAILED_RUNS])
        overdue = client.read_automation(ids[OVERDUE_APPROVALS])
    assert failed is not None
    assert overdue is not None
    assert failed.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}  # type: ignore[union-attr]
    assert overdue.trigger.expect == {OVERDUE_EVENT}  # type: ignore[union-attr]
    for automation in (failed, overdue):
        (action,) = automation.actions
        assert action.type == "send-notification"
        assert "@" not in action.body


def test_creating_the_automations_again_updates_them_instead_of_adding_more() -> None:
    first = ensure_automations("http://127.0.0.1:9/hooks/a")
    second = ensure_automations("http://127.0.0.1:9/hooks/b")

    assert first == second
    with get_client(sync_client=True) as client:
        for name in (FAILED_RUNS, OVERDUE_APPROVALS):
            assert len(client.read_automations_by_name(name)) == 1


def test_the_automation_on_the_server_names_the_flow_of_every_deployment() -> None:
    ids = ensure_automations("http://127.0.0.1:9/hooks/referrals")

    with get_client(sync_client=True) as client:
        failed = client.read_automation(ids[FAILED_RUNS])
    assert failed is not None
    related: Any = failed.trigger.match_related  # type: ignore[union-attr]
    named = set(related["prefect.resource.name"])
    assert named == set(deployment_flows().values())
    assert {"poll-stripe-events", "what-if", "purge-quarantine"} <= named
