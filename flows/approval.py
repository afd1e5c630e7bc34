"""The payout approval: one run per large or flagged reward, paused until a person decides.

The run suspends (its process exits, nothing is held while it waits) with a typed form:
the Prefect UI renders :class:`PayoutDecision` as the Resume form, and the CLI resumes
it through the API. After each resume the run starts again from the top; decisions
already recorded in the ledger are not asked again, so the run picks up at the stage
that is still open. Rewards at or above the second threshold need two approvers.

The approval listener (:mod:`flows.approval_listener`, started by ``referrals up``)
usually applies an answer, and pays, before a worker has even started the resumed run:
each answer is judged once, by whoever claims it first
(:mod:`integrations.approvals.answers`), and the run reads the listener's outcome
instead of judging the answer again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from pydantic import Field

from domain.models import RewardStatus
from flows import bootstrap
from integrations.approvals.answers import RUN, PrefectAnswers
from integrations.approvals.suspend import received_at, suspend_with_message
from tasks.approvals import (
    apply_decision,
    describe_for_approver,
    expire_stale_approvals,
    load_approval,
    remind_overdue_approvals,
    request_approvals,
)
from tasks.emails import send_notifications
from tasks.payouts import submit_payouts
from tasks.reports import publish_waiting_approvals
from tasks.use_cases.approvals import Question

MAX_REFUSED_DECISIONS = 20
#: How long a run waits for the listener's outcome of an answer the listener claimed
#: (it pays within a second or two; a listener that died mid-way leaves it to the run).
LISTENER_OUTCOME_WAIT_S = 120.0


class PayoutDecision(RunInput):
    """The approver's decision, as the Resume form asks it.

    No select box: the Prefect UI's select does not open on a mouse click inside the
    Resume dialog (Chromium), so the decision is two switches and the rest is typed.
    Identity is the approver id plus the one-time code from their authenticator app;
    a name proves nothing and is not asked.
    """

    approver_id: str = Field(
        title="Approver ID",
        min_length=1,
        max_length=64,
        description="Your approver id (`referrals approvers list` shows them).",
    )
    code: str = Field(
        title="One-time code",
        pattern=r"^[0-9]{6}$",
        description="The 6-digit code your authenticator app shows now.",
    )
    approve: bool = Field(default=False, title="Approve", description="Pay the reward.")
    reject: bool = Field(
        default=False, title="Reject", description="Close the reward unpaid (say why)."
    )
    reason: str = Field(
        min_length=1, max_length=2000, description="Why you decided so (shown to auditors)."
    )
    # A plain text box in the UI: `str | None` would render as a type toggle the
    # approver must flip first. Empty means "pay the reward as it is".
    adjusted_amount: str = Field(
        default="",
        max_length=20,
        pattern=r"^(\d{1,12}(\.\d{1,2})?)?$",
        description="To pay less than the reward, e.g. 450.00 (never more). "
        "Leave empty to pay the reward.",
    )


FORM_FIELDS = {"approver_id", "code", "approve", "reject", "reason", "adjusted_amount"}


def wait_for_decision(
    form: type[PayoutDecision], key: str, timeout: int, message: str | None = None
) -> PayoutDecision:
    """Suspend this run until someone resumes it with the form filled in.

    As Prefect's ``suspend_flow_run`` does, with a state message: after a refused
    decision the suspended run says why, in the run list and on the run page.
    Tests replace this function to script decisions without a Prefect server.
    """
    if message is None:
        return suspend_flow_run(wait_for_input=form, key=key, timeout=timeout)
    return suspend_with_message(form, key, timeout, message)


def decision_received_at(key: str) -> datetime | None:
    """When the answer to ``key`` reached the server (tests replace this)."""
    return received_at(key)


def applied_by_listener(key: str) -> dict[str, object] | None:
    """The listener's outcome when it applied this run's answer to ``key``; None when
    this run applies it (it claimed the answer now or earlier, or runs outside Prefect).

    Tests replace this function when they script decisions without a Prefect server.
    """
    run_id = _run_id()
    if run_id is None:
        return None
    answers = PrefectAnswers()
    if answers.claim(run_id, key, RUN).holder == RUN:
        return None
    outcome = answers.wait_for_outcome(run_id, key, LISTENER_OUTCOME_WAIT_S)
    if outcome is None or not outcome.get("applied"):
        get_run_logger().warning(
            "the approval listener claimed the answer to %s but did not apply it; "
            "this run applies it",
            key,
        )
        return None
    return outcome


def _refresh_waiting_table(app: bootstrap.App, now: datetime) -> None:
    """Rewrite the waiting-approvals artifact so it no longer lists what was just decided.

    The decision is already in the ledger: a table that cannot be written now (the
    server busy) is written by the next decision, expiry or cycle, and never holds
    back the payout.
    """
    try:
        publish_waiting_approvals(app.ledger, app.approvals, now)
    except Exception as exc:  # a view, not the money: go on and pay
        get_run_logger().warning(
            "the waiting-approvals table was not rewritten (%s); the next decision, "
            "expiry or cycle rewrites it",
            type(exc).__name__,
        )


def _run_id() -> str | None:
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


@flow(name="payout-approval", persist_result=True)
@bootstrap.one_line_failure
def payout_approval(reward_id: str) -> str:
    """Wait for a registered approver to approve or reject one reward, then pay or close it.

    Args:
        reward_id: the reward awaiting approval.

    Returns:
        A final state named for the outcome: Completed ("paid" or "approved", payout
        pending) or Rejected (a Completed state an on-call person tells apart at a
        glance), its result the reward's status.
    """
    app = bootstrap.app()
    timeout = app.program.approvals.expire_after_hours * 3600
    refused = 0
    error: str | None = None
    view = load_approval(app.ledger, reward_id)
    if view.reward.status is not RewardStatus.AWAITING_APPROVAL:
        # Decided before this pass, usually by the approval listener: the waiting table
        # (an artifact, written from a run) may still list the reward.
        _refresh_waiting_table(app, datetime.now(UTC))
    while view.reward.status is RewardStatus.AWAITING_APPROVAL:
        stage = len(view.decisions) + 1
        form = PayoutDecision.with_initial_data(
            description=describe_for_approver(view, app.program, error)
        )
        # The key names the question asked; a run replayed after a resume meets the
        # same keys in the same order and gets back the answers already given.
        key = f"stage-{stage}-try-{refused}"
        decision = wait_for_decision(
            form,
            key=key,
            timeout=timeout,
            message=f"decision refused: {error}" if error else None,
        )
        now = datetime.now(UTC)
        applied = applied_by_listener(key)
        if applied is not None:
            # Judged (and an approval paid) by the listener already: judging the answer
            # again would find its code spent, or take it for the next stage's.
            error = cast("str | None", applied.get("error"))
            get_run_logger().info(
                "reward %s: the answer to %s was applied by the approval listener (%s)",
                reward_id,
                key,
                f"refused: {error}" if error else applied.get("status"),
            )
            if error is None:
                _refresh_waiting_table(app, now)
        else:
            outcome = apply_decision(
                app.ledger,
                app.approvers,
                app.codes,
                app.program,
                reward_id,
                decision.model_dump(include=FORM_FIELDS),
                Question(_run_id(), key, min(decision_received_at(key) or now, now)),
                now,
            )
            error = outcome.error
            if error is None:
                _refresh_waiting_table(app, now)
        refused = refused + 1 if error else 0
        if refused > MAX_REFUSED_DECISIONS:
            raise RuntimeError(f"reward {reward_id}: too many refused decisions; last: {error}")
        view = load_approval(app.ledger, reward_id)
        if (
            error is None
            and view.reward.status is RewardStatus.AWAITING_APPROVAL
            and len(view.decisions) < stage
        ):
            # Said applied, yet the ledger holds no decision for it (an outcome written
            # by someone else than the listener): asking again would ask this forever.
            raise RuntimeError(
                f"reward {reward_id}: the answer to {key} was reported applied, "
                "but the ledger holds no decision for it"
            )
    if view.reward.status is RewardStatus.APPROVED:
        submit_payouts(app.ledger, app.rails, [reward_id], datetime.now(UTC))
    send_notifications(
        app.ledger,
        app.email,
        app.program,
        datetime.now(UTC),
        page_link=app.page_links,
        payout_rails=frozenset(app.rails) if app.connect is not None else None,
    )
    status = load_approval(app.ledger, reward_id).reward.status
    # Prefect makes a returned State the run's final state, and its data the call's
    # result: the status, as the annotation says.
    if status is RewardStatus.REJECTED:
        return cast(
            str,
            Completed(
                name="Rejected", message=f"reward {reward_id} rejected, not paid", data=status.value
            ),
        )
    return cast(str, Completed(message=f"reward {reward_id} {status.value}", data=status.value))


@flow(name="approval-sla")
@bootstrap.one_line_failure
def approval_sla() -> dict[str, list[str]]:
    """Keep approvals moving: remind when a decision is overdue, and replace a run that
    waited past its expiry with a fresh one (the reward is never paid or dropped).

    Returns:
        The rewards reminded about, those whose run expired, and those (re)started.
    """
    app = bootstrap.app()
    now = datetime.now(UTC)
    reminded = remind_overdue_approvals(app.ledger, app.approvals, app.program, now)
    expired = expire_stale_approvals(app.ledger, app.approvals, app.program, now)
    restarted = request_approvals(app.ledger, app.approvals, [], now)
    # Hourly: the table drops the expired runs' links for the fresh ones, and its
    # waiting times stay current.
    publish_waiting_approvals(app.ledger, app.approvals, now)
    return {"reminded": reminded, "expired": expired, "waiting": sorted(restarted)}
