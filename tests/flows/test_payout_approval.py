"""The payout-approval flow, with a scripted approver standing in for suspend/resume.

``ScriptedApprover`` behaves as Prefect does with a deployment: a question (pause key)
nobody answered yet suspends the run (here: raises ``Suspended``); resuming runs the
flow again from the top, and every question already answered gets its answer back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.models import (
    Conversion,
    Milestone,
    PayoutRailKind,
    ReferrerType,
    RewardStatus,
    derived_id,
)
from domain.money import Money
from domain.rewards import compute_rewards
from flows import approval
from flows.approval import PayoutDecision, payout_approval
from flows.bootstrap import App
from integrations.payments.fake import RecordingRail
from tests.conftest import NOW, contact, people_batch

CODE = "R" + "A" * 20


class Suspended(Exception):
    """The run would now wait for a person (its process exits)."""


@dataclass
class ScriptedApprover:
    answers: dict[str, PayoutDecision] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, form: type[PayoutDecision], key: str, timeout: int) -> PayoutDecision:
        self.asked.append((key, form._description or ""))
        if key in self.answers:
            return self.answers[key]
        raise Suspended(key)

    def answer(self, **decision: str) -> None:
        """Resume the pending question with ``decision``."""
        key = self.asked[-1][0]
        self.answers[key] = PayoutDecision(**decision)

    @property
    def last_description(self) -> str:
        return self.asked[-1][1]


@pytest.fixture
def approver(monkeypatch: pytest.MonkeyPatch) -> ScriptedApprover:
    scripted = ScriptedApprover()
    monkeypatch.setattr(approval, "wait_for_decision", scripted)
    return scripted


def _reward_awaiting_approval(app: App, deal_minor: int) -> str:
    """A partner's reward (15% of the deal) that routing sent to approval."""
    ledger, program = app.ledger, app.program
    partner = contact("P1", "PA", kind=ReferrerType.PARTNER, stripe_account_id="acct_p1")
    ledger.record_batch(people_batch(partner), NOW)
    ledger.record_ask_decisions([], {"P1": CODE}, NOW, NOW)
    conversion = Conversion(
        conversion_id=derived_id("conversion", "test:deal-1"),
        source_event="test:deal-1",
        referral_code=CODE,
        referrer_id="P1",
        referee_account_id="RA",
        referee_contact_id="RC",
        milestone=Milestone.CUSTOMER,
        occurred_at=NOW - timedelta(days=30),
        amount=Money(deal_minor, "EUR"),
    )
    ledger.record_conversions([], [conversion], [], NOW)
    rewards = compute_rewards(conversion, [(partner, Decimal(1))], program)
    ledger.record_rewards([conversion.conversion_id], rewards, [], NOW)
    (reward,) = rewards
    ledger.move_rewards(
        [reward.reward_id], [RewardStatus.HOLDING], RewardStatus.AWAITING_APPROVAL, NOW
    )
    return reward.reward_id


def _paid(app: App) -> list[Money]:
    rail = app.rails[PayoutRailKind.LEDGER_ONLY]
    assert isinstance(rail, RecordingRail)
    return [i.amount for i in rail.paid]


def _run_until_decided(reward_id: str) -> str:
    return payout_approval(reward_id)


def test_the_run_waits_with_a_description_carrying_everything_needed_to_decide(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)  # 1,845.00 EUR

    with pytest.raises(Suspended):
        payout_approval(reward_id)

    text = approver.last_description
    for expected in (
        "1,845.00 EUR",
        "Person P1",
        "`P1`",
        "partner",
        "| Referee | RA",
        "partner-first-year",
        "last_touch",
        "Fraud flags | none",
        reward_id,
    ):
        assert expected in text
    assert "@" not in text, "no email address goes into Prefect"
    assert _paid(test_app) == []


def test_an_approval_pays_the_reward_once_and_records_who_decided_and_why(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)

    approver.answer(decision="approve", approver="Maya Chen", reason="contract signed")
    assert payout_approval(reward_id) == "paid"

    assert _paid(test_app) == [Money(184_500, "EUR")]
    view = test_app.ledger.approval_view(reward_id)
    (decision,) = view.decisions
    assert (decision.approver, decision.reason) == ("Maya Chen", "contract signed")
    assert view.reward.balance.is_zero
    assert test_app.ledger.waiting_approvals() == []


def test_a_rejection_closes_the_reward_unpaid_and_tells_the_referrer_why(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)

    approver.answer(decision="reject", approver="Maya Chen", reason="the lead was ours already")
    assert payout_approval(reward_id) == "rejected"

    assert _paid(test_app) == []
    assert test_app.ledger.approval_view(reward_id).reward.balance.is_zero
    notices = [m for m in test_app.email.sent if m.kind == "reward_rejected"]  # type: ignore[attr-defined]
    assert [m.data["reason"] for m in notices] == ["the lead was ours already"]


def test_an_approver_may_pay_less_than_the_reward_but_never_more(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    approver.answer(decision="approve", approver="Maya", reason="ok", adjusted_amount="2000.00")

    # Too much: the run asks again, saying why, and pays nothing.
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "above the reward" in approver.last_description
    assert _paid(test_app) == []

    approver.answer(decision="approve", approver="Maya", reason="partial", adjusted_amount="1500")
    assert payout_approval(reward_id) == "paid"
    assert _paid(test_app) == [Money(150_000, "EUR")]


def test_large_rewards_need_two_different_approvers(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=4_000_000)  # 6,000.00 EUR
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "Approval 1 of 2" in approver.last_description

    approver.answer(decision="approve", approver="Maya Chen", reason="checked")
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "Approval 2 of 2" in approver.last_description
    assert _paid(test_app) == []

    approver.answer(decision="approve", approver="MAYA CHEN", reason="me again")
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "already approved" in approver.last_description

    approver.answer(decision="approve", approver="Sam Okoye", reason="second pair of eyes")
    assert payout_approval(reward_id) == "paid"
    assert _paid(test_app) == [Money(600_000, "EUR")]
    assert [d.approver for d in test_app.ledger.approval_view(reward_id).decisions] == [
        "Maya Chen",
        "Sam Okoye",
    ]


def test_the_referrer_cannot_approve_their_own_reward(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    approver.answer(decision="approve", approver="person p1", reason="looks fine to me")

    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "party to this referral" in approver.last_description
    assert test_app.ledger.approval_view(reward_id).decisions == ()


def test_resuming_a_finished_approval_again_pays_nothing_more(
    test_app: App, approver: ScriptedApprover
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    approver.answer(decision="approve", approver="Maya", reason="ok")
    assert payout_approval(reward_id) == "paid"

    assert payout_approval(reward_id) == "paid"
    assert len(_paid(test_app)) == 1


def test_the_decision_form_requires_a_decision_an_approver_and_a_reason() -> None:
    schema = PayoutDecision.model_json_schema()
    assert set(schema["required"]) == {"decision", "approver", "reason"}
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
