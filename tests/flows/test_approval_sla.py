"""Approvals that wait too long: a reminder, then a fresh run; never paid or dropped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.events.worker import EventsWorker

from domain.models import RewardStatus
from flows.approval import approval_sla
from flows.bootstrap import App
from integrations.approvals.fake import RecordingApprovalRuns
from tasks.approvals import (
    OVERDUE_EVENT,
    expire_stale_approvals,
    remind_overdue_approvals,
    request_approvals,
)
from tests.flows.test_payout_approval import _reward_awaiting_approval, _waiting_table


def _runs(app: App) -> RecordingApprovalRuns:
    assert isinstance(app.approvals, RecordingApprovalRuns)
    return app.approvals


def test_an_overdue_decision_is_reminded_once_per_sla_period(test_app: App) -> None:
    now = datetime.now(UTC)
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    request_approvals.fn(
        test_app.ledger, test_app.approvals, [reward_id], now - timedelta(hours=30)
    )

    first = remind_overdue_approvals.fn(test_app.ledger, test_app.approvals, test_app.program, now)
    again = remind_overdue_approvals.fn(test_app.ledger, test_app.approvals, test_app.program, now)
    next_day = remind_overdue_approvals.fn(
        test_app.ledger, test_app.approvals, test_app.program, now + timedelta(hours=25)
    )

    assert (first, again, next_day) == ([reward_id], [], [reward_id])


def test_a_fresh_decision_is_not_reminded(test_app: App) -> None:
    now = datetime.now(UTC)
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    request_approvals.fn(test_app.ledger, test_app.approvals, [reward_id], now - timedelta(hours=2))
    assert (
        remind_overdue_approvals.fn(test_app.ledger, test_app.approvals, test_app.program, now)
        == []
    )


def test_the_reminder_is_a_prefect_event_an_automation_can_act_on(test_app: App) -> None:
    now = datetime.now(UTC)
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    request_approvals.fn(
        test_app.ledger, test_app.approvals, [reward_id], now - timedelta(hours=30)
    )

    remind_overdue_approvals.fn(test_app.ledger, test_app.approvals, test_app.program, now)
    EventsWorker.drain_all(timeout=10)  # events are shipped in the background

    query = EventFilter(event=EventNameFilter(name=[OVERDUE_EVENT])).model_dump(mode="json")
    wanted = f"referrals.reward.{reward_id}"
    for _ in range(20):  # the server stores received events asynchronously
        with get_client(sync_client=True) as client:
            events = client.request("POST", "/events/filter", json={"filter": query}).json()
        if any(e["resource"]["prefect.resource.id"] == wanted for e in events["events"]):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no {OVERDUE_EVENT} event for {wanted}")


def test_an_expired_run_is_cancelled_and_replaced_and_the_reward_still_waits(
    test_app: App,
) -> None:
    now = datetime.now(UTC)
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    first_run = request_approvals.fn(
        test_app.ledger, test_app.approvals, [reward_id], now - timedelta(hours=200)
    )[reward_id]

    result = approval_sla()

    assert result["expired"] == [reward_id]
    assert _runs(test_app).cancelled == [first_run]
    (waiting,) = test_app.ledger.waiting_approvals()
    assert waiting.reward_id == reward_id
    assert waiting.flow_run_id not in (None, first_run)
    assert test_app.ledger.rewards.of([reward_id])[reward_id].status is (
        RewardStatus.AWAITING_APPROVAL
    )


def test_an_expired_run_leaves_the_waiting_approvals_table_linking_its_replacement(
    test_app: App,
) -> None:
    now = datetime.now(UTC)
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    first_run = request_approvals.fn(
        test_app.ledger, test_app.approvals, [reward_id], now - timedelta(hours=200)
    )[reward_id]

    approval_sla()

    (row,) = _waiting_table()
    (waiting,) = test_app.ledger.waiting_approvals()
    assert row["reward"] == reward_id
    assert row["run"] == f"[open]({test_app.approvals.ui_url(str(waiting.flow_run_id))})"
    assert first_run not in row["run"]


def test_a_run_resumed_meanwhile_is_not_expired(test_app: App) -> None:
    now = datetime.now(UTC)
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    run_id = request_approvals.fn(
        test_app.ledger, test_app.approvals, [reward_id], now - timedelta(hours=200)
    )[reward_id]
    test_app.approvals.resume(run_id, {"decision": "approve", "approver": "A", "reason": "B"})

    expired = expire_stale_approvals.fn(test_app.ledger, test_app.approvals, test_app.program, now)

    assert expired == []
    assert [w.flow_run_id for w in test_app.ledger.waiting_approvals()] == [run_id]
