"""Approvals as use cases: vetting a decision against every rule, and recording it.

:func:`record_decision` is the one unit of work a decision is: it reads the reward and
its earlier decisions through ``uow.approvals``, applies :mod:`domain.approvals`
(is the stage final, what does a final approval pay) and writes the decision, the
ledger entry, the reward's new status and the rejection notice, all or nothing.
:func:`decide` is what the approval run does with an answer: vet it
(:func:`vet_decision`), keep a refusal, or record it.

A one-time code is spent in a transaction of its own, as soon as it verifies, and
stays spent whatever happens to the decision after: a code seen once must never be
accepted again (RFC 6238, section 5.2). Verified last, a code is spent only when no
rule refused the decision, so a refusal and a spend never meet in one decision.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.approvals import (
    CheckedDecision,
    approvals_needed,
    check_another_approver,
    check_decision,
    entry_after,
    status_after,
)
from domain.approvers import (
    LOCKOUT,
    Approver,
    CodeCheck,
    Identity,
    locked_out,
    lockout_since,
    normalise_approver_id,
)
from domain.errors import DecisionConflict, InvalidDecision
from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import ApprovalView, Decision, RewardStatus, derived_id
from domain.ports import ApproverRegistry, OneTimeCodes
from domain.program import Program
from domain.stores.approvals import ApprovalsLedger
from domain.stores.destinations import DestinationsStore
from domain.stores.rewards import RewardsStore


class DecisionLedger(ApprovalsLedger, Protocol):
    """What :func:`decide` asks of the ledger beyond the approvals store."""

    @property
    def destinations(self) -> DestinationsStore:
        """Payout destination changes (an approval must not pay one unseen)."""
        ...

    @property
    def rewards(self) -> RewardsStore:
        """The rewards (a reward is flagged when its destination changed unseen)."""
        ...


def record_decision(
    ledger: ApprovalsLedger,
    reward_id: str,
    stage: int,
    checked: CheckedDecision,
    stages_needed: int,
    flow_run_id: str | None,
    now: datetime,
) -> RewardStatus:
    """Record one approver's decision in one unit of work; returns the reward's status.

    A rejection cancels the balance and queues the referrer's notice; the last approval
    needed pays no more than every approver agreed to (:func:`domain.approvals.entry_after`);
    an earlier one leaves the reward waiting for the next, different approver.

    Args:
        ledger: the ledger (its ``approvals`` store, in one transaction).
        reward_id: the reward decided on.
        stage: which approval this is (1, then 2 when two are needed).
        checked: the decision, vetted by :func:`vet_decision`.
        stages_needed: how many approvals the reward needs
            (:func:`domain.approvals.approvals_needed`).
        flow_run_id: the approval run that asked, if any.
        now: when the decision is recorded.

    Raises:
        DecisionConflict: this stage was already decided (e.g. a racing resume).
        InvalidDecision: the reward is no longer awaiting approval, or the approver
            decided an earlier stage of it.
    """
    with ledger.transaction() as uow:
        reward = uow.approvals.reward(reward_id)
        if reward is None or reward.status is not RewardStatus.AWAITING_APPROVAL:
            raise InvalidDecision(
                f"reward {reward_id} is not awaiting approval"
                + (f" (it is {reward.status.value})" if reward else "")
            )
        earlier = uow.approvals.decisions(reward_id)
        check_another_approver(
            checked.approver_id,
            [d.approver_id for d in earlier if d.stage < stage and d.approver_id],
        )
        decision_id = uow.approvals.record(reward_id, stage, checked, flow_run_id, now)
        status = status_after(checked.decision, stage, stages_needed)
        approved = [d.amount for d in earlier if d.decision is Decision.APPROVE]
        if checked.decision is Decision.APPROVE:
            approved.append(checked.amount)
        entry = entry_after(status, reward.balance, approved)
        if entry is not None:
            kind, amount = entry
            uow.approvals.book(reward_id, kind, amount, decision_id, now)
        if status is not RewardStatus.AWAITING_APPROVAL:
            uow.approvals.close(reward_id, status, now)
            if status is RewardStatus.REJECTED:
                uow.approvals.queue_rejection_notice(reward, checked.reason, now)
        return status


DESTINATION_CHANGED_SINCE_ASKED = (
    "the referrer's payout destination changed after this reward was sent for approval "
    f"(flag {PAYOUT_DESTINATION_CHANGED}): check it, then decide again"
)


@dataclass(frozen=True)
class DecisionOutcome:
    status: RewardStatus
    error: str | None = None


# What a one-time code that did not verify tells the approver (and the auditors).
_CODE_REFUSALS = {
    CodeCheck.WRONG: "the one-time code is wrong or expired",
    CodeCheck.REPLAYED: "that one-time code was already used: wait for the next one",
    CodeCheck.NOT_ENROLLED: "the approver has no one-time code enrolled",
}


class DecisionRefused(InvalidDecision):
    """A decision that does not count; ``wrong_code`` when its code did not verify."""

    def __init__(self, reason: str, wrong_code: bool = False) -> None:
        super().__init__(reason)
        self.wrong_code = wrong_code


def vet_decision(
    view: ApprovalView,
    approvers: ApproverRegistry,
    codes: OneTimeCodes,
    form: Mapping[str, object],
    now: datetime,
    *,
    spend_code: bool,
) -> CheckedDecision:
    """Every rule a decision must meet to count, the one-time code last.

    The decision counts only if the approver id names a registered, active approver
    who is not locked out by wrong codes; the approver is not party to the reward (by
    contact, email or account, never by name), has not approved it already, and the
    amount is within their limit; and their one-time code verifies and was never used
    (checked last, so a decision refused for another reason spends no code).

    Args:
        view: the reward as the approver sees it.
        approvers: the registered approvers.
        codes: verifies one-time codes.
        form: approver_id, code, approve, reject, reason, adjusted_amount.
        now: the time the code is checked at.
        spend_code: spend the code (the approval run), or only check it (the CLI,
            before it resumes the run, to answer at once).

    Raises:
        DecisionRefused: naming the rule the decision breaks.
    """
    claimed = str(form.get("approver_id") or "").strip()
    try:
        decision = _decision(form)
        approver = _registered(approvers, claimed)
        if approver is not None and locked_out(
            approvers.wrong_codes_since(approver.approver_id, lockout_since(now))
        ):
            raise DecisionRefused(
                f"too many wrong codes for approver {approver.approver_id}: "
                f"try again in {LOCKOUT.seconds // 60} minutes"
            )
        own, parties = (
            approvers.identities(
                approver,
                {"referrer": view.referrer.contact_id, "referee": view.referee_contact},
            )
            if approver is not None
            else (Identity(), {})
        )
        if "referee" in parties and view.referee_account_id:
            referee = parties["referee"]
            parties["referee"] = Identity(
                referee.contact_ids, referee.emails, referee.accounts | {view.referee_account_id}
            )
        checked = check_decision(
            decision=decision,
            approver=approver,
            approver_identity=own,
            claimed_id=claimed[:64],
            reason=str(form.get("reason") or ""),
            adjusted_amount=str(form.get("adjusted_amount") or "") or None,
            # A later approver can lower the amount further, never raise it back.
            reward_amount=min(
                [view.reward.balance]
                + [d.amount for d in view.decisions if d.decision is Decision.APPROVE]
            ),
            parties=parties,
            earlier_approver_ids=[d.approver_id for d in view.decisions if d.approver_id],
        )
    except DecisionRefused:
        raise
    except (InvalidDecision, ValueError) as exc:
        raise DecisionRefused(str(exc)) from None
    code = str(form.get("code") or "")
    proof = (codes.verify if spend_code else codes.check)(checked.approver_id, code, now)
    if proof is not CodeCheck.OK:
        raise DecisionRefused(_CODE_REFUSALS[proof], wrong_code=proof is CodeCheck.WRONG)
    return checked


def refuse(
    approvers: ApproverRegistry,
    reward_id: str,
    form: Mapping[str, object],
    refusal: DecisionRefused,
    flow_run_id: str | None,
    now: datetime,
    attempt_id: str | None = None,
) -> None:
    """Keep a refused decision among the attempts (auditors, the wrong-code lockout)."""
    claimed = str(form.get("approver_id") or "").strip() or "-"
    approvers.record_refusal(
        attempt_id or str(uuid.uuid4()),
        reward_id,
        claimed,
        str(refusal),
        refusal.wrong_code,
        flow_run_id,
        now,
    )


def refusal_id(reward_id: str, question: Question) -> str:
    """The id a refused answer to one question of one run is kept under."""
    return derived_id("refusal", reward_id, question.flow_run_id or "-", question.key)


@dataclass(frozen=True)
class Question:
    """Which question of which run an answer is to, and when it was submitted.

    A run replays from the top after each resume and meets its earlier questions
    again with their answers: an answer already refused stays refused (it is not
    judged again, nor counted again towards the wrong-code lockout).
    """

    flow_run_id: str | None
    key: str
    submitted_at: datetime


def decide(
    ledger: DecisionLedger,
    approvers: ApproverRegistry,
    codes: OneTimeCodes,
    program: Program,
    reward_id: str,
    form: Mapping[str, object],
    question: Question,
    now: datetime,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> DecisionOutcome:
    """Check one decision against every rule (:func:`vet_decision`) and record it.

    A refused decision records no decision and pays nothing: it is kept among the
    refused attempts, logged as a WARNING, and its reason returned so the run asks
    again saying why. Five wrong codes within 15 minutes refuse that approver's
    decisions for a while.
    An approval of a reward whose referrer's payout destination changed after it was
    sent for approval is refused once too: the reward is flagged
    ``payout_destination_changed`` first, so the question asked again shows it.

    Args:
        ledger: where the decision is recorded.
        approvers: the registered approvers.
        codes: verifies (and spends) one-time codes.
        program: the approval thresholds.
        reward_id: the reward decided on.
        form: the Resume form: approver_id, code, approve, reject, reason,
            adjusted_amount (the CLI sends the same fields).
        question: the run and question answered, and when the answer was submitted
            (the one-time code is checked at that time).
        now: when the decision is recorded.
        log: the run's logger (ids only).

    Returns:
        The reward's status after the decision, and the error if it was refused.
    """
    view = ledger.approvals.view(reward_id)
    if view.reward.status is not RewardStatus.AWAITING_APPROVAL:
        return DecisionOutcome(view.reward.status)
    stage = len(view.decisions) + 1
    needed = approvals_needed(view.reward.reward.amount, program)
    flow_run_id = question.flow_run_id
    attempt = refusal_id(reward_id, question)
    earlier = approvers.refusal(attempt)
    if earlier is not None:
        return DecisionOutcome(view.reward.status, error=earlier)
    if (
        form.get("approve") is True
        and PAYOUT_DESTINATION_CHANGED not in view.reward.reward.flags
        and ledger.destinations.referrers_with_changed_destination([view.referrer.contact_id])
    ):
        # The form was shown before the change: an approval now would pay a destination
        # the approver never saw. Flag the reward and ask again, the flag now shown.
        # The answer is kept refused first: a replaying run meets it again, and with the
        # flag set it would otherwise be judged and could pay the unseen destination.
        refuse(
            approvers,
            reward_id,
            form,
            DecisionRefused(DESTINATION_CHANGED_SINCE_ASKED),
            flow_run_id,
            now,
            attempt,
        )
        ledger.rewards.add_flag([reward_id], PAYOUT_DESTINATION_CHANGED, now)
        return DecisionOutcome(view.reward.status, error=DESTINATION_CHANGED_SINCE_ASKED)
    try:
        checked = vet_decision(view, approvers, codes, form, question.submitted_at, spend_code=True)
        status = record_decision(ledger, reward_id, stage, checked, needed, flow_run_id, now)
    except DecisionConflict as exc:
        # Someone else decided this stage first; their decision stands.
        current = ledger.approvals.view(reward_id).reward.status
        return DecisionOutcome(current, error=str(exc))
    except DecisionRefused as exc:
        refuse(approvers, reward_id, form, exc, flow_run_id, now, attempt)
        log.warning("reward %s: decision refused: %s", reward_id, exc)
        return DecisionOutcome(view.reward.status, error=str(exc))
    except InvalidDecision as exc:
        # The reward stopped awaiting approval between the read and the write.
        return DecisionOutcome(ledger.approvals.view(reward_id).reward.status, error=str(exc))
    log.info(
        "reward %s: stage %d/%d %s by approver %s",
        reward_id,
        stage,
        needed,
        checked.decision,
        checked.approver_id,
    )
    return DecisionOutcome(status)


def _decision(form: Mapping[str, object]) -> Decision:
    """Approve or reject, from the form's two switches."""
    approve, reject = form.get("approve") is True, form.get("reject") is True
    if approve == reject:
        raise InvalidDecision("turn on exactly one of Approve and Reject")
    return Decision.APPROVE if approve else Decision.REJECT


def _registered(approvers: ApproverRegistry, claimed: str) -> Approver | None:
    try:
        return approvers.get(normalise_approver_id(claimed))
    except ValueError:
        return None
