"""The payout approval: one run per large or flagged reward, paused until a person decides.

The run suspends (its process exits, nothing is held while it waits) with a typed form:
the Prefect UI renders :class:`PayoutDecision` as the Resume form, and the CLI resumes
it through the API. After each resume the run starts again from the top; decisions
already recorded in the ledger are not asked again, so the run picks up at the stage
that is still open. Rewards at or above the second threshold need two approvers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow
from prefect.context import get_run_context
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from pydantic import Field

from domain.models import RewardStatus
from flows import bootstrap
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

MAX_REFUSED_DECISIONS = 20


class PayoutDecision(RunInput):
    """The approver's decision. Every field without a default is required in the form."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: the reward is paid. reject: it is closed and not paid."
    )
    approver: str = Field(
        min_length=1, max_length=200, description="Your name, as it goes into the ledger."
    )
    reason: str = Field(
        min_length=1, max_length=2000, description="Why you decided so (shown to auditors)."
    )
    # A plain text box in the UI: `str | None` would render as a type toggle the
    # approver must flip first. Empty means "pay the reward as it is".
    adjusted_amount: str = Field(
        default="",
        pattern=r"^(\d+(\.\d{1,2})?)?$",
        description="To pay less than the reward, e.g. 450.00 (never more). "
        "Leave empty to pay the reward.",
    )


def wait_for_decision(form: type[PayoutDecision], key: str, timeout: int) -> PayoutDecision:
    """Suspend this run until someone resumes it with the form filled in.

    Tests replace this function to script decisions without a Prefect server.
    """
    return suspend_flow_run(wait_for_input=form, key=key, timeout=timeout)


def _run_id() -> str | None:
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


@flow(name="payout-approval", persist_result=True)
def payout_approval(reward_id: str) -> str:
    """Wait for a person to approve or reject one reward, then pay or close it.

    Args:
        reward_id: the reward awaiting approval.

    Returns:
        The reward's status at the end: paid, approved (payout pending), or rejected.
    """
    app = bootstrap.app()
    timeout = app.program.approvals.expire_after_hours * 3600
    refused = 0
    error: str | None = None
    view = load_approval(app.ledger, reward_id)
    while view.reward.status is RewardStatus.AWAITING_APPROVAL:
        stage = len(view.decisions) + 1
        form = PayoutDecision.with_initial_data(
            description=describe_for_approver(view, app.program, error)
        )
        # The key names the question asked; a run replayed after a resume meets the
        # same keys in the same order and gets back the answers already given.
        decision = wait_for_decision(form, key=f"stage-{stage}-try-{refused}", timeout=timeout)
        outcome = apply_decision(
            app.ledger,
            app.program,
            reward_id,
            decision.model_dump(include={"decision", "approver", "reason", "adjusted_amount"}),
            _run_id(),
            datetime.now(UTC),
        )
        error = outcome.error
        refused = refused + 1 if error else 0
        if refused > MAX_REFUSED_DECISIONS:
            raise RuntimeError(f"reward {reward_id}: too many refused decisions; last: {error}")
        view = load_approval(app.ledger, reward_id)
    if view.reward.status is RewardStatus.APPROVED:
        submit_payouts(app.ledger, app.rails, [reward_id], datetime.now(UTC))
    send_notifications(app.ledger, app.email, app.program, datetime.now(UTC))
    return load_approval(app.ledger, reward_id).reward.status.value


@flow(name="approval-sla")
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
    return {"reminded": reminded, "expired": expired, "waiting": sorted(restarted)}
