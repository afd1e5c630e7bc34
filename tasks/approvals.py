"""Approvals: starting the paused runs, describing the reward, recording decisions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.approvals import CheckedDecision, approvals_needed, check_decision
from domain.approvers import (
    LOCKOUT,
    Approver,
    CodeCheck,
    Identity,
    locked_out,
    lockout_since,
    normalise_approver_id,
)
from domain.errors import InvalidDecision
from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import ApprovalView, Decision, RewardStatus, derived_id
from domain.money import Money
from domain.ports import ApprovalRuns, ApproverRegistry, OneTimeCodes
from domain.program import Program
from integrations.ledger.sql import DecisionConflict, SqlLedger
from tasks._support import run_logger


@task(name="request-approvals", cache_policy=NO_CACHE)
def request_approvals(
    ledger: SqlLedger, runs: ApprovalRuns, reward_ids: Sequence[str], now: datetime
) -> dict[str, str]:
    """Make sure each reward awaiting approval has exactly one run waiting on a person.

    The request is stored first; its id is the run's idempotency key, so a crash
    between starting the run and remembering it finds the same run next time.

    Rewards still awaiting approval whose request expired get a new request and run.

    Args:
        ledger: where approval requests are stored.
        runs: where paused approval runs are started.
        reward_ids: rewards that need a decision.
        now: when requests are recorded.

    Returns:
        reward id -> flow run id of its waiting run.
    """
    # Rewards whose request expired (or whose run never started) get a new one too.
    wanted = list(dict.fromkeys([*reward_ids, *ledger.awaiting_without_request(1000)]))
    requests = ledger.open_approval_requests(wanted, now)
    to_start = {req: reward for reward, (req, run) in requests.items() if run is None}
    started = runs.start(to_start, _run_names(ledger, to_start)) if to_start else {}
    ledger.attach_flow_runs(started)
    by_reward = {reward: run for reward, (_, run) in requests.items() if run}
    by_reward.update({to_start[req]: run for req, run in started.items()})
    run_logger().info(
        "%d rewards wait for approval (%d runs started now)", len(by_reward), len(started)
    )
    return by_reward


def approval_run_name(amount: Money, reward_id: str) -> str:
    """What the approval run is called in the UI: the amount first, never a person."""
    return f"approve {amount.format()} · reward {reward_id[:8]}"


def _run_names(ledger: SqlLedger, requests: Mapping[str, str]) -> dict[str, str]:
    # One look-up per run started; each start is an API call of its own anyway.
    return {
        request: approval_run_name(ledger.approval_view(reward).reward.balance, reward)
        for request, reward in requests.items()
    }


@task(name="load-approval", cache_policy=NO_CACHE)
def load_approval(ledger: SqlLedger, reward_id: str) -> ApprovalView:
    """Everything an approver needs about one reward, read from the ledger."""
    return ledger.approval_view(reward_id)


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


@task(name="apply-decision", cache_policy=NO_CACHE)
def apply_decision(
    ledger: SqlLedger,
    approvers: ApproverRegistry,
    codes: OneTimeCodes,
    program: Program,
    reward_id: str,
    form: Mapping[str, object],
    question: Question,
    now: datetime,
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

    Returns:
        The reward's status after the decision, and the error if it was refused.
    """
    view = ledger.approval_view(reward_id)
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
        ledger.rewards.add_flag([reward_id], PAYOUT_DESTINATION_CHANGED, now)
        return DecisionOutcome(view.reward.status, error=DESTINATION_CHANGED_SINCE_ASKED)
    try:
        checked = vet_decision(view, approvers, codes, form, question.submitted_at, spend_code=True)
        status = ledger.record_decision(reward_id, stage, checked, needed, flow_run_id, now)
    except DecisionConflict as exc:
        # Someone else decided this stage first; their decision stands.
        current = ledger.approval_view(reward_id).reward.status
        return DecisionOutcome(current, error=str(exc))
    except DecisionRefused as exc:
        refuse(approvers, reward_id, form, exc, flow_run_id, now, attempt)
        run_logger().warning("reward %s: decision refused: %s", reward_id, exc)
        return DecisionOutcome(view.reward.status, error=str(exc))
    except InvalidDecision as exc:
        # The reward stopped awaiting approval between the read and the write.
        return DecisionOutcome(ledger.approval_view(reward_id).reward.status, error=str(exc))
    run_logger().info(
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


def describe_for_approver(view: ApprovalView, program: Program, error: str | None) -> str:
    """The markdown shown above the Resume form in the Prefect UI.

    Names and ids only: no email address ever goes into Prefect.
    """
    reward = view.reward.reward
    needed = approvals_needed(reward.amount, program)
    stage = len(view.decisions) + 1
    lines = []
    if error:
        lines += [f"> **The last decision was not accepted:** {error}", ""]
    lines += [
        f"### Approve a referral reward of {view.reward.balance}",
        "",
        f"Approval {stage} of {needed}"
        + (
            f" (two different approvers are needed at or above {program.second_approver_threshold})"
            if needed == 2
            else ""
        )
        + ".",
        "",
        # What decides first, as a list: the UI renders table cells unwrapped, so a
        # long rule or two fraud flags made a table row scroll sideways in the dialog.
        f"- **Amount:** **{view.reward.balance}** ({reward.amount} for {reward.milestone.value})",
        f"- **Referrer:** {view.referrer.name} (`{view.referrer.contact_id}`, "
        f"{view.referrer.referrer_type.value})",
        f"- **Rule:** {reward.rule_id}: {reward.explanation}",
        f"- **Fraud flags:** {', '.join(reward.flags) or 'none'}",
        f"- **Referrer history:** {_count(view.referrer_rewards_count, 'reward')}, "
        f"{view.referrer_paid_count} paid, {view.referrer_paid_total} in total",
        f"- **Referee:** {view.referee_account or '-'} (`{view.referee_contact or '-'}`)",
        f"- **Deal:** {view.conversion_amount or '-'}",
        f"- **Attribution:** {reward.attribution_model}",
        f"- **Reward id:** `{reward.reward_id}`",
    ]
    for d in view.decisions:
        by = f"{d.approver} (`{d.approver_id}`)" if d.approver_id else d.approver
        lines.append(f"- **Approval {d.stage}:** {d.decision.value} {d.amount} by {by}: {d.reason}")
    lines += [
        "",
        "Enter your **approver id** and the **6-digit code** your authenticator app shows, "
        "turn on **Approve** or **Reject**, and give a reason. To pay less than the reward, "
        f"enter an amount in {reward.amount.currency} (e.g. 450.00).",
    ]
    return "\n".join(lines)


OVERDUE_EVENT = "referrals.approval.overdue"


@task(name="remind-overdue-approvals", cache_policy=NO_CACHE)
def remind_overdue_approvals(
    ledger: SqlLedger, runs: ApprovalRuns, program: Program, now: datetime
) -> list[str]:
    """Remind approvers of decisions waiting longer than the SLA, once per SLA period.

    Each overdue reward emits a ``referrals.approval.overdue`` Prefect event (an
    automation turns it into a notification) and a warning in the run log.

    Args:
        ledger: where waiting requests are read and reminders recorded.
        runs: to link each reminder to the waiting run in the UI.
        program: ``approvals.reminder_after_hours``.
        now: the current time.

    Returns:
        The reward ids reminded about.
    """
    from prefect.events import emit_event

    sla = timedelta(hours=program.approvals.reminder_after_hours)
    overdue = ledger.overdue_approvals(waiting_since=now - sla, reminded_before=now - sla)
    for _request, reward_id, run_id in overdue:
        emit_event(
            event=OVERDUE_EVENT,
            resource={"prefect.resource.id": f"referrals.reward.{reward_id}"},
            related=(
                [
                    {
                        "prefect.resource.id": f"prefect.flow-run.{run_id}",
                        "prefect.resource.role": "flow-run",
                    }
                ]
                if run_id
                else None
            ),
            payload={
                "reward_id": reward_id,
                "run_url": runs.ui_url(run_id) if run_id else None,
                "waiting_hours_at_least": program.approvals.reminder_after_hours,
            },
        )
    if overdue:
        run_logger().warning(
            "%d approvals wait longer than %d h: %s",
            len(overdue),
            program.approvals.reminder_after_hours,
            ", ".join(reward for _, reward, _ in overdue),
        )
    ledger.mark_reminded([request for request, _, _ in overdue], now)
    return [reward for _, reward, _ in overdue]


@task(name="expire-stale-approvals", cache_policy=NO_CACHE)
def expire_stale_approvals(
    ledger: SqlLedger, runs: ApprovalRuns, program: Program, now: datetime
) -> list[str]:
    """End approval runs that waited past the expiry; their rewards stay awaiting
    approval and get a fresh run (never paid, never dropped).

    A run resumed in the meantime is left alone: the approver's decision stands.

    Args:
        ledger: where waiting requests are read and closed.
        runs: to cancel the waiting runs.
        program: ``approvals.expire_after_hours``.
        now: the current time.

    Returns:
        The reward ids whose request expired.
    """
    limit = timedelta(hours=program.approvals.expire_after_hours)
    stale = ledger.overdue_approvals(waiting_since=now - limit)
    reason = f"no decision within {program.approvals.expire_after_hours} h; a new run waits"
    ending = [
        (request, reward)
        for request, reward, run_id in stale
        if run_id is None or runs.cancel_waiting(run_id, reason)
    ]
    expired = set(ledger.expire_approval_requests([r for r, _ in ending], now))
    rewards = [reward for request, reward in ending if request in expired]
    if rewards:
        run_logger().warning("expired %d approval runs: %s", len(rewards), ", ".join(rewards))
    return rewards


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
