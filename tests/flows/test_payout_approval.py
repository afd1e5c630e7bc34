"""The payout-approval flow, with a scripted approver standing in for suspend/resume.

``ScriptedApprover`` behaves as Prefect does with a deployment: a question (pause key)
nobody answered yet suspends the run (here: raises ``Suspended``); resuming runs the
flow again from the top, and every question already answered gets its answer back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
)
from prefect.events import Event

from domain.approvers import make_approver
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
from flows.approval_listener import apply_resumed_answer
from flows.bootstrap import App
from integrations.approvals.answers import PrefectAnswers, ResumedAnswer, resumed_run_id
from integrations.payments.fake import RecordingRail
from tasks.approvals import request_approvals
from tasks.reports import APPROVALS_KEY, publish_waiting_approvals
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import NOW, contact, people_batch

CODE = "R" + "A" * 20


class Suspended(Exception):
    """The run would now wait for a person (its process exits)."""


@dataclass
class ScriptedApprover:
    answers: dict[str, PayoutDecision] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    messages: list[str | None] = field(default_factory=list)

    def __call__(
        self, form: type[PayoutDecision], key: str, timeout: int, message: str | None = None
    ) -> PayoutDecision:
        self.asked.append((key, form._description or ""))
        self.messages.append(message)
        if key in self.answers:
            return self.answers[key]
        raise Suspended(key)

    def answer(self, **decision: object) -> None:
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


def _reward_awaiting_approval(app: App, deal_minor: int, deal: str = "deal-1") -> str:
    """A partner's reward (15% of the deal) that routing sent to approval."""
    ledger, program = app.ledger, app.program
    partner = contact("P1", "PA", kind=ReferrerType.PARTNER, stripe_account_id="acct_p1")
    ledger.sources.record_batch(people_batch(partner), NOW)
    record_ask_decisions(ledger, [], {"P1": CODE}, NOW, NOW)
    conversion = Conversion(
        conversion_id=derived_id("conversion", f"test:{deal}"),
        source_event=f"test:{deal}",
        referral_code=CODE,
        referrer_id="P1",
        referee_account_id="RA",
        referee_contact_id="RC",
        milestone=Milestone.CUSTOMER,
        occurred_at=NOW - timedelta(days=30),
        amount=Money(deal_minor, "EUR"),
    )
    ledger.conversions.record_conversions([], [conversion], [], NOW)
    rewards = compute_rewards(conversion, [(partner, Decimal(1))], program)
    ledger.rewards.record([conversion.conversion_id], rewards, [], NOW)
    (reward,) = rewards
    ledger.rewards.move(
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
        "**Referee:** RA",
        "partner-first-year",
        "last_touch",
        "**Fraud flags:** none",
        reward_id,
    ):
        assert expected in text
    assert "@" not in text, "no email address goes into Prefect"
    assert _paid(test_app) == []


# -- registered approvers and their codes -------------------------------------------------

APPROVERS = {
    "maya": ("Maya Chen", "maya.chen@corp.example", "20000.00", None),
    "sam": ("Sam Okoye", "sam.okoye@corp.example", "20000.00", None),
    "lou": ("Lou Low", "lou@corp.example", "1000.00", None),
    # Registered with the referrer's own CRM contact: the referrer, as an approver.
    "pat": ("Pat Partner", "pat.private@mail.example", "20000.00", "P1"),
    # The referee's colleague: another contact, at the referee's account RA.
    "rita": ("Rita Referee", "rita@ra.example", "20000.00", "RC2"),
}


@pytest.fixture
def approvers(test_app: App) -> dict[str, str]:
    """Every approver above, registered and enrolled; id -> display name."""
    test_app.ledger.sources.record_batch(people_batch(contact("RC2", "RA")), NOW)
    for approver_id, (name, email, limit, contact_id) in APPROVERS.items():
        approver = make_approver(
            approver_id=approver_id,
            display_name=name,
            email=email,
            contact_id=contact_id,
            limit=Money.parse(limit, "EUR"),
        )
        test_app.approvers.add(approver, "test", NOW)
        test_app.codes.enrol(approver_id, "test", NOW)
    return {k: v[0] for k, v in APPROVERS.items()}


def code_of(app: App, approver_id: str) -> str:
    """What the approver's authenticator app shows now."""
    totp = app.codes._totp(approver_id)
    assert totp is not None
    return totp.now()


def decide(
    scripted: ScriptedApprover,
    app: App,
    approver_id: str,
    *,
    approve: bool = True,
    reason: str = "checked the deal",
    code: str | None = None,
    **extra: object,
) -> None:
    scripted.answer(
        approver_id=approver_id,
        code=code or code_of(app, approver_id),
        approve=approve,
        reject=not approve,
        reason=reason,
        **extra,
    )


def refused_once(reward_id: str, scripted: ScriptedApprover, app: App, why: str) -> None:
    """The run asks again, says why in its description and state message, pays nothing,
    records no decision and keeps the refusal."""
    paid_before = _paid(app)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert why in scripted.last_description
    assert why in (scripted.messages[-1] or "")
    assert _paid(app) == paid_before
    assert app.ledger.approvals.view(reward_id).decisions == ()
    assert why in app.approvers.refusals(reward_id)[-1]["reason"]


def test_an_approval_pays_the_reward_once_and_records_who_decided_and_why(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)

    decide(approver, test_app, "maya", reason="contract signed")
    assert payout_approval(reward_id) == "paid"

    assert _paid(test_app) == [Money(184_500, "EUR")]
    view = test_app.ledger.approvals.view(reward_id)
    (decision,) = view.decisions
    assert (decision.approver_id, decision.approver, decision.reason) == (
        "maya",
        "Maya Chen",
        "contract signed",
    )
    assert view.reward.balance.is_zero
    assert test_app.ledger.approvals.waiting() == []


def test_a_rejection_closes_the_reward_unpaid_and_tells_the_referrer_why(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)

    decide(approver, test_app, "maya", approve=False, reason="the lead was ours already")
    assert payout_approval(reward_id) == "rejected"

    assert _paid(test_app) == []
    assert test_app.ledger.approvals.view(reward_id).reward.balance.is_zero
    notices = [m for m in test_app.email.sent if m.kind == "reward_rejected"]  # type: ignore[attr-defined]
    assert [m.data["reason"] for m in notices] == ["the lead was ours already"]


def test_a_rejected_rewards_run_ends_in_a_state_named_rejected(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    decide(approver, test_app, "maya", approve=False, reason="not a real referral")

    state = payout_approval(reward_id, return_state=True)
    assert (state.type.value, state.name) == ("COMPLETED", "Rejected")
    assert state.result() == "rejected"


def test_an_approver_may_pay_less_than_the_reward_but_never_more(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    decide(approver, test_app, "maya", adjusted_amount="2000.00")
    refused_once(reward_id, approver, test_app, "above the reward")

    decide(approver, test_app, "maya", reason="partial", adjusted_amount="1500")
    assert payout_approval(reward_id) == "paid"
    assert _paid(test_app) == [Money(150_000, "EUR")]


def test_large_rewards_need_two_different_approvers_by_id(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=4_000_000)  # 6,000.00 EUR
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "Approval 1 of 2" in approver.last_description

    decide(approver, test_app, "maya", reason="checked")
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "Approval 2 of 2" in approver.last_description
    assert _paid(test_app) == []

    # The same person again, however the id is typed.
    decide(approver, test_app, " MAYA ", reason="me again", code="000000")
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert "already approved" in approver.last_description

    decide(approver, test_app, "sam", reason="second pair of eyes")
    assert payout_approval(reward_id) == "paid"
    assert _paid(test_app) == [Money(600_000, "EUR")]
    assert [d.approver_id for d in test_app.ledger.approvals.view(reward_id).decisions] == [
        "maya",
        "sam",
    ]


@pytest.mark.parametrize(
    ("approver_id", "why"),
    [
        ("maya chen", "no registered approver"),
        ("Maya  Chen", "no registered approver"),
        ("maya\u00a0chen", "no registered approver"),
        ("M. Chen", "no registered approver"),
        ("person p1", "no registered approver"),  # the referrer's name
        ("Person RC", "no registered approver"),  # the referee's name
        ("pat", "same contact as the referrer"),
        ("rita", "same account as the referee"),
    ],
)
def test_names_and_parties_cannot_approve(
    test_app: App,
    approver: ScriptedApprover,
    approvers: dict[str, str],
    approver_id: str,
    why: str,
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    decide(approver, test_app, approver_id, code="123456")
    refused_once(reward_id, approver, test_app, why)


def test_a_wrong_code_is_refused_and_pays_nothing(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    right = code_of(test_app, "maya")
    decide(approver, test_app, "maya", code=f"{(int(right) + 1) % 1_000_000:06d}")
    refused_once(reward_id, approver, test_app, "one-time code is wrong")


def test_a_code_already_used_is_refused(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    first = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(first)
    used = code_of(test_app, "maya")
    decide(approver, test_app, "maya", code=used)
    assert payout_approval(first) == "paid"

    # The same code, replayed on another reward in the same 30 seconds.
    second = _reward_awaiting_approval(test_app, deal_minor=1_230_000, deal="deal-2")
    approver.answers.clear()
    with pytest.raises(Suspended):
        payout_approval(second)
    decide(approver, test_app, "maya", code=used)
    refused_once(second, approver, test_app, "already used")


def test_an_approval_above_the_approvers_limit_is_refused(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)  # 1,845.00 EUR
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    decide(approver, test_app, "lou")
    refused_once(reward_id, approver, test_app, "above the limit of approver lou")

    decide(approver, test_app, "lou", reason="reduced", adjusted_amount="1000.00")
    assert payout_approval(reward_id) == "paid"
    assert _paid(test_app) == [Money(100_000, "EUR")]


def test_a_disabled_approver_cannot_decide(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    test_app.approvers.set_active("maya", False, "test", NOW)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    decide(approver, test_app, "maya")
    refused_once(reward_id, approver, test_app, "disabled")


def test_five_wrong_codes_lock_the_approver_out_even_with_the_right_one(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    right = code_of(test_app, "maya")
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        decide(approver, test_app, "maya", code=wrong)
        refused_once(reward_id, approver, test_app, "wrong")
    decide(approver, test_app, "maya")
    refused_once(reward_id, approver, test_app, "too many wrong codes")


def test_neither_or_both_switches_is_refused(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    approver.answer(approver_id="maya", code=code_of(test_app, "maya"), reason="hm")
    refused_once(reward_id, approver, test_app, "exactly one of Approve and Reject")
    approver.answer(
        approver_id="maya", code=code_of(test_app, "maya"), approve=True, reject=True, reason="x"
    )
    refused_once(reward_id, approver, test_app, "exactly one of Approve and Reject")


def test_resuming_a_finished_approval_again_pays_nothing_more(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    decide(approver, test_app, "maya")
    assert payout_approval(reward_id) == "paid"

    assert payout_approval(reward_id) == "paid"
    assert len(_paid(test_app)) == 1


def test_the_decision_form_asks_for_an_approver_id_a_code_and_a_reason() -> None:
    schema = PayoutDecision.model_json_schema()
    assert set(schema["required"]) == {"approver_id", "code", "reason"}
    assert schema["properties"]["approve"]["type"] == "boolean"
    assert schema["properties"]["reject"]["type"] == "boolean"
    assert "enum" not in str(schema), "no select box: it does not open on a click"


# -- the live waiting-approvals table ------------------------------------------------------


def _waiting_table() -> list[dict[str, str]]:
    """The rows of the latest version of the keyed waiting-approvals artifact."""
    with get_client(sync_client=True) as client:
        (latest,) = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=[APPROVALS_KEY])
            )
        )
    data = latest.data
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows


def _publish_as_the_cycle_does(app: App) -> None:
    @flow
    def cycle_report() -> None:
        publish_waiting_approvals(app.ledger, app.approvals, NOW)

    cycle_report()


def test_a_recorded_decision_rewrites_the_waiting_approvals_table_without_that_reward(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    decided = _reward_awaiting_approval(test_app, deal_minor=1_230_000, deal="deal-1")
    still = _reward_awaiting_approval(test_app, deal_minor=1_000_000, deal="deal-2")
    test_app.ledger.rewards.add_flag([still], "self_referral:same_email_domain", NOW)
    runs = request_approvals.fn(test_app.ledger, test_app.approvals, [still], NOW)
    _publish_as_the_cycle_does(test_app)
    assert {r["reward"] for r in _waiting_table()} == {decided, still}

    with pytest.raises(Suspended):
        payout_approval(decided)
    decide(approver, test_app, "maya", reason="contract signed")
    assert payout_approval(decided) == "paid"

    (row,) = _waiting_table()
    assert row["reward"] == still
    assert row["amount"] == "1,500.00 EUR"
    assert row["flags"] == "self-referral: same email domain"
    assert row["run"] == f"[open]({test_app.approvals.ui_url(runs[still])})"
    assert row["referrer"].startswith("Person P1")


def test_a_refused_decision_leaves_the_waiting_approvals_table_as_it_was(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str]
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    request_approvals.fn(test_app.ledger, test_app.approvals, [reward_id], NOW)
    _publish_as_the_cycle_does(test_app)
    with pytest.raises(Suspended):
        payout_approval(reward_id)

    decide(approver, test_app, "maya", code="000000")
    with pytest.raises(Suspended):
        payout_approval(reward_id)

    assert [r["reward"] for r in _waiting_table()] == [reward_id]


# -- the approval listener: the answer applied (and paid) as soon as the run is resumed --


def _approval_run() -> str:
    """A flow run on the test server, standing for the resumed approval run: the
    listener keeps its claim and outcome on it, and the scripted run replays as it."""

    @flow(name="payout-approval-stand-in")
    def stand_in() -> None:
        return None

    state = stand_in(return_state=True)
    return str(state.state_details.flow_run_id)


def _resumed(
    app: App, run_id: str, reward_id: str, approver_id: str, *, approve: bool = True, **form: object
) -> ResumedAnswer:
    """The answer a resume brought to the run's first question, as the listener reads it."""
    return ResumedAnswer(
        run_id=run_id,
        run_name="approve 1,845.00 EUR",
        reward_id=reward_id,
        question="stage-1-try-0",
        form={
            "approver_id": approver_id,
            "code": code_of(app, approver_id),
            "approve": approve,
            "reject": not approve,
            "reason": "checked the deal",
            **form,
        },
        submitted_at=datetime.now(UTC),
    )


@pytest.fixture
def resumed_run(monkeypatch: pytest.MonkeyPatch) -> str:
    """The approval run's id; the scripted run replays as that run (as a deployment's does)."""
    run_id = _approval_run()
    monkeypatch.setattr(approval, "_run_id", lambda: run_id)
    return run_id


def test_the_listener_pays_an_approval_once_and_the_resumed_run_ends_paid_without_paying_again(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    _publish_as_the_cycle_does(test_app)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    answer = _resumed(test_app, resumed_run, reward_id, "maya")

    outcome = apply_resumed_answer(test_app, PrefectAnswers(), answer)

    assert outcome is not None
    assert (outcome["applied"], outcome["error"], outcome["status"]) == (True, None, "paid")
    assert _paid(test_app) == [Money(184_500, "EUR")]
    (decision,) = test_app.ledger.approvals.view(reward_id).decisions
    assert decision.approver_id == "maya"
    # The worker's run of the same resume, seconds later: the same answer replayed.
    approver.answers["stage-1-try-0"] = PayoutDecision(**answer.form)
    state = payout_approval(reward_id, return_state=True)
    assert (state.type.value, state.result()) == ("COMPLETED", "paid")
    assert _paid(test_app) == [Money(184_500, "EUR")]
    # The run rewrites the waiting table the listener (outside any run) leaves alone.
    assert reward_id not in {r["reward"] for r in _waiting_table()}


def test_a_resume_delivered_twice_to_the_listener_is_applied_and_paid_once(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    answer = _resumed(test_app, resumed_run, reward_id, "maya")

    first = apply_resumed_answer(test_app, PrefectAnswers(), answer)
    # The events websocket replays the last minute after a reconnection.
    again = apply_resumed_answer(test_app, PrefectAnswers(), answer)

    assert first is not None
    assert first["status"] == "paid"
    assert again is None
    assert _paid(test_app) == [Money(184_500, "EUR")]
    assert len(test_app.ledger.approvals.view(reward_id).decisions) == 1
    assert test_app.approvers.refusals(reward_id) == []


def test_an_answer_the_run_claimed_first_is_left_to_the_run(
    test_app: App,
    approver: ScriptedApprover,
    approvers: dict[str, str],
    resumed_run: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    answer = _resumed(test_app, resumed_run, reward_id, "maya")
    # The worker was quicker (the listener down, or late): the run judges and pays. As
    # with a real resume, the code is checked at the time the answer reached the server,
    # not after the run's own calls to it (a busy test server once took over a minute).
    monkeypatch.setattr(approval, "decision_received_at", lambda key: answer.submitted_at)
    approver.answers["stage-1-try-0"] = PayoutDecision(**answer.form)
    assert payout_approval(reward_id) == "paid"

    assert apply_resumed_answer(test_app, PrefectAnswers(), answer) is None
    assert _paid(test_app) == [Money(184_500, "EUR")]
    assert test_app.approvers.refusals(reward_id) == []


def test_a_rejection_applied_by_the_listener_pays_nothing_and_the_run_ends_rejected(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    answer = _resumed(test_app, resumed_run, reward_id, "maya", approve=False)

    outcome = apply_resumed_answer(test_app, PrefectAnswers(), answer)

    assert outcome is not None
    assert outcome["status"] == "rejected"
    assert _paid(test_app) == []
    approver.answers["stage-1-try-0"] = PayoutDecision(**answer.form)
    state = payout_approval(reward_id, return_state=True)
    assert (state.type.value, state.name, state.result()) == ("COMPLETED", "Rejected", "rejected")
    assert _paid(test_app) == []


def test_a_wrong_code_refused_by_the_listener_is_asked_again_by_the_run_and_kept_once(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    wrong = "000000" if code_of(test_app, "maya") != "000000" else "111111"
    answer = _resumed(test_app, resumed_run, reward_id, "maya", code=wrong)

    outcome = apply_resumed_answer(test_app, PrefectAnswers(), answer)

    assert outcome is not None
    assert "wrong or expired" in str(outcome["error"])
    # The resumed run reads the listener's outcome instead of judging the answer again:
    # it asks again saying why, and the refusal is kept (and counted) once.
    approver.answers["stage-1-try-0"] = PayoutDecision(**answer.form)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert approver.asked[-1][0] == "stage-1-try-1"
    assert "wrong or expired" in (approver.messages[-1] or "")
    assert _paid(test_app) == []
    assert len(test_app.approvers.refusals(reward_id)) == 1
    # The next, right answer is the run's to apply: the listener never heard of it.
    decide(approver, test_app, "maya")
    assert payout_approval(reward_id) == "paid"
    assert _paid(test_app) == [Money(184_500, "EUR")]


def test_the_second_approval_of_a_two_stage_reward_is_not_taken_for_the_first_again(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=4_000_000)  # 6,000.00 EUR
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    first = _resumed(test_app, resumed_run, reward_id, "maya")

    outcome = apply_resumed_answer(test_app, PrefectAnswers(), first)

    assert outcome is not None
    assert outcome["status"] == "awaiting_approval"
    assert _paid(test_app) == []
    # The run, resumed, asks the second approver; the listener's answer counted once.
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    assert approver.asked[-1][0] == "stage-2-try-0"
    assert test_app.approvers.refusals(reward_id) == []


def test_a_form_that_is_no_decision_is_left_to_the_run_unclaimed(
    test_app: App, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    forged = _resumed(test_app, resumed_run, reward_id, "maya", code="12345x")

    assert apply_resumed_answer(test_app, PrefectAnswers(), forged) is None
    assert PrefectAnswers().claim(resumed_run, "stage-1-try-0", "run").holder == "run"
    assert _paid(test_app) == []


def test_the_listener_hears_resuming_events_of_flow_runs_only() -> None:
    run_id = str(uuid4())
    resuming = Event(
        event="prefect.flow-run.Resuming",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
    )
    other = Event(
        event="prefect.flow-run.Running",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
    )

    assert resumed_run_id(resuming) == run_id
    assert resumed_run_id(other) is None


def test_an_outcome_the_listener_never_wrote_fails_the_run_and_pays_nothing(
    test_app: App, approver: ScriptedApprover, approvers: dict[str, str], resumed_run: str
) -> None:
    reward_id = _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    with pytest.raises(Suspended):
        payout_approval(reward_id)
    # Someone with the Prefect password claims the answer as the listener and says
    # it was applied: the run must neither judge it as approved nor ask it forever.
    answers = PrefectAnswers()
    answers.claim(resumed_run, "stage-1-try-0", "listener")
    answers.record_outcome(resumed_run, "stage-1-try-0", {"applied": True, "error": None})
    decide(approver, test_app, "maya")

    state = payout_approval(reward_id, return_state=True)

    assert state.type.value == "FAILED"
    assert "no decision" in str(state.message)
    assert _paid(test_app) == []
    assert test_app.ledger.approvals.view(reward_id).decisions == ()
