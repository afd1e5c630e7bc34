"""Turning events that carry referral codes into attributed conversions.

Two sources: CRM events with a referral code (``source_events``), and Stripe payments
and trials (the ``stripe_events`` inbox, filled by the webhook and by polling). Both
go through the same ledger rule, one conversion per referee and milestone, so a deal
the CRM and Stripe both report earns one reward. Each new lead or qualified conversion
queues one notice to its referrer ("referral received", "now a qualified lead", with
the reward to come); the customer milestone's notice is the reward's own ("earned").
Stripe's Invoice Payments then link each conversion to the payment ids a refund names.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.attribution import conversion_from_event
from domain.codes import normalize_code
from domain.errors import InputRejected
from domain.models import Contact, Conversion, Milestone, ReferrerType, Rejected, derived_id
from domain.program import Program
from domain.reward_wording import rewards_to_come
from domain.stores.conversions import ConversionStore
from domain.stores.provider_events import ProviderEventStore
from domain.stores.stripe import PaymentLink, StripeStore
from domain.stripe_conversions import (
    CONVERSION_EVENT_TYPES,
    DEFAULT_CEILING_MAJOR,
    SOURCE,
    StripeConversion,
)
from integrations.payments.stripe_payloads import (
    codes_in,
    customer_of,
    invoice_payment_refs,
    stripe_conversion_from_event,
)
from tasks._support import run_logger
from tasks.use_cases import conversions as use_cases
from tasks.use_cases.conversions import ConversionsLedger

# The notice each milestone's new conversion sends its referrer (the customer
# milestone is announced by the reward it earns: ``reward_earned``).
NOTICE_KINDS: dict[Milestone, str] = {
    Milestone.LEAD: "referral_received",
    Milestone.QUALIFIED: "referral_qualified",
}
# How long a payment link (``invoice_payment.paid``) waits for the conversion of its
# invoice before it is taken for the payment of a customer nobody referred.
DEFAULT_LINK_GRACE = timedelta(hours=24)


class ConversionLedger(ConversionsLedger, Protocol):
    """What the conversion stages need of the ledger: units of work for the use cases,
    and the stores they read from."""

    @property
    def conversions(self) -> ConversionStore: ...

    @property
    def stripe(self) -> StripeStore: ...

    @property
    def provider_events(self) -> ProviderEventStore: ...


@task(name="record-conversions", cache_policy=NO_CACHE)
def record_new_conversions(
    ledger: ConversionLedger, program: Program, now: datetime, batch_size: int = 1000
) -> dict[str, int]:
    """Attribute every new event carrying a referral code to the code's owner.

    Unknown or malformed codes and amounts in another currency are quarantined with
    the event and field; the same event delivered again never converts twice. A
    referee already converted at the milestone (by Stripe, or by an earlier CRM
    event) is not converted again; under another code it is quarantined. New lead and
    qualified conversions queue their referrer's notice.

    Args:
        ledger: where coded events are read and conversions stored.
        program: for the program currency and the reward quoted in notices.
        now: when conversions are recorded.
        batch_size: events per batch.

    Returns:
        Counts of events examined, conversions recorded, duplicates, events
        quarantined and notices queued.
    """
    examined = recorded = duplicates = quarantined = queued = 0
    after = 0
    while batch := ledger.conversions.events_to_convert(after, batch_size):
        after = batch[-1][0]
        codes = {normalize_code(e.referral_code or "") for _, e in batch}
        owners = ledger.conversions.code_owners(c for c in codes if c)
        conversions: list[Conversion] = []
        rejected: list[Rejected] = []
        for _, event in batch:
            try:
                conversion = conversion_from_event(event, owners, program.currency)
            except InputRejected as exc:
                rejected.append(Rejected(event.source, exc.record, exc.field, exc.reason))
                continue
            if conversion is not None:
                conversions.append(conversion)
        notices = conversion_notices(conversions, owners.values(), program)
        event_ids = [i for i, _ in batch]
        result = use_cases.record_crm_conversions(
            ledger, event_ids, conversions, rejected, notices, now
        )
        recorded += len(result.new)
        duplicates += result.duplicates
        quarantined += result.quarantined
        queued += result.notices
        examined += len(batch)
    run_logger().info(
        "examined %d coded events: %d conversions, %d duplicates, %d quarantined, %d notices",
        examined,
        recorded,
        duplicates,
        quarantined,
        queued,
    )
    return {
        "examined": examined,
        "conversions": recorded,
        "duplicates": duplicates,
        "quarantined": quarantined,
        "notices": queued,
    }


@task(name="record-stripe-conversions", cache_policy=NO_CACHE)
def record_stripe_conversions(
    ledger: ConversionLedger,
    program: Program,
    now: datetime,
    batch_size: int = 500,
    max_amount: str = DEFAULT_CEILING_MAJOR,
) -> dict[str, int]:
    """Turn the Stripe inbox's payments and trials into attributed conversions.

    Reads the unprocessed ``checkout.session.completed``,
    ``checkout.session.async_payment_succeeded``, ``invoice.paid`` and
    ``customer.subscription.created`` events, oldest ``created`` first, whatever order
    they arrived in; other types (refunds, disputes) are left for their own stage.
    Every event examined is marked processed with what it produced, in one
    transaction per batch: a conversion with its Stripe payment ids, a quarantine row
    naming the event and field (malformed or unknown code, other currency, negative
    or absurd amount, a customer that cannot be attributed), or nothing (a payment
    with no referral behind it). The same payment delivered again, by webhook or by
    polling, joins the conversion it already made and never makes a second reward.

    Args:
        ledger: the Stripe inbox and the conversions.
        program: the program currency, and the reward quoted in notices.
        now: when conversions are recorded.
        batch_size: events per batch.
        max_amount: the largest plausible payment, in major units of the program
            currency; above it a payment is refused as absurd.

    Returns:
        Counts of events examined, conversions recorded, payments joined to an
        existing conversion, duplicates, payments with no referral, events
        quarantined and notices queued.
    """
    ceiling = program.money(max_amount)
    totals = dict.fromkeys(
        ("examined", "conversions", "joined", "duplicates", "not_referred", "quarantined"), 0
    )
    totals["notices"] = 0
    while batch := ledger.provider_events.unprocessed_stripe_events(
        CONVERSION_EVENT_TYPES, batch_size
    ):
        customers = {c for e in batch if (c := customer_of(e.payload))}
        earlier = ledger.stripe.stripe_customer_codes(customers)
        referees = ledger.stripe.stripe_referees(customers)
        owners = ledger.conversions.code_owners(
            set().union(
                *(codes_in(e.payload) for e in batch),
                *(codes for by in earlier.values() for codes in by.values()),
            )
        )
        conversions: list[StripeConversion] = []
        rejected: list[Rejected] = []
        for stored in batch:
            customer = customer_of(stored.payload)
            try:
                found = stripe_conversion_from_event(
                    stored.payload,
                    owners,
                    program.currency,
                    ceiling=ceiling,
                    earlier_codes=_latest_codes(earlier.get(customer, {})) if customer else (),
                    referee=referees.get(customer) if customer else None,
                )
            except InputRejected as exc:
                rejected.append(Rejected(SOURCE, exc.record, exc.field, exc.reason))
                continue
            if found is None:
                totals["not_referred"] += 1
                continue
            conversions.append(found)
            if customer:
                # A later event of this batch (the payment ending a trial) inherits it;
                # the first code of a milestone wins, as in the ledger.
                by_milestone = earlier.setdefault(customer, {})
                by_milestone.setdefault(found.milestone, {found.conversion.referral_code})
        conversions = _with_invoice_refs(ledger, conversions)
        notices = conversion_notices([c.conversion for c in conversions], owners.values(), program)
        result = use_cases.record_stripe_conversions(
            ledger, [e.event_id for e in batch], conversions, rejected, notices, now
        )
        totals["examined"] += len(batch)
        totals["conversions"] += len(result.new)
        totals["joined"] += result.joined
        totals["duplicates"] += result.duplicates
        totals["quarantined"] += result.quarantined
        totals["notices"] += result.notices
    run_logger().info(
        "examined %d Stripe events: %s",
        totals["examined"],
        ", ".join(f"{k}={v}" for k, v in totals.items() if k != "examined"),
    )
    return totals


@task(name="link-stripe-payments", cache_policy=NO_CACHE)
def link_stripe_payments(
    ledger: ConversionLedger,
    now: datetime,
    batch_size: int = 500,
    grace: timedelta = DEFAULT_LINK_GRACE,
) -> dict[str, int]:
    """Give Stripe conversions the payment ids their invoices' payments name.

    From the basil API version on, an invoice names neither its payment intent nor
    its charge, and a refund names only those: each ``invoice_payment.paid`` event
    adds them to the conversion owning its invoice, so the refund finds its reward.
    Run it after :func:`record_stripe_conversions`. A link whose invoice has no
    conversion yet stays in the inbox for the next run, up to ``grace`` after it was
    created; then it is taken for the payment of a customer nobody referred.

    Args:
        ledger: the Stripe inbox and the conversions.
        now: when links are recorded.
        batch_size: events per batch.
        grace: how long a link waits for its invoice's conversion.

    Returns:
        Counts of links applied, closed without a conversion, and still waiting.
    """
    totals = {"linked": 0, "closed": 0, "waiting": 0}
    after: tuple[datetime, str] | None = None
    while batch := ledger.stripe.stripe_events_to_link(after, batch_size):
        after = (batch[-1].created_at, batch[-1].event_id)
        links = [
            PaymentLink(e.event_id, e.created_at, invoice_payment_refs(e.payload)) for e in batch
        ]
        result = ledger.stripe.link_stripe_payments(links, now - grace, now)
        totals["linked"] += result.linked
        totals["closed"] += result.closed
        totals["waiting"] += result.waiting
    run_logger().info("Stripe payment links: %s", ", ".join(f"{k}={v}" for k, v in totals.items()))
    return totals


_PROGRESS = (Milestone.LEAD, Milestone.QUALIFIED, Milestone.CUSTOMER)


def _latest_codes(codes: Mapping[Milestone, set[str]]) -> set[str]:
    """The codes of the most advanced milestone a customer reached (a payment inherits
    the code its referee was last converted under)."""
    for milestone in reversed(_PROGRESS):
        if codes.get(milestone):
            return codes[milestone]
    return set()


def _with_invoice_refs(
    ledger: ConversionLedger, conversions: Sequence[StripeConversion]
) -> list[StripeConversion]:
    """Each conversion also naming the payment ids its invoice's event gives (a
    Checkout Session names its invoice, not the invoice's charge); an invoice read
    before its session (no code of its own) would otherwise leave them out."""
    wanted = {i for c in conversions for i in c.invoice_ids}
    if not wanted:
        return list(conversions)
    refs: dict[str, list[str]] = {}
    for event in ledger.stripe.stripe_invoice_events(wanted):
        named = invoice_payment_refs(event)
        if named:
            refs.setdefault(named[0], []).extend(named[1:])
    return [c.with_refs([r for i in c.invoice_ids for r in refs.get(i, ())]) for c in conversions]


def conversion_notices(
    conversions: Sequence[Conversion], referrers: Collection[Contact], program: Program
) -> dict[str, dict[str, Any]]:
    """The notice each lead or qualified conversion sends its referrer, by conversion id.

    The notice id derives from the conversion and the kind, so the same conversion
    never queues two notices. The data hold the code and the reward to come, never
    anything about the referee.
    """
    by_id = {c.contact_id: c for c in referrers}
    notices: dict[str, dict[str, Any]] = {}
    for conversion in conversions:
        kind = NOTICE_KINDS.get(conversion.milestone)
        referrer = by_id.get(conversion.referrer_id)
        if kind is None or referrer is None:
            continue
        notices[conversion.conversion_id] = {
            "notification_id": derived_id("notice", conversion.conversion_id, kind),
            "contact_id": conversion.referrer_id,
            "kind": kind,
            "reward_id": None,
            "data": {
                "milestone": conversion.milestone.value,
                "code": conversion.referral_code,
                "reward_line": reward_to_come(
                    program, referrer.referrer_type, conversion.milestone
                ),
            },
        }
    return notices


def reward_to_come(
    program: Program, referrer_type: ReferrerType, after: Milestone = Milestone.LEAD
) -> str:
    """The rewards a referrer still earns once the referee, now at ``after``, goes on
    (each later milestone's rules, worded true to their kind, with caps and sharing:
    :func:`domain.reward_wording.rewards_to_come`), or "" when none is to come."""
    return rewards_to_come(program, referrer_type, after)
