"""Approval rules: how many approvers a reward needs, and which decisions are valid."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

import pytest

from domain.approvals import (
    CheckedDecision,
    agreed_amount,
    approvals_needed,
    check_decision,
    status_after,
)
from domain.approvers import Approver, Identity, make_approver, normalise_email
from domain.errors import InvalidDecision
from domain.models import Decision, RewardStatus
from domain.money import Money
from domain.program import Program

REWARD = Money.parse("800.00", "EUR")
ALICE = replace(
    make_approver(
        approver_id="alice",
        display_name="Alice Martin",
        email="alice@company.example",
        contact_id=None,
        limit=Money.parse("10000.00", "EUR"),
    ),
    enrolled=True,
)
REFERRER = Identity.of(["C1"], ["jane.doe@acme.example"], ["ACME"])
REFEREE = Identity.of(["C2"], ["new@newco.example"], ["NEWCO"])


def decide(
    decision: Decision = Decision.APPROVE,
    approver: Approver | None = ALICE,
    identity: Identity | None = None,
    reason: str = "looks right",
    adjusted_amount: str | None = None,
    reward_amount: Money = REWARD,
    earlier: Collection[str] = (),
    parties: Mapping[str, Identity] | None = None,
) -> CheckedDecision:
    return check_decision(
        decision=decision,
        approver=approver,
        approver_identity=identity or Identity.of([], [approver.email if approver else None]),
        claimed_id=approver.approver_id if approver else "nobody",
        reason=reason,
        adjusted_amount=adjusted_amount,
        reward_amount=reward_amount,
        parties={"referrer": REFERRER, "referee": REFEREE} if parties is None else parties,
        earlier_approver_ids=earlier,
    )


# --- approvals_needed ------------------------------------------------------------------


def test_one_approver_is_enough_below_the_second_threshold(program: Program) -> None:
    just_below = program.second_approver_threshold - Money(1, program.currency)
    assert approvals_needed(just_below, program) == 1
    assert approvals_needed(program.auto_payout_threshold, program) == 1


def test_two_approvers_are_needed_at_exactly_the_second_threshold(program: Program) -> None:
    assert approvals_needed(program.second_approver_threshold, program) == 2


def test_two_approvers_are_needed_above_the_second_threshold(program: Program) -> None:
    above = program.second_approver_threshold + Money(1, program.currency)
    assert approvals_needed(above, program) == 2


# --- check_decision: who decides ------------------------------------------------------


def test_a_valid_approval_names_the_registered_approver_and_keeps_the_amount() -> None:
    checked = decide()
    assert (checked.decision, checked.approver_id, checked.approver) == (
        Decision.APPROVE,
        "alice",
        "Alice Martin",
    )
    assert checked.amount == REWARD


def test_an_id_that_names_no_registered_approver_is_refused() -> None:
    with pytest.raises(InvalidDecision, match="no registered approver has the id 'nobody'"):
        decide(approver=None)


def test_a_disabled_approver_is_refused() -> None:
    with pytest.raises(InvalidDecision, match="disabled"):
        decide(approver=replace(ALICE, active=False))


def test_an_approver_without_an_enrolled_code_is_refused() -> None:
    with pytest.raises(InvalidDecision, match="no one-time code enrolled"):
        decide(approver=replace(ALICE, enrolled=False))


@pytest.mark.parametrize("reason", ["", "  \n"])
@pytest.mark.parametrize("decision", list(Decision))
def test_every_decision_needs_a_reason(decision: Decision, reason: str) -> None:
    with pytest.raises(InvalidDecision, match="needs a reason"):
        decide(decision=decision, reason=reason)


def test_the_reason_is_trimmed() -> None:
    assert decide(reason="  fine\n").reason == "fine"


# --- check_decision: conflicts of interest, by identity only ---------------------------


@pytest.mark.parametrize(
    ("identity", "shared", "role"),
    [
        (Identity.of(["C1"]), "contact", "referrer"),
        (Identity.of([], ["Jane.Doe@ACME.example"]), "email", "referrer"),
        (Identity.of([], ["jane.doe+approvals@acme.example"]), "email", "referrer"),
        (Identity.of([], ["\uff4aane.doe@acme.example"]), "email", "referrer"),  # fullwidth j
        (Identity.of([], [], ["ACME"]), "account", "referrer"),
        (Identity.of(["C2"]), "contact", "referee"),
        (Identity.of([], ["NEW@newco.example "]), "email", "referee"),
        (Identity.of(["X9"], [], ["NEWCO"]), "account", "referee"),
    ],
)
def test_an_approver_who_shares_an_identity_with_a_party_is_refused(
    identity: Identity, shared: str, role: str
) -> None:
    with pytest.raises(InvalidDecision, match=f"same {shared} as the {role}"):
        decide(identity=identity)


@pytest.mark.parametrize("decision", list(Decision))
def test_a_conflicted_approver_can_neither_approve_nor_reject(decision: Decision) -> None:
    with pytest.raises(InvalidDecision, match="party to this reward"):
        decide(decision=decision, identity=Identity.of(["C1"]))


def test_names_are_never_compared_only_identities() -> None:
    # The referrer's own name as the approver's display name proves nothing either way:
    # an approver named like the referrer but with another identity may decide.
    namesake = replace(ALICE, display_name="Jane Doe")
    assert decide(approver=namesake).approver == "Jane Doe"


@pytest.mark.parametrize("earlier", [{"alice"}, {"bob", "alice"}])
def test_the_same_approver_id_cannot_approve_twice(earlier: set[str]) -> None:
    with pytest.raises(InvalidDecision, match="already approved"):
        decide(earlier=earlier)


def test_a_different_second_approver_is_accepted() -> None:
    assert decide(earlier={"bob"}).approver_id == "alice"


# --- check_decision: amounts and limits ------------------------------------------------


@pytest.mark.parametrize("adjusted", ["", None])
def test_an_empty_adjustment_means_no_adjustment(adjusted: str | None) -> None:
    assert decide(adjusted_amount=adjusted).amount == REWARD


def test_a_valid_approval_with_a_lower_amount_returns_the_adjusted_money() -> None:
    assert decide(adjusted_amount="650.50").amount == Money(65050, "EUR")


def test_an_adjustment_equal_to_the_reward_is_allowed() -> None:
    assert decide(adjusted_amount="800.00").amount == REWARD


@pytest.mark.parametrize(
    ("adjusted", "why"),
    [
        ("1E100000000", "exponent of more than two digits"),
        ("1_000", "is not an amount"),
        ("\u0666\u0665\u0660", "is not an amount"),
    ],
)
def test_an_adjusted_amount_the_parser_refuses_is_an_invalid_decision_at_once(
    adjusted: str, why: str
) -> None:
    # The approval form's amount goes through Money.parse: a huge exponent is refused
    # from its text, never expanded.
    with pytest.raises(InvalidDecision, match=why):
        decide(adjusted_amount=adjusted)


def test_an_adjusted_amount_above_the_reward_is_refused() -> None:
    with pytest.raises(InvalidDecision, match="above the reward"):
        decide(adjusted_amount="800.01")


@pytest.mark.parametrize("adjusted", ["0", "0.00", "-5.00"])
def test_an_adjusted_amount_of_zero_or_less_is_refused(adjusted: str) -> None:
    with pytest.raises(InvalidDecision, match="above zero"):
        decide(adjusted_amount=adjusted)


@pytest.mark.parametrize("adjusted", ["abc", "1.005", "12,50", "NaN"])
def test_a_malformed_adjusted_amount_is_refused(adjusted: str) -> None:
    with pytest.raises(InvalidDecision, match="adjusted amount"):
        decide(adjusted_amount=adjusted)


def test_an_approval_above_the_approvers_limit_is_refused() -> None:
    big = Money.parse("10000.01", "EUR")
    with pytest.raises(InvalidDecision, match="above the limit of approver alice"):
        decide(reward_amount=big)


def test_a_reduced_amount_within_the_limit_is_accepted() -> None:
    big = Money.parse("12000.00", "EUR")
    assert decide(reward_amount=big, adjusted_amount="10000.00").amount == Money(1_000_000, "EUR")


def test_a_reduced_amount_still_above_the_limit_is_refused() -> None:
    big = Money.parse("12000.00", "EUR")
    with pytest.raises(InvalidDecision, match="above the limit"):
        decide(reward_amount=big, adjusted_amount="10000.01")


def test_an_approver_has_no_limit_in_another_currency() -> None:
    with pytest.raises(InvalidDecision, match="no limit in JPY"):
        decide(reward_amount=Money(10000, "JPY"))


def test_a_rejection_is_not_bound_by_the_limit() -> None:
    big = Money.parse("50000.00", "EUR")
    assert decide(decision=Decision.REJECT, reward_amount=big).decision is Decision.REJECT


# --- registering approvers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Maya.Chen@Corp.Example ", "maya.chen@corp.example"),
        ("maya.chen+approvals@corp.example", "maya.chen@corp.example"),
        ("\uff4daya@corp.example", "maya@corp.example"),
    ],
)
def test_an_email_has_one_normal_spelling(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["a@b@c.com", "maya", "maya@corp", "ma ya@corp.example", "@x.io"])
def test_a_malformed_email_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="email"):
        normalise_email(raw)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("approver_id", "Maya Chen", "id:"),
        ("approver_id", "m", "id:"),
        ("email", "maya", "email:"),
        ("display_name", "   ", "name:"),
    ],
)
def test_a_new_approver_is_validated_field_by_field(field: str, value: str, message: str) -> None:
    fields: dict[str, object] = {
        "approver_id": "maya.chen",
        "display_name": "Maya Chen",
        "email": "maya.chen@corp.example",
        "contact_id": None,
        "limit": Money.parse("500.00", "EUR"),
    }
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        make_approver(**fields)  # type: ignore[arg-type]


# --- what a decision does to the reward --------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "stage", "needed", "status"),
    [
        (Decision.APPROVE, 1, 1, RewardStatus.APPROVED),
        (Decision.APPROVE, 1, 2, RewardStatus.AWAITING_APPROVAL),
        (Decision.APPROVE, 2, 2, RewardStatus.APPROVED),
        (Decision.REJECT, 1, 2, RewardStatus.REJECTED),
        (Decision.REJECT, 2, 2, RewardStatus.REJECTED),
    ],
)
def test_a_decision_closes_the_reward_only_at_the_last_stage_or_by_rejection(
    decision: Decision, stage: int, needed: int, status: RewardStatus
) -> None:
    assert status_after(decision, stage, needed) is status


def test_a_fully_approved_reward_pays_the_least_any_approver_agreed_to() -> None:
    balance = Money.parse("6000.00", "EUR")
    lowered = Money.parse("5500.00", "EUR")
    assert agreed_amount(balance, [lowered, balance]) == lowered
    assert agreed_amount(balance, [balance, lowered]) == lowered
    assert agreed_amount(balance, []) == balance
