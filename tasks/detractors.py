"""Handing each new detractor follow-up on to a person, exactly once.

A detractor (NPS 0-6) is never asked to refer; detection lists it in ``follow_ups``.
This task tells someone: an email to the detractor owner
(``REFERRALS_DETRACTOR_OWNER_EMAIL``) and, with HubSpot configured, a task on the
contact. Each hand-off is written to the ledger before anything is sent and each of
its channels is claimed before its call (see :mod:`integrations.ledger.handoffs`), so
a re-run sends nothing twice; one that failed for a reason worth retrying is retried
next run, and one failure never stops the others or the cycle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.detractors import (
    Channel,
    CrmTaskResult,
    CrmTasks,
    DetractorFollowUp,
    HandoffResult,
    owner_message_data,
)
from domain.detractors import TaskOutcome as T
from domain.models import EmailMessage, EmailOutcome, EmailResult, derived_id
from domain.ports import EmailSender
from domain.program import Program
from integrations.email.render import render
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger

TEMPLATE = "detractor_follow_up"
OWNER_SETTING = "REFERRALS_DETRACTOR_OWNER_EMAIL"
# Claims older than this belong to a run that died; a live one settles in seconds.
STALE_CLAIM = timedelta(minutes=30)

_EMAIL_STATUS = {
    EmailOutcome.ACCEPTED: "accepted",
    EmailOutcome.FAILED: "failed",
    EmailOutcome.RETRYABLE: "queued",
}
_CRM_STATUS = {
    T.CREATED: "created",
    T.FAILED: "failed",
    T.RETRYABLE: "queued",
    T.UNKNOWN: "unknown",
}


@dataclass(frozen=True)
class Handoffs:
    """What one run did with detractor follow-ups.

    Attributes:
        handed_on: owner emails accepted by the email backend in this run.
        not_handed_on: follow-ups waiting for an owner address (none configured).
        email_failed: owner emails refused for good (listed for a person).
        email_retry_later: owner emails to try again next run.
        email_unknown: owner emails whose send may or may not have happened (a run
            died mid-send, or the backend raised); never re-sent.
        crm_tasks: CRM tasks created in this run.
        crm_failed: CRM tasks refused for good (e.g. the contact is not in the CRM).
        crm_retry_later: CRM tasks to try again next run.
        crm_unknown: CRM tasks that may exist; never re-sent.
    """

    handed_on: int = 0
    not_handed_on: int = 0
    email_failed: int = 0
    email_retry_later: int = 0
    email_unknown: int = 0
    crm_tasks: int = 0
    crm_failed: int = 0
    crm_retry_later: int = 0
    crm_unknown: int = 0


def compose_owner_email(
    follow_up: DetractorFollowUp, owner_email: str, program: Program
) -> EmailMessage:
    """The owner's email about one detractor: who, account, score, when; no address."""
    data = owner_message_data(follow_up, program.name)
    subject, text = render(TEMPLATE, data)
    return EmailMessage(
        # Stable per follow-up: a provider event or an outbox row maps back to it.
        message_id=derived_id("detractor-handoff", follow_up.source_event),
        kind=TEMPLATE,
        to_email=owner_email,
        to_name="Detractor follow-up owner",
        subject=subject,
        template=TEMPLATE,
        data={**data, "subject": subject, "text": text},
    )


@task(name="hand-on-detractors", cache_policy=NO_CACHE)
def hand_on_detractors(
    ledger: SqlLedger,
    sender: EmailSender,
    crm: CrmTasks | None,
    owner_email: str | None,
    program: Program,
    now: datetime,
    batch_size: int = 1000,
) -> Handoffs:
    """Hand every new detractor follow-up on: the owner's email, and a CRM task.

    Without an owner address nothing is handed on (neither channel): the follow-ups
    are counted as not handed on, with a one-line warning naming the setting, and go
    out once it is set.

    Args:
        ledger: where follow-ups are read and hand-offs recorded.
        sender: the email backend (SendGrid, or the local outbox).
        crm: the CRM tasks backend; None without a CRM.
        owner_email: who is told; None when not configured.
        program: the program's name for the message.
        now: when hand-offs are recorded.
        batch_size: follow-ups per email request and per CRM batch.

    Returns:
        Counts of what was handed on, failed, left for later or unknown.
    """
    log = run_logger()
    if owner_email is None:
        waiting = ledger.handoffs.detractors_not_handed_on()
        if waiting:
            log.warning(
                "%d detractor follow-ups not handed on: %s is not set", waiting, OWNER_SETTING
            )
        return Handoffs(not_handed_on=waiting)
    opened = ledger.handoffs.open_handoffs(now, with_crm=crm is not None)

    def send_email(page: Sequence[DetractorFollowUp]) -> list[HandoffResult]:
        messages = [compose_owner_email(f, owner_email, program) for f in page]
        key_of = {m.message_id: f.source_event for m, f in zip(messages, page, strict=True)}
        results: Sequence[EmailResult] = sender.send(messages)
        return [
            HandoffResult(key_of[r.message_id], _EMAIL_STATUS[r.outcome], r.provider_ref, r.error)
            for r in results
            if r.message_id in key_of
        ]

    def create_tasks(page: Sequence[DetractorFollowUp]) -> list[HandoffResult]:
        results: Sequence[CrmTaskResult] = crm.create(page) if crm is not None else []
        return [
            HandoffResult(r.source_event, _CRM_STATUS[r.outcome], r.task_id, r.error)
            for r in results
        ]

    email = _channel(ledger, "email", send_email, sender.name, now, batch_size)
    crm_counts: Counter[str] = Counter()
    if crm is not None:
        crm_counts = _channel(ledger, "crm", create_tasks, crm.name, now, batch_size)
    handoffs = Handoffs(
        handed_on=email["accepted"],
        email_failed=email["failed"],
        email_retry_later=email["queued"],
        email_unknown=email["unknown"],
        crm_tasks=crm_counts["created"],
        crm_failed=crm_counts["failed"],
        crm_retry_later=crm_counts["queued"],
        crm_unknown=crm_counts["unknown"],
    )
    log.info("%d new detractor follow-ups; hand-offs: %s", opened, handoffs)
    return handoffs


def _channel(
    ledger: SqlLedger,
    channel: Channel,
    call: Callable[[Sequence[DetractorFollowUp]], list[HandoffResult]],
    backend: str,
    now: datetime,
    batch_size: int,
) -> Counter[str]:
    """Send every queued hand-off of ``channel``, a page per call; counts per status."""
    counts: Counter[str] = Counter()
    counts["unknown"] += ledger.handoffs.expire_handoff_claims(channel, now - STALE_CLAIM)
    after = ""
    while page := ledger.handoffs.handoffs_to_send(channel, after, batch_size):
        after = page[-1].source_event
        claimed = set(ledger.handoffs.claim_handoffs(channel, [f.source_event for f in page], now))
        mine = [f for f in page if f.source_event in claimed]
        if not mine:
            continue
        try:
            results = call(mine)
        except Exception as exc:
            # The backend may have sent some before it raised: unknown, never re-sent.
            # The type only; the message may carry an address or a URL.
            run_logger().warning(
                "detractor %s hand-offs via %s stopped: %s", channel, backend, type(exc).__name__
            )
            results = [
                HandoffResult(f.source_event, "unknown", error=type(exc).__name__) for f in mine
            ]
            ledger.handoffs.record_handoff_results(channel, results, now)
            counts.update(r.status for r in results)
            break
        answered = {r.source_event for r in results}
        # A backend that forgot one: it may or may not have gone out.
        results += [
            HandoffResult(f.source_event, "unknown", error="no answer from the backend")
            for f in mine
            if f.source_event not in answered
        ]
        ledger.handoffs.record_handoff_results(channel, results, now)
        counts.update(r.status for r in results)
    return counts
