"""Choosing whom to ask, and composing the asks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.codes import new_referral_code
from domain.eligibility import decide, histories_needed, nps_answers_since
from domain.links import tracked_link
from domain.models import Ask, Contact, EmailMessage, ReferrerType, SkipReason
from domain.program import Program
from domain.reward_wording import headline
from integrations.email.render import render
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger
from tasks.use_cases.asks import record_ask_decisions


@dataclass(frozen=True)
class AskDecisions:
    queued: int
    skipped: dict[str, int] = field(default_factory=dict)


#: Skipped moments closed together: one large ``UPDATE`` rewrites each page of the
#: moments table at most once, where closing them batch by batch rewrote about a page
#: per moment (a batch's moments lie all over the table). Only their ids are held
#: (some 70 MB for a million); more than this many are closed on the way.
CLOSE_SKIPPED_EVERY = 1_000_000


@task(name="decide-asks", cache_policy=NO_CACHE)
def decide_asks(
    ledger: SqlLedger,
    program: Program,
    as_of: datetime,
    now: datetime,
    batch_size: int = 1000,
    close_skipped_every: int = CLOSE_SKIPPED_EVERY,
) -> AskDecisions:
    """Decide every pending moment: queue an ask, or skip it with a reason.

    Each batch mints missing referral codes, queues asks and closes their moments in
    one transaction. A contact is asked at most once per run, even across batches.
    Skipped moments are closed later, ``close_skipped_every`` at a time and at the
    end: the batches page on past them, so they are the same batches, with the same
    decisions, as when each batch closed all of its moments. Should the run stop
    before, those moments are still pending and the next run decides them.

    Args:
        ledger: where moments, contacts and their history are read and asks queued.
        program: eligibility rules (cooldown, tenure, detractor window, moment priority).
        as_of: the moment of decision; moments after it wait for a later run.
        now: when decisions are recorded.
        batch_size: moments per batch.
        close_skipped_every: skipped moments closed together.

    Returns:
        How many asks were queued, and skipped moments counted per reason.
    """
    queued = 0
    skipped: Counter[str] = Counter()
    asked: set[str] = set()
    to_close: dict[SkipReason, list[str]] = {}
    holding = 0
    after: tuple[datetime, str] | None = None
    while moments := ledger.asks.pending_moments(as_of, batch_size, after):
        after = (moments[-1].occurred_at, moments[-1].moment_id)
        contact_ids = {m.contact_id for m in moments}
        contacts = ledger.asks.contacts(contact_ids)
        # Only the contacts whose history a decision reads (most moments are decided
        # on the moment and contact alone: too old, opted out).
        history = ledger.asks.histories(
            histories_needed(moments, contacts, program, as_of),
            as_of,
            program.eligibility.blocking_ticket_priorities,
            nps_since=nps_answers_since(program, as_of),
        )
        decisions = decide(moments, contacts, history, program, as_of, asked_this_run=asked)
        asking = [d for d in decisions if d.ask]
        to_ask = {d.moment.contact_id for d in asking}
        have = ledger.asks.codes_for(to_ask)
        new_codes = {c: new_referral_code() for c in sorted(to_ask - have.keys())}
        queued += len(record_ask_decisions(ledger, asking, new_codes, as_of, now))
        asked |= to_ask
        for d in decisions:
            if d.reason is not None:
                to_close.setdefault(d.reason, []).append(d.moment.moment_id)
                holding += 1
        if holding >= close_skipped_every:
            ledger.asks.skip_moments(to_close, now)
            to_close, holding = {}, 0
        skipped.update(d.reason.value for d in decisions if d.reason is not None)
    ledger.asks.skip_moments(to_close, now)
    run_logger().info("queued %d asks; skipped %s", queued, dict(skipped) or "none")
    return AskDecisions(queued, dict(sorted(skipped.items())))


def reward_line(program: Program, referrer_type: ReferrerType) -> str:
    """The concrete reward, in a sentence true to the rule's kind, for the ask email
    (:func:`domain.reward_wording.headline`)."""
    return headline(program, referrer_type) or (
        "Every introduction helps us, and we are grateful for it."
    )


def compose_ask(
    ask: Ask,
    contact: Contact,
    detail: str,
    program: Program,
    page_link: Callable[[str], str] | None = None,
    reward: str | None = None,
) -> EmailMessage:
    """The personalized ask: name, moment, concrete reward, one-click link (the tracked
    link ``<referral_link_base>/<code>`` served by ``referrals web serve``, which
    counts its clicks; the code itself is shown too, for those who type it), and with
    ``page_link`` the magic link to the referrer's own page (in the body only).
    ``reward`` is ``reward_line(program, contact.referrer_type)`` when the caller has
    it already (a send of many asks words each referrer type's reward once)."""
    data = {
        "first_name": contact.first_name,
        "moment": ask.moment_type.value,
        "moment_detail": detail,
        "code": ask.referral_code,
        "link": tracked_link(program.referral_link_base, ask.referral_code),
        "reward_line": reward
        if reward is not None
        else reward_line(program, contact.referrer_type),
        "program_name": program.name,
        "unsubscribe_link": f"{program.unsubscribe_url}?m={ask.ask_id}",
    }
    if page_link is not None:
        data["page_link"] = page_link(contact.contact_id)
    template = f"ask_{ask.moment_type.value}"
    subject, text = render(template, data)
    return EmailMessage(
        message_id=ask.ask_id,
        kind="ask",
        to_email=contact.email or "",
        to_name=contact.name,
        subject=subject,
        template=template,
        data={**data, "subject": subject, "text": text},
    )


#: The notice that offers Stripe onboarding to a referrer with no payable rail.
REWARD_EARNED = "reward_earned"


def compose_notice(
    notification_id: str,
    kind: str,
    contact: Contact,
    data: dict[str, str],
    program: Program,
    code: str | None = None,
    page_link: Callable[[str], str] | None = None,
    offer_payout_setup: bool = False,
) -> EmailMessage:
    """A message to a referrer about their referral or reward; with the referrer's
    ``code``, it carries their tracked link (and the code) to share again, and with
    ``page_link`` the magic link to their own page (in the body only). With
    ``offer_payout_setup`` (Stripe pays, no rail fits the referrer) a reward earned
    carries ``payout_setup_url``: their page's ``/connect``, Stripe onboarding."""
    values = {**data, "first_name": contact.first_name, "program_name": program.name}
    if page_link is not None:
        values["page_link"] = page_link(contact.contact_id)
    if code is not None:
        values["link"] = tracked_link(program.referral_link_base, code)
        values.setdefault("code", code)
    if offer_payout_setup and kind == REWARD_EARNED and "page_link" in values:
        values["payout_setup_url"] = f"{values['page_link']}/connect"
    template = f"notice_{kind}"
    subject, text = render(template, values)
    return EmailMessage(
        message_id=notification_id,
        kind=kind,
        to_email=contact.email or "",
        to_name=contact.name,
        subject=subject,
        template=template,
        data={**values, "subject": subject, "text": text},
    )
