"""The approval listener: an approved reward is paid as soon as its run is resumed.

A resumed approval run waits for a worker to pick it up, run the deployment's pull step
and start a process that imports the flow again: seconds between an approver's click and
the payout. This long-lived process (``referrals approvals listen``, started and stopped
by ``referrals up``/``down`` with the worker) follows the runs' resumes as Prefect events
instead, and applies each answer at once, through the same use case as the run
(:func:`tasks.use_cases.approvals.decide`: approver id and one-time code, the other-
approver rule, the stages) and the same exactly-once payout
(:func:`tasks.payouts.submit_payouts`: the idempotency key stored before Stripe is called).

The answer is judged once: the listener claims it on the run first
(:class:`integrations.approvals.answers.PrefectAnswers`), or leaves it to the run that
claimed it. The run, resumed as before, reads the listener's outcome, then asks the next
question, or ends Completed ("paid") or Rejected as before; it also rewrites the
waiting-approvals table (an artifact belongs to a run). A refused answer is kept as
a refusal (as the run keeps it), so the run asks again saying why. Its decision lines
go to the run's own log in the UI. Without the listener (not started, down, or failing
on one answer) the run applies the answer itself, as it always did.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from domain.models import RewardStatus
from flows import bootstrap
from flows.approval import FORM_FIELDS, PayoutDecision
from integrations.approvals.answers import LISTENER, PrefectAnswers, ResumedAnswer, run_log
from tasks.payouts import submit_payouts
from tasks.use_cases.approvals import Question, decide

log = logging.getLogger("referrals.approval_listener")


def apply_resumed_answer(
    app: bootstrap.App,
    answers: PrefectAnswers,
    resumed: ResumedAnswer,
    run_logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> dict[str, Any] | None:
    """Judge the answer a resume brought, pay an approval, and keep the outcome on the run.

    Args:
        app: the adapters (ledger, approvers, codes, program, rails).
        answers: the claims and outcomes on the runs.
        resumed: the run, its reward, the question answered, the form, when submitted.
        run_logger: where the decision lines go (default: the run's log in the UI).

    Returns:
        The outcome recorded on the run, or None when the answer was not this
        listener's to apply (claimed already: by the run, or by an earlier delivery
        of the same event) or the form does not read as a decision.
    """
    try:
        form = PayoutDecision.model_validate(resumed.form).model_dump(include=FORM_FIELDS)
    except ValidationError:
        return None  # the server validated it; whatever this is, the run judges it
    if not answers.claim(resumed.run_id, resumed.question, LISTENER).made_now:
        return None
    rlog = run_logger or run_log(resumed.run_id, resumed.run_name)
    now = datetime.now(UTC)
    outcome: dict[str, Any] = {"applied": False, "by": LISTENER}
    try:
        decided = decide(
            app.ledger,
            app.approvers,
            app.codes,
            app.program,
            resumed.reward_id,
            form,
            Question(resumed.run_id, resumed.question, min(resumed.submitted_at, now)),
            now,
            rlog,
        )
        outcome.update(applied=True, error=decided.error, status=decided.status.value)
        if decided.status is RewardStatus.APPROVED:
            report = submit_payouts.fn(
                app.ledger, app.rails, [resumed.reward_id], datetime.now(UTC)
            )
            status = app.ledger.approvals.view(resumed.reward_id).reward.status
            outcome["status"] = status.value
            rlog.info(
                "reward %s: paid by the approval listener (%d paid, %d to retry)",
                resumed.reward_id,
                report.paid,
                report.retry_later,
            )
    except Exception:
        # Applied or not, the outcome says so: the run (or its next try) takes over
        # from the ledger as it stands.
        log.exception("run %s: the answer to %s failed", resumed.run_id, resumed.question)
    finally:
        answers.record_outcome(resumed.run_id, resumed.question, outcome)
    return outcome


class ApprovalDeployment:
    """Whether a run belongs to the approval deployment, known by its name.

    The id is read once and read again when a resumed run names another one: a
    deployment deleted and registered again (``prefect deploy``, ``referrals up`` on a
    fresh server database) gets a new id, and the listener must follow it without a
    restart. Runs of other deployments cost one read each; resumes are rare.
    """

    def __init__(self, answers: PrefectAnswers, name: str) -> None:
        self._answers = answers
        self.name = name
        self.known_id: str | None = None

    def resolve(self) -> str | None:
        """The deployment's id now (None while it is not registered)."""
        try:
            self.known_id = self._answers.deployment_id(self.name)
        except Exception:
            # Not registered (yet): no run is the approval deployment's until it is.
            log.warning("deployment %s not found; will look again at the next resume", self.name)
            self.known_id = None
        return self.known_id

    def __call__(self, deployment_id: str | None) -> bool:
        if deployment_id is None:
            return False
        if deployment_id == self.known_id:
            return True
        return deployment_id == self.resolve()


def handle_resumed_run(
    app: bootstrap.App, answers: PrefectAnswers, deployment: ApprovalDeployment, run_id: str
) -> dict[str, Any] | None:
    """Apply the answer that resumed ``run_id`` if it is an approval run's."""
    resumed = answers.resumed_answer(run_id, deployment)
    if resumed is None:
        return None
    outcome = apply_resumed_answer(app, answers, resumed)
    if outcome is not None:
        log.info(
            "run %s: %s answered: %s",
            run_id,
            resumed.question,
            outcome.get("error") or outcome.get("status"),
        )
    return outcome


async def listen(
    app: bootstrap.App, answers: PrefectAnswers, deployment: ApprovalDeployment
) -> None:
    """Apply every approval run's resume as it comes, one at a time, until stopped."""
    from integrations.approvals.answers import resumed_runs

    log.info("following the resumes of deployment %s (%s)", deployment.name, deployment.resolve())
    async for run_id in resumed_runs():
        try:
            await asyncio.to_thread(handle_resumed_run, app, answers, deployment, run_id)
        except Exception:
            # One answer that cannot be read never stops the listener: its run applies it.
            log.exception("run %s: not applied here; the run applies it", run_id)


def main() -> None:
    """Run the listener until it is stopped (SIGTERM from ``referrals down``)."""
    # Its own lines to stderr (the stack's log file): Prefect's logging setup leaves
    # the root logger at WARNING.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    app = bootstrap.app()
    answers = PrefectAnswers()
    asyncio.run(listen(app, answers, ApprovalDeployment(answers, app.settings.approval_deployment)))


if __name__ == "__main__":
    main()
