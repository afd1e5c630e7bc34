"""A referrer whose payout destination changed is paid only after a person approves,
however small the reward; the purge-quarantine flow applies the configured retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import PayoutRailKind, Rejected, RewardStatus
from domain.ports import SourceBatch
from flows import approval
from flows.approval import payout_approval
from flows.bootstrap import App
from flows.cycle import route_rewards
from flows.quarantine import purge_quarantine
from integrations.payments.fake import RecordingRail
from tasks.use_cases.approvals import DESTINATION_CHANGED_SINCE_ASKED
from tests.conftest import contact, people_batch
from tests.flows.test_payout_approval import (  # noqa: F401 (approvers, resumed_run: fixtures)
    ScriptedApprover,
    Suspended,
    approvers,
    decide,
    resumed_run,
)
from tests.integration.test_ledger_flow import given_reward


@pytest.fixture
def approver(monkeypatch: pytest.MonkeyPatch) -> ScriptedApprover:
    scripted = ScriptedApprover()
    monkeypatch.setattr(approval, "wait_for_decision", scripted)
    return scripted


@pytest.mark.usefixtures("approvers")
def test_a_small_reward_after_a_destination_change_waits_for_a_person_who_sees_why(
    test_app: App, approver: ScriptedApprover
) -> None:
    ledger, now = test_app.ledger, datetime.now(UTC)
    past = now - timedelta(days=1)
    changed = given_reward(ledger, past, 1, amount_minor=2_000, status=RewardStatus.HOLDING)
    steady = given_reward(
        ledger, past, 1, amount_minor=2_000, referrer="C9", status=RewardStatus.HOLDING
    )
    # The next drop moves C1's payouts to another connected account.
    ledger.sources.record_batch(
        people_batch(contact("C1", "A-C1", stripe_account_id="acct_new")), now
    )

    routed = route_rewards(as_of=now)

    rail = test_app.rails[PayoutRailKind.LEDGER_ONLY]
    assert isinstance(rail, RecordingRail)
    assert [i.reward_id for i in rail.paid] == [steady.reward_id]
    assert list(routed["approvals"]) == [changed.reward_id]
    view = ledger.rewards.of([changed.reward_id])[changed.reward_id]
    assert view.status is RewardStatus.AWAITING_APPROVAL
    assert view.reward.flags == (PAYOUT_DESTINATION_CHANGED,)
    with pytest.raises(Suspended):
        payout_approval(changed.reward_id)
    assert f"**Fraud flags:** {PAYOUT_DESTINATION_CHANGED}\n" in approver.last_description

    decide(approver, test_app, "maya", reason="new account confirmed")
    assert payout_approval(changed.reward_id) == "paid"
    # Seen and approved: the referrer's next reward is routed as any other.
    following = given_reward(ledger, now, 2, amount_minor=2_000, status=RewardStatus.HOLDING)
    route_rewards(as_of=now + timedelta(minutes=1))
    assert ledger.rewards.of([following.reward_id])[following.reward_id].status is (
        RewardStatus.PAID
    )


@pytest.mark.usefixtures("approvers")
def test_an_approval_asked_before_a_destination_change_is_asked_again_showing_the_flag(
    test_app: App, approver: ScriptedApprover
) -> None:
    ledger, now = test_app.ledger, datetime.now(UTC)
    waiting = given_reward(ledger, now, 1, status=RewardStatus.AWAITING_APPROVAL)
    with pytest.raises(Suspended):
        payout_approval(waiting.reward_id)
    assert "**Fraud flags:** none\n" in approver.last_description
    ledger.sources.record_batch(
        people_batch(contact("C1", "A-C1", stripe_account_id="acct_new")), now
    )

    decide(approver, test_app, "maya", reason="looks right")
    with pytest.raises(Suspended):
        payout_approval(waiting.reward_id)

    assert DESTINATION_CHANGED_SINCE_ASKED in approver.last_description
    assert f"**Fraud flags:** {PAYOUT_DESTINATION_CHANGED}\n" in approver.last_description
    assert test_app.ledger.approvals.view(waiting.reward_id).decisions == ()
    decide(approver, test_app, "maya", reason="new account confirmed")
    assert payout_approval(waiting.reward_id) == "paid"


@pytest.mark.usefixtures("approvers", "resumed_run")
def test_a_run_replaying_after_a_destination_change_does_not_judge_the_stale_answer_again(
    test_app: App, approver: ScriptedApprover
) -> None:
    ledger, now = test_app.ledger, datetime.now(UTC)
    waiting = given_reward(ledger, now, 1, status=RewardStatus.AWAITING_APPROVAL)
    with pytest.raises(Suspended):
        payout_approval(waiting.reward_id)
    ledger.sources.record_batch(
        people_batch(contact("C1", "A-C1", stripe_account_id="acct_new")), now
    )
    decide(approver, test_app, "maya", reason="looks right")
    with pytest.raises(Suspended):
        payout_approval(waiting.reward_id)

    # The run replays from the top (a retry, a restarted worker) before anyone answers
    # the new question: the answer given before the change is met again, with the flag
    # now on the reward, and must stay refused.
    with pytest.raises(Suspended):
        payout_approval(waiting.reward_id)

    rail = test_app.rails[PayoutRailKind.LEDGER_ONLY]
    assert isinstance(rail, RecordingRail)
    assert rail.paid == []
    assert ledger.approvals.view(waiting.reward_id).decisions == ()
    refusals = test_app.approvers.refusals(waiting.reward_id)
    assert [r["reason"] for r in refusals] == [DESTINATION_CHANGED_SINCE_ASKED]
    assert DESTINATION_CHANGED_SINCE_ASKED in approver.last_description


def test_the_purge_flow_empties_excerpts_older_than_the_configured_retention(
    test_app: App,
) -> None:
    ledger, now = test_app.ledger, datetime.now(UTC)
    days = test_app.settings.quarantine_retention_days
    for record, age in (("old.csv:2", days + 1), ("young.csv:2", days - 1)):
        ledger.sources.record_batch(
            SourceBatch(
                source="files",
                rejected=[Rejected("files", record, "x", "bad", "jane@acme.example")],
                records_in=1,
            ),
            now - timedelta(days=age),
        )

    assert purge_quarantine(as_of=now) == {"purged": 1, "retention_days": 30}
    assert purge_quarantine(as_of=now)["purged"] == 0
