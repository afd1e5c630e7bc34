"""Sending queued asks and referrer notifications through the email port."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.models import (
    Contact,
    EmailMessage,
    EmailOutcome,
    EmailResult,
    PayoutRailKind,
    ReferrerType,
)
from domain.ports import EmailSender
from domain.program import Program
from domain.referrer_page import needs_payout_setup
from domain.shards import Shard
from integrations.ledger.sql import SqlLedger
from tasks._support import Progress, run_logger
from tasks.asks import REWARD_EARNED, compose_ask, compose_notice, reward_line

STALE_CLAIM = timedelta(minutes=30)
NO_ADDRESS = "no email address"


@dataclass(frozen=True)
class Delivery:
    accepted: int = 0
    failed: int = 0
    retry_later: int = 0
    no_address: int = 0
    suppressed: int = 0
    unknown_after_crash: int = 0


def _deliver(
    kind: str,
    pages: Callable[[str], Sequence[EmailMessage]],
    ledger: SqlLedger,
    sender: EmailSender,
    now: datetime,
    refuse: Callable[[Sequence[EmailMessage]], dict[str, str]] = lambda _page: {},
) -> Delivery:
    # Claims older than this belong to a sender that died; a live one settles in seconds.
    unknown = ledger.emails.expire_sending(kind, now - STALE_CLAIM)
    progress = Progress(
        f"{kind}-emails-progress", ledger.emails.queued_emails(kind), f"{kind} emails"
    )
    counts = {o: 0 for o in EmailOutcome}
    no_address = suppressed = 0
    after = ""
    # What the provider said about the last page, not yet recorded: it is recorded in
    # the transaction that claims the next page (one commit per page instead of two),
    # and at the latest when the pages end or anything fails. Until then those messages
    # stay ``sending``: a crash leaves them ``unknown``, never sent twice, as a crash
    # between the call and its record always did.
    unrecorded: list[EmailResult] = []
    try:
        while page := pages(after):
            after = page[-1].message_id
            refused = refuse(page)
            suppressed_here = len(refused)
            refused.update({m.message_id: NO_ADDRESS for m in page if not m.to_email})
            sendable = [m for m in page if m.message_id not in refused]
            with ledger.transaction() as tx:
                if unrecorded:
                    tx.emails.record_email_results(kind, unrecorded, now)
                claimed = set(tx.emails.mark_sending(kind, [m.message_id for m in page], now))
            unrecorded = []
            results = list(sender.send([m for m in sendable if m.message_id in claimed]))
            results += [
                EmailResult(message_id, EmailOutcome.FAILED, error=reason)
                for message_id, reason in refused.items()
                if message_id in claimed
            ]
            unrecorded = results
            for r in results:
                counts[r.outcome] += 1
            suppressed += suppressed_here
            no_address += len(refused) - suppressed_here
            progress.advance(len(page))
    finally:
        if unrecorded:
            ledger.emails.record_email_results(kind, unrecorded, now)
    progress.finish()
    delivery = Delivery(
        accepted=counts[EmailOutcome.ACCEPTED],
        failed=counts[EmailOutcome.FAILED] - no_address - suppressed,
        retry_later=counts[EmailOutcome.RETRYABLE],
        no_address=no_address,
        suppressed=suppressed,
        unknown_after_crash=unknown,
    )
    run_logger().info("%s emails via %s: %s", kind, sender.name, delivery)
    return delivery


@task(name="send-ask-emails", cache_policy=NO_CACHE)
def send_ask_emails(
    ledger: SqlLedger,
    sender: EmailSender,
    program: Program,
    now: datetime,
    batch_size: int = 1000,
    page_link: Callable[[str], str] | None = None,
    shard: Shard | None = None,
) -> Delivery:
    """Send every queued ask, a batch per request, and record what the provider said.

    Asks are claimed (``sending``) before the call, and what the provider said is
    recorded with the next batch's claim (one commit per batch), or at the end. An ask
    for a contact suppressed since it was queued is not sent. An ask accepted by the
    provider is never sent again; one left ``sending`` by a crash becomes ``unknown``
    and is listed for a person rather than risk a second email.

    Args:
        ledger: where queued asks are read and their outcome recorded.
        sender: the email backend (SendGrid, or the local outbox).
        program: for the personalization (reward, links).
        now: when sends are recorded.
        batch_size: asks per provider request (SendGrid takes up to 1,000).
        page_link: the magic link to a referrer's page, by their id; each ask carries
            one (the email body only: never metadata, logs or the ledger).
        shard: only the asks of this shard's contacts (issue 17); None, every ask.

    Returns:
        Counts of accepted, failed, retry-later and unknown asks.
    """

    contact_of: dict[str, str] = {}
    # The reward sentence depends on the referrer type alone: worded once per type.
    rewards: dict[ReferrerType, str] = {}

    def reward(kind: ReferrerType) -> str:
        if kind not in rewards:
            rewards[kind] = reward_line(program, kind)
        return rewards[kind]

    def page(after: str) -> list[EmailMessage]:
        # Unsharded, the two-argument call of before (stores timed or faked elsewhere).
        rows = (
            ledger.asks.asks_to_send(after, batch_size)
            if shard is None
            else ledger.asks.asks_to_send(after, batch_size, shard)
        )
        contact_of.update({ask.ask_id: contact.contact_id for ask, contact, _ in rows})
        return [
            compose_ask(ask, contact, detail, program, page_link, reward(contact.referrer_type))
            for ask, contact, detail in rows
        ]

    def unsubscribed_since_queued(messages: Sequence[EmailMessage]) -> dict[str, str]:
        # Suppressed after the ask was queued (a webhook said unsubscribe or bounce).
        gone = ledger.emails.suppressed(contact_of[m.message_id] for m in messages)
        return {
            m.message_id: "contact suppressed (unsubscribed or bounced)"
            for m in messages
            if contact_of[m.message_id] in gone and m.to_email
        }

    return _deliver("ask", page, ledger, sender, now, refuse=unsubscribed_since_queued)


@task(name="send-notifications", cache_policy=NO_CACHE)
def send_notifications(
    ledger: SqlLedger,
    sender: EmailSender,
    program: Program,
    now: datetime,
    batch_size: int = 1000,
    page_link: Callable[[str], str] | None = None,
    payout_rails: Collection[PayoutRailKind] | None = None,
    shard: Shard | None = None,
) -> Delivery:
    """Send the referrer notifications queued by earlier stages (earned, paid, rejected).

    Args:
        ledger: where queued notifications are read and their outcome recorded.
        sender: the email backend.
        program: the program's name for the message.
        now: when sends are recorded.
        batch_size: notifications per request.
        page_link: the magic link to a referrer's page, by their id; each notice
            carries one, and a ``page_link`` notice is nothing else.
        payout_rails: the rails rewards are paid by, when Stripe Connect onboarding
            exists: an "earned" notice to a referrer no rail fits (their reward
            choice counted) carries their page's ``/connect``, with ``page_link``.
        shard: only the notifications to this shard's contacts (issue 17); None, all.

    Returns:
        Counts of accepted, failed, retry-later and unknown notifications.
    """

    def page(after: str) -> list[EmailMessage]:
        rows = (
            ledger.emails.notifications_to_send(after, batch_size)
            if shard is None
            else ledger.emails.notifications_to_send(after, batch_size, shard)
        )
        # Every notice carries the referrer's tracked link, not a bare code.
        codes = ledger.asks.codes_for(contact.contact_id for _, _, contact, _ in rows)
        unpaid = _without_rail(ledger, rows, payout_rails) if page_link is not None else set()
        return [
            compose_notice(
                nid,
                kind,
                contact,
                data,
                program,
                codes.get(contact.contact_id),
                page_link,
                offer_payout_setup=contact.contact_id in unpaid,
            )
            for nid, kind, contact, data in rows
        ]

    return _deliver("notification", page, ledger, sender, now)


def _without_rail(
    ledger: SqlLedger,
    rows: Sequence[tuple[str, str, Contact, dict[str, str]]],
    rails: Collection[PayoutRailKind] | None,
) -> set[str]:
    """The referrers of these notices' "earned" ones that no rail fits (to onboard)."""
    earned = {contact.contact_id: contact for _, kind, contact, _ in rows if kind == REWARD_EARNED}
    if rails is None or not earned:
        return set()
    choices = ledger.referrer_side.reward_choices(earned)
    return {
        contact_id
        for contact_id, contact in earned.items()
        if needs_payout_setup(contact, rails, choices.get(contact_id))
    }
