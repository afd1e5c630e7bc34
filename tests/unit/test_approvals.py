"""Approval rules: how many approvers a reward needs, and which decisions are valid."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from domain.approvals import CheckedDecision, approvals_needed, check_decision
from domain.errors import InvalidDecision
from domain.models import Decision
from domain.money import Money
from domain.program import Program

REWARD = Money.parse("800.00", "EUR")


def decide(
    decision: Decision = Decision.APPROVE,
    approver: str = "alice@company.example",
    reason: str = "looks right",
    adjusted_amount: str | None = None,
    reward_amount: Money = REWARD,
    earlier_approvers: Collection[str] = (),
    conflicted: Collection[str] = (),
) -> CheckedDecision:
    return check_decision(
        decision=decision,
        approver=approver,
        reason=reason,
        adjusted_amount=adjusted_amount,
        reward_amount=reward_amount,
        earlier_approvers=earlier_approvers,
        conflicted=conflicted,
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


# --- check_decision --------------------------------------------------------------------


def test_a_valid_approval_without_adjustment_keeps_the_reward_amount() -> None:
    checked = decide()
    assert checked.decision is Decision.APPROVE
    assert checked.approver == "alice@company.example"
    assert checked.amount == REWARD


@pytest.mark.parametrize("adjusted", ["", None])
def test_an_empty_adjustment_means_no_adjustment(adjusted: str | None) -> None:
    assert decide(adjusted_amount=adjusted).amount == REWARD


def test_a_valid_approval_with_a_lower_amount_returns_the_adjusted_money() -> None:
    checked = decide(adjusted_amount="650.50")
    assert checked.amount == Money(65050, "EUR")


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


def test_the_approver_and_reason_are_trimmed() -> None:
    checked = decide(approver="  bob@company.example ", reason="  fine\n")
    assert checked.approver == "bob@company.example"
    assert checked.reason == "fine"


@pytest.mark.parametrize("approver", ["", "   "])
def test_an_approver_is_required(approver: str) -> None:
    with pytest.raises(InvalidDecision, match="approver is required"):
        decide(approver=approver)


@pytest.mark.parametrize("reason", ["", "  \n"])
def test_a_rejection_needs_a_reason(reason: str) -> None:
    with pytest.raises(InvalidDecision, match="rejection needs a reason"):
        decide(decision=Decision.REJECT, reason=reason)


def test_a_rejection_with_a_reason_is_accepted() -> None:
    checked = decide(decision=Decision.REJECT, reason="self-referral")
    assert checked.decision is Decision.REJECT
    assert checked.reason == "self-referral"


def test_an_approval_needs_no_reason() -> None:
    assert decide(reason="").decision is Decision.APPROVE


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


def test_an_adjusted_amount_is_read_in_the_rewards_currency() -> None:
    yen = Money(10000, "JPY")
    assert decide(adjusted_amount="9000", reward_amount=yen).amount == Money(9000, "JPY")
    with pytest.raises(InvalidDecision):
        decide(adjusted_amount="9000.50", reward_amount=yen)


@pytest.mark.parametrize(
    "approver", ["jane@acme.example", "JANE@ACME.EXAMPLE", " Jane@Acme.Example "]
)
def test_an_approver_who_is_party_to_the_referral_is_refused(approver: str) -> None:
    with pytest.raises(InvalidDecision, match="party to this referral"):
        decide(approver=approver, conflicted={"jane@acme.example", "new@newco.example"})


def test_a_rejection_by_a_conflicted_approver_is_refused_too() -> None:
    with pytest.raises(InvalidDecision, match="party to this referral"):
        decide(
            decision=Decision.REJECT,
            reason="no",
            approver="Jane@acme.example",
            conflicted={"jane@acme.example"},
        )


@pytest.mark.parametrize("approver", ["alice@company.example", "ALICE@Company.Example"])
def test_the_same_approver_cannot_approve_twice(approver: str) -> None:
    with pytest.raises(InvalidDecision, match="already approved"):
        decide(approver=approver, earlier_approvers={"alice@company.example"})


def test_a_different_second_approver_is_accepted() -> None:
    checked = decide(approver="bob@company.example", earlier_approvers={"alice@company.example"})
    assert checked.approver == "bob@company.example"
