"""A flagged reward, however small, waits for a person, who sees why it was flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.fraud import SAME_EMAIL
from domain.models import Conversion, Milestone, PayoutRailKind, RewardStatus, derived_id
from domain.money import Money
from domain.ports import SourceBatch
from flows import approval
from flows.approval import payout_approval
from flows.bootstrap import App
from flows.cycle import check_conversions, route_rewards
from integrations.payments.fake import RecordingRail
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.flows.test_payout_approval import ScriptedApprover, Suspended

HONEST, SELF = "H1", "F1"


def _conversion(key: str, code: str, referrer: str, referee: str, at: datetime) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=f"test:{key}",
        referral_code=code,
        referrer_id=referrer,
        referee_account_id=f"ACC-{referee}",
        referee_contact_id=referee,
        milestone=Milestone.CUSTOMER,
        occurred_at=at,
        amount=Money(300_000, "EUR"),
    )


@pytest.fixture
def approver(monkeypatch: pytest.MonkeyPatch) -> ScriptedApprover:
    scripted = ScriptedApprover()
    monkeypatch.setattr(approval, "wait_for_decision", scripted)
    return scripted


def test_a_small_self_referral_goes_to_approval_with_its_flag_shown_and_is_not_paid(
    test_app: App, approver: ScriptedApprover
) -> None:
    ledger, now = test_app.ledger, datetime.now(UTC)
    honest = contact(HONEST, "ACC-H", email="hal@honest.example")
    cheat = contact(SELF, "ACC-F", email="fred.smith@gmail.com")
    ledger.sources.record_batch(people_batch(honest, cheat), now)
    # The "friend" is Fred again, under a Gmail alias, on a new account.
    alias = contact("N2", "ACC-N2", email="FredSmith+new@googlemail.com")
    friend = contact("N1", "ACC-N1", email="nina@friend.example")
    ledger.sources.record_batch(
        SourceBatch(source="crm", contacts=[alias, friend], records_in=2, reference_only=2), now
    )
    codes = {HONEST: "R" + "H" * 20, SELF: "R" + "F" * 20}
    record_ask_decisions(ledger, [], codes, now, now)
    month_ago = now - timedelta(days=30)
    ledger.conversions.record_conversions(
        [],
        [
            _conversion("honest", codes[HONEST], HONEST, "N1", month_ago),
            _conversion("self", codes[SELF], SELF, "N2", month_ago),
        ],
        [],
        now,
    )

    assert check_conversions()["rewards"]["rewards"] == 2
    routed = route_rewards(as_of=now)

    rail = test_app.rails[PayoutRailKind.LEDGER_ONLY]
    assert isinstance(rail, RecordingRail)
    (waiting,) = routed["approvals"]  # reward id -> the run waiting on a person
    flagged = ledger.rewards.of([waiting])[waiting]
    assert flagged.reward.referrer_id == SELF
    assert flagged.reward.amount == Money(20_000, "EUR")  # well under the 500.00 threshold
    assert flagged.reward.flags == (SAME_EMAIL,)
    assert flagged.status is RewardStatus.AWAITING_APPROVAL
    # The honest referrer's reward of the same size was paid; the flagged one was not.
    paid = {i.reward_id: i.amount for i in rail.paid}
    assert waiting not in paid
    assert list(paid.values()) == [Money(20_000, "EUR")]

    with pytest.raises(Suspended):
        payout_approval(flagged.reward.reward_id)
    text = approver.last_description
    assert f"**Fraud flags:** {SAME_EMAIL}\n" in text
    assert "@" not in text
    assert "fred" not in text.lower()
