"""Approvals: starting the paused runs, describing the reward, recording decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.approvals import approvals_needed, check_decision
from domain.errors import InvalidDecision
from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import ApprovalView, Decision, RewardStatus
from domain.ports import ApprovalRuns
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
    started = runs.start(to_start) if to_start else {}
    ledger.attach_flow_runs(started)
    by_reward = {reward: run for reward, (_, run) in requests.items() if run}
    by_reward.update({to_start[req]: run for req, run in started.items()})
    run_logger().info(
        "%d rewards wait for approval (%d runs started now)", len(by_reward), len(started)
    )
    return by_reward


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


@task(name="apply-decision", cache_policy=NO_CACHE)
def apply_decision(
    ledger: SqlLedger,
    program: Program,
    reward_id: str,
    decision: Mapping[str, object],
    flow_run_id: str | None,
    now: datetime,
) -> DecisionOutcome:
    """Check one approver's decision against the rules and record it.

    A decision that breaks a rule (an amount above the reward, a conflicted or repeated
    approver, a rejection without a reason) is not recorded; the outcome carries the
    error so the run can ask again. So is an approval of a reward whose referrer's
    payout destination changed after it was sent for approval: the reward is flagged
    ``payout_destination_changed`` first, so the question asked again shows it.
    Replaying a decision already recorded for its stage (the run re-executes after each
    resume) records nothing new.

    Args:
        ledger: where the decision is recorded.
        program: the approval thresholds.
        reward_id: the reward decided on.
        decision: the approver's form: decision, approver, reason, adjusted_amount.
        flow_run_id: the run that received the decision, kept with it.
        now: when the decision is recorded.

    Returns:
        The reward's status after the decision, and the error if it was refused.
    """
    view = ledger.approval_view(reward_id)
    if view.reward.status is not RewardStatus.AWAITING_APPROVAL:
        return DecisionOutcome(view.reward.status)
    stage = len(view.decisions) + 1
    needed = approvals_needed(view.reward.reward.amount, program)
    referrer = view.referrer
    if (
        str(decision.get("decision")) == Decision.APPROVE.value
        and PAYOUT_DESTINATION_CHANGED not in view.reward.reward.flags
        and ledger.referrers_with_changed_destination([referrer.contact_id])
    ):
        # The form was shown before the change: an approval now would pay a destination
        # the approver never saw. Flag the reward and ask again, the flag now shown.
        ledger.add_reward_flag([reward_id], PAYOUT_DESTINATION_CHANGED, now)
        return DecisionOutcome(view.reward.status, error=DESTINATION_CHANGED_SINCE_ASKED)
    conflicted = [
        c for c in (referrer.contact_id, referrer.email, referrer.name, view.referee_contact) if c
    ]
    try:
        checked = check_decision(
            decision=Decision(str(decision.get("decision"))),
            approver=str(decision.get("approver") or ""),
            reason=str(decision.get("reason") or ""),
            adjusted_amount=(
                str(decision["adjusted_amount"]) if decision.get("adjusted_amount") else None
            ),
            # A later approver can lower the amount further, never raise it back.
            reward_amount=min(
                [view.reward.balance]
                + [d.amount for d in view.decisions if d.decision is Decision.APPROVE]
            ),
            earlier_approvers=[d.approver for d in view.decisions],
            conflicted=conflicted,
        )
        status = ledger.record_decision(reward_id, stage, checked, needed, flow_run_id, now)
    except DecisionConflict as exc:
        # Someone else decided this stage first; their decision stands.
        current = ledger.approval_view(reward_id).reward.status
        return DecisionOutcome(current, error=str(exc))
    except (InvalidDecision, ValueError) as exc:
        return DecisionOutcome(view.reward.status, error=str(exc))
    run_logger().info("reward %s: stage %d/%d %s", reward_id, stage, needed, checked.decision)
    return DecisionOutcome(status)


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
        "| | About this reward |",
        "|---|---|",
        f"| Referrer | {view.referrer.name} (`{view.referrer.contact_id}`, "
        f"{view.referrer.referrer_type.value}) |",
        f"| Referee | {view.referee_account or '-'} (`{view.referee_contact or '-'}`) |",
        f"| Reward | {reward.amount} for {reward.milestone.value}, rule `{reward.rule_id}`: "
        f"{reward.explanation} |",
        f"| Deal | {view.conversion_amount or '-'} |",
        f"| Attribution | {reward.attribution_model} |",
        f"| Fraud flags | {', '.join(reward.flags) or 'none'} |",
        f"| Referrer history | {_count(view.referrer_rewards_count, 'reward')}, "
        f"{view.referrer_paid_count} paid, {view.referrer_paid_total} in total |",
        f"| Reward id | `{reward.reward_id}` |",
    ]
    for d in view.decisions:
        lines.append(
            f"| Approval {d.stage} | {d.decision.value} {d.amount} by {d.approver}: {d.reason} |"
        )
    lines += [
        "",
        "Choose **approve** or **reject**, give your name and a reason. To pay less than "
        f"the reward, enter an amount in {reward.amount.currency} (e.g. 450.00).",
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
