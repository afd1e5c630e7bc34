"""Approvals: starting the paused runs, describing the reward, recording decisions.

The rules of a decision and its recording are the use cases in
:mod:`tasks.use_cases.approvals`; the tasks here wrap them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.approvals import approvals_needed
from domain.models import ApprovalView
from domain.money import Money
from domain.ports import ApprovalRuns, ApproverRegistry, OneTimeCodes
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger
from tasks.use_cases.approvals import DecisionOutcome, Question, decide


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
    wanted = list(dict.fromkeys([*reward_ids, *ledger.approvals.awaiting_without_request(1000)]))
    requests = ledger.approvals.open_requests(wanted, now)
    to_start = {req: reward for reward, (req, run) in requests.items() if run is None}
    started = runs.start(to_start, _run_names(ledger, to_start)) if to_start else {}
    ledger.approvals.attach_flow_runs(started)
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
    # The balances of all the rewards in one read (a chunked query), not a full
    # approval view per reward: at scale the views were most of the task's time.
    views = ledger.rewards.of(requests.values())
    return {
        request: approval_run_name(views[reward].balance, reward)
        for request, reward in requests.items()
    }


@task(name="load-approval", cache_policy=NO_CACHE)
def load_approval(ledger: SqlLedger, reward_id: str) -> ApprovalView:
    """Everything an approver needs about one reward, read from the ledger."""
    return ledger.approvals.view(reward_id)


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
    """Check one decision against every rule and record it (:func:`decide`).

    Args:
        ledger: where the decision is recorded.
        approvers: the registered approvers.
        codes: verifies (and spends) one-time codes.
        program: the approval thresholds.
        reward_id: the reward decided on.
        form: the Resume form: approver_id, code, approve, reject, reason,
            adjusted_amount (the CLI sends the same fields).
        question: the run and question answered, and when the answer was submitted.
        now: when the decision is recorded.

    Returns:
        The reward's status after the decision, and the error if it was refused.
    """
    return decide(ledger, approvers, codes, program, reward_id, form, question, now, run_logger())


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
    overdue = ledger.approvals.overdue(waiting_since=now - sla, reminded_before=now - sla)
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
    ledger.approvals.mark_reminded([request for request, _, _ in overdue], now)
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
    stale = ledger.approvals.overdue(waiting_since=now - limit)
    reason = f"no decision within {program.approvals.expire_after_hours} h; a new run waits"
    ending = [
        (request, reward)
        for request, reward, run_id in stale
        if run_id is None or runs.cancel_waiting(run_id, reason)
    ]
    expired = set(ledger.approvals.expire_requests([r for r, _ in ending], now))
    rewards = [reward for request, reward in ending if request in expired]
    if rewards:
        run_logger().warning("expired %d approval runs: %s", len(rewards), ", ".join(rewards))
    return rewards


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
