"""The conversion area of the ledger that knows Stripe: payments behind conversions.

:class:`StripeConversionLedger` is a mixin of :class:`~integrations.ledger.base.LedgerBase`
meant to join :class:`~integrations.ledger.sql.SqlLedger`'s bases. It records the
conversions read from the Stripe inbox (``stripe_events``) and, through the same rule,
those read from the CRM, so that one referral is never rewarded twice:

**One conversion per (referee, milestone).** The referee is the conversion's CRM
account, else its CRM contact, else (for Stripe) its Stripe customer; a Stripe
customer that a CRM contact names (``contacts.stripe_customer_id``) is that contact's
account. Before a conversion is inserted, the ledger looks for one already recorded:

1. the same *payment* (any of its Stripe ids already in ``conversion_payments``, at
   the same milestone): the ids it lacks are added to it; nothing else happens. This
   is how a webhook and a polling delivery, or a Checkout Session and its invoice,
   become one conversion;
2. the same *referee and milestone* with the same code: a duplicate. A CRM conversion
   is not recorded again, nor is a later payment (a renewal) of a converted referee;
   but a Stripe first payment of a conversion the CRM recorded (which has no Stripe
   payment yet) adds its ids to it, so a refund of it finds the reward;
3. the same referee and milestone with *another* code: quarantined (stage
   ``conversion``), naming the conversion already recorded; a person decides.

Rewards are unique per (conversion, rule, referrer) in the schema, so one conversion
can never pay twice. Every check and insert runs in one transaction per batch, under
an exclusive lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level
advisory lock), so two runs cannot both miss each other's conversion.

The rows of ``conversion_payments`` that one conversion owns are *aliases* of one
payment (its invoice, payment intent, charge, Checkout Session), each carrying the
full payment amount: look a refund up by the id it names, never sum a conversion's
rows. Since the 2025-03-31 API version an invoice no longer names its payment intent
or charge; ``invoice_payment.paid`` events do, and :meth:`link_stripe_payments` adds
them to the conversion owning the invoice (a link read before its conversion waits
for it), and to the recurring rewards the invoice earned (``reward_payments``). A lead
(a trial) owns its subscription and session with amount zero, so the payment that
ends the trial finds the code given at signup.

Stripe events are marked processed in the same transaction as what they produced, and
only the types this stage reads are ever touched: a refund waiting in the inbox for
its payment stays there for the stage that reads refunds. No payload value but ids
and amounts is written outside the inbox: never an address or a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, exists, or_, select, text, update

from domain.models import Contact, Conversion, Milestone, Rejected
from domain.stripe_conversions import (
    INVOICE_PAID,
    LINK_EVENT_TYPES,
    SOURCE,
    StripeConversion,
)
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    contact_from_row,
)
from integrations.ledger.provider_events import StoredStripeEvent, read_unprocessed_stripe_events
from integrations.ledger.reward_payments import link_reward_payments
from integrations.ledger.tables import (
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_SOURCE_EVENTS,
    T_STRIPE_EVENTS,
    ContactRow,
    QuarantineRow,
    SourceCursorRow,
)
from integrations.ledger.touchpoints import record_conversions_touches

QUARANTINE_STAGE = "conversion"
STRIPE_EVENTS_CURSOR = "stripe-events"
# Serializes every writer of conversions on PostgreSQL (pg_advisory_xact_lock key).
_CONVERSIONS_LOCK = 0x5245_4643_4F4E_5601  # "REFCONV" + 1


@dataclass(frozen=True, slots=True)
class ConversionsRecorded:
    """What one batch of conversions did to the ledger.

    Attributes:
        new: conversion ids inserted by this batch.
        joined: conversions already recorded that gained Stripe payment ids (the same
            payment delivered again, or the Stripe payment of a CRM conversion).
        duplicates: candidates for a referee and milestone already converted with the
            same code, or the same payment already complete: nothing added.
        quarantined: rejects written, including referees converted under another code.
        notices: notifications queued for the new conversions.
        events_marked: events marked processed (a rerun marks none).
    """

    new: tuple[str, ...] = ()
    joined: int = 0
    duplicates: int = 0
    quarantined: int = 0
    notices: int = 0
    events_marked: int = 0

    def counts(self) -> dict[str, int]:
        """The numbers only: safe to log."""
        return {
            "conversions": len(self.new),
            "joined": self.joined,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "notices": self.notices,
        }


@dataclass(frozen=True, slots=True)
class PaymentLink:
    """An event tying payment ids to an invoice: ``refs`` is the invoice first."""

    event_id: str
    created_at: datetime
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PaymentsLinked:
    """What one batch of payment links did: linked to a conversion, closed without
    one (too old to wait), or still waiting for their conversion."""

    linked: int = 0
    closed: int = 0
    waiting: int = 0


@dataclass(slots=True)
class ConversionTally:
    """What one batch of conversions came to: new ids, joined, duplicates, rejected."""

    new: list[str] = field(default_factory=list)
    joined: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    # The new conversions with their Stripe customer: their touches are stored for the
    # whole batch at once, by :meth:`StripeConversionLedger._placed`.
    touching: list[tuple[Conversion, str | None]] = field(default_factory=list)


class StripeConversionLedger(LedgerBase):
    """Conversions from Stripe and the CRM, once per referral; a mixin for SqlLedger."""

    # -- reads ---------------------------------------------------------------------------

    def stripe_customer_codes(
        self, customers: Iterable[str]
    ) -> dict[str, dict[Milestone, set[str]]]:
        """Stripe customer -> milestone -> the referral codes of its conversions.

        Found through the Stripe payments of those conversions, and through the CRM
        account of a contact whose ``stripe_customer_id`` is the customer.
        """
        wanted = sorted(set(customers))
        codes: dict[str, dict[Milestone, set[str]]] = {}
        with self._connect() as conn:
            for chunk in chunks(wanted):
                by_payment = (
                    select(
                        T_CONVERSION_PAYMENTS.c.customer_ref,
                        T_CONVERSIONS.c.milestone,
                        T_CONVERSIONS.c.referral_code,
                    )
                    .join(
                        T_CONVERSIONS,
                        T_CONVERSIONS.c.conversion_id == T_CONVERSION_PAYMENTS.c.conversion_id,
                    )
                    .where(
                        T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                        T_CONVERSION_PAYMENTS.c.customer_ref.in_(chunk),
                    )
                )
                by_account = (
                    select(
                        ContactRow.stripe_customer_id,
                        T_CONVERSIONS.c.milestone,
                        T_CONVERSIONS.c.referral_code,
                    )
                    .join(
                        T_CONVERSIONS,
                        T_CONVERSIONS.c.referee_account_id == ContactRow.account_id,
                    )
                    .where(ContactRow.stripe_customer_id.in_(chunk))
                )
                for stmt in (by_payment, by_account):
                    for customer, milestone, code in conn.execute(stmt):
                        by_milestone = codes.setdefault(customer, {})
                        by_milestone.setdefault(Milestone(milestone), set()).add(code)
        return codes

    def stripe_referees(self, customers: Iterable[str]) -> dict[str, Contact]:
        """Stripe customer -> the CRM contact that names it (the first by id)."""
        wanted = sorted(set(customers))
        found: dict[str, Contact] = {}
        with self._connect() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(
                    select(ContactRow.__table__)
                    .where(ContactRow.stripe_customer_id.in_(chunk))
                    .order_by(ContactRow.contact_id)
                ).mappings():
                    found.setdefault(row["stripe_customer_id"], contact_from_row(row))
        return found

    def stripe_invoice_events(self, invoice_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The ``invoice.paid`` events of ``invoice_ids`` in the inbox, processed or not
        (a Checkout Session's conversion takes its invoice's payment ids from them)."""
        wanted = sorted(set(invoice_ids))
        found: list[dict[str, Any]] = []
        with self._connect() as conn:
            for chunk in chunks(wanted):
                found += [
                    dict(payload)
                    for payload in conn.execute(
                        select(T_STRIPE_EVENTS.c.payload)
                        .where(
                            T_STRIPE_EVENTS.c.object_id.in_(chunk),
                            T_STRIPE_EVENTS.c.type == INVOICE_PAID,
                        )
                        .order_by(T_STRIPE_EVENTS.c.created_at, T_STRIPE_EVENTS.c.event_id)
                    ).scalars()
                ]
        return found

    def stripe_events_to_link(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        """Unprocessed payment-link events (``invoice_payment.paid``), oldest first,
        after ``after`` (created, event id): one still waiting for its conversion never
        blocks the ones behind it."""
        with self._connect() as conn:
            return read_unprocessed_stripe_events(conn, sorted(LINK_EVENT_TYPES), after, limit)

    def save_cursor(self, source: str, cursor: str, now: datetime) -> None:
        """Keep ``source``'s read position (``source_cursors``), e.g. ``stripe-events``."""
        with self._begin() as conn:
            self._upsert(
                conn,
                SourceCursorRow,
                [{"source": source, "cursor": cursor, "updated_at": now}],
                "source",
            )

    # -- writes --------------------------------------------------------------------------

    def record_stripe_conversions(
        self,
        event_ids: Sequence[str],
        conversions: Sequence[StripeConversion],
        rejected: Sequence[Rejected],
        notices: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> ConversionsRecorded:
        """Record what a batch of Stripe events stands for, and mark them processed.

        One transaction: the conversions (placed by the rules in the module docstring)
        with their payment ids, the quarantine, the notices of the new conversions,
        and ``processed_at`` on ``event_ids`` (every event examined: converted, refused
        or standing for nothing). A crash keeps all or none, and the events are read
        again.

        Args:
            event_ids: the Stripe event ids examined.
            conversions: the conversions read from them, oldest event first.
            rejected: events refused, to quarantine.
            notices: conversion id -> its notification row (``notification_id``,
                ``contact_id``, ``kind``, ``data``), queued only if it is new.
            now: when this is recorded, timezone-aware.

        Returns:
            What was recorded.
        """
        with self._begin() as conn:
            self._lock(conn)
            tally = ConversionTally(rejected=list(rejected))
            for item in conversions:
                self._place(conn, item.conversion, item, tally, now)
            self._placed(conn, tally, now)
            quarantined = self._quarantine_all(conn, tally.rejected, now)
            queued = self._queue_for(conn, tally.new, notices, now)
            marked = 0
            for chunk in chunks(sorted(set(event_ids))):
                marked += conn.execute(
                    update(T_STRIPE_EVENTS)
                    .where(
                        T_STRIPE_EVENTS.c.event_id.in_(chunk),
                        T_STRIPE_EVENTS.c.processed_at.is_(None),
                    )
                    .values(processed_at=now)
                ).rowcount
        return ConversionsRecorded(
            tuple(tally.new), tally.joined, tally.duplicates, quarantined, queued, marked
        )

    def record_crm_conversions(
        self,
        event_ids: Sequence[int],
        conversions: Sequence[Conversion],
        rejected: Sequence[Rejected],
        notices: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> ConversionsRecorded:
        """Record CRM conversions by the same rules as Stripe's, and mark their events.

        Does what ``SqlLedger.record_conversions`` does (conversions, quarantine,
        ``converted_at``), but a referee and milestone already converted is not
        converted again, and the notices of the new conversions are queued, all in
        one transaction.

        Args:
            event_ids: ``source_events.id`` of every event examined.
            conversions: the conversions read from them.
            rejected: events refused, to quarantine.
            notices: conversion id -> its notification row, queued only if it is new.
            now: when this is recorded, timezone-aware.

        Returns:
            What was recorded.
        """
        with self._begin() as conn:
            self._lock(conn)
            tally = ConversionTally(rejected=list(rejected))
            for conversion in conversions:
                self._place(conn, conversion, None, tally, now)
            self._placed(conn, tally, now)
            quarantined = self._quarantine_all(conn, tally.rejected, now)
            queued = self._queue_for(conn, tally.new, notices, now)
            marked = 0
            for ids in chunks(sorted(set(event_ids))):
                marked += conn.execute(
                    update(T_SOURCE_EVENTS)
                    .where(T_SOURCE_EVENTS.c.id.in_(ids), T_SOURCE_EVENTS.c.converted_at.is_(None))
                    .values(converted_at=now)
                ).rowcount
        return ConversionsRecorded(
            tuple(tally.new), tally.joined, tally.duplicates, quarantined, queued, marked
        )

    def link_stripe_payments(
        self,
        links: Sequence[PaymentLink],
        give_up_before: datetime,
        now: datetime,
    ) -> PaymentsLinked:
        """Give the conversion owning each link's invoice the link's payment ids, and the
        rewards the invoice earned by itself (a recurring rule's) the same ids.

        A link whose invoice neither a conversion nor a reward owns waits (unprocessed)
        for that conversion to be recorded, unless its event was created before
        ``give_up_before``: then it is the payment of an invoice no referral is behind,
        and it is marked processed. A linked event is marked processed in the same
        transaction. (A reward recorded after its invoice's link was closed finds the
        link in the inbox all the same.)

        Args:
            links: the links read from the inbox.
            give_up_before: links older than this stop waiting for their conversion.
            now: when this is recorded, timezone-aware.

        Returns:
            How many events linked ids, were closed without a conversion, or wait.
        """
        linked = closed = waiting = 0
        done: list[str] = []
        with self._begin() as conn:
            self._lock(conn)
            for link in links:
                owner = (
                    conn.execute(
                        select(T_CONVERSION_PAYMENTS).where(
                            T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                            T_CONVERSION_PAYMENTS.c.payment_ref == link.refs[0],
                        )
                    )
                    .mappings()
                    .first()
                    if link.refs
                    else None
                )
                # The rewards the invoice earned by itself (a recurring rule's) take the
                # ids too: a renewal's refund names only them, and no conversion owns it.
                earners = link_reward_payments(self, conn, link.refs, now)
                if owner is not None:
                    self._insert_ignore(
                        conn,
                        T_CONVERSION_PAYMENTS,
                        [
                            {
                                "provider": SOURCE,
                                "payment_ref": ref,
                                "conversion_id": owner["conversion_id"],
                                "customer_ref": owner["customer_ref"],
                                "amount_minor": owner["amount_minor"],
                                "currency": owner["currency"],
                                "created_at": now,
                            }
                            for ref in link.refs[1:]
                        ],
                        T_CONVERSION_PAYMENTS.c.payment_ref,
                    )
                    linked += 1
                    done.append(link.event_id)
                elif earners:
                    linked += 1
                    done.append(link.event_id)
                elif not link.refs or link.created_at < give_up_before:
                    closed += 1
                    done.append(link.event_id)
                else:
                    waiting += 1
            for chunk in chunks(sorted(set(done))):
                conn.execute(
                    update(T_STRIPE_EVENTS)
                    .where(
                        T_STRIPE_EVENTS.c.event_id.in_(chunk),
                        T_STRIPE_EVENTS.c.processed_at.is_(None),
                    )
                    .values(processed_at=now)
                )
        return PaymentsLinked(linked, closed, waiting)

    # -- helpers -------------------------------------------------------------------------

    def _lock(self, conn: Connection) -> None:
        if self._dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CONVERSIONS_LOCK})

    def _place(
        self,
        conn: Connection,
        conversion: Conversion,
        stripe: StripeConversion | None,
        tally: ConversionTally,
        now: datetime,
    ) -> None:
        """Insert ``conversion``, or join or refuse it by the rules of the module."""
        refs = stripe.payment_refs if stripe else ()
        customer = stripe.customer if stripe else None
        if refs:
            same_payment = conn.execute(
                select(T_CONVERSION_PAYMENTS.c.conversion_id)
                .join(
                    T_CONVERSIONS,
                    T_CONVERSIONS.c.conversion_id == T_CONVERSION_PAYMENTS.c.conversion_id,
                )
                .where(
                    T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                    T_CONVERSION_PAYMENTS.c.payment_ref.in_(refs),
                    T_CONVERSIONS.c.milestone == conversion.milestone.value,
                )
                .order_by(T_CONVERSION_PAYMENTS.c.created_at, T_CONVERSION_PAYMENTS.c.payment_ref)
                .limit(1)
            ).scalar_one_or_none()
            if same_payment is not None:
                assert stripe is not None
                if self._add_payments(conn, same_payment, stripe, now):
                    tally.joined += 1
                else:
                    tally.duplicates += 1
                return
        earlier = self._same_referee(conn, conversion, customer)
        if earlier is not None:
            conversion_id, code, has_stripe = earlier
            if code != conversion.referral_code:
                tally.rejected.append(
                    Rejected(
                        conversion.source_event.split(":", 1)[0],
                        conversion.source_event,
                        "referral_code",
                        f"referee already converted at milestone {conversion.milestone.value} "
                        f"through another referral code (conversion {conversion_id})",
                    )
                )
            elif (
                stripe is not None
                and not has_stripe
                and stripe.first_payment
                and conversion.milestone is Milestone.CUSTOMER
                and self._add_payments(conn, conversion_id, stripe, now)
            ):
                tally.joined += 1
            else:
                tally.duplicates += 1
            return
        inserted = self._insert_ignore(
            conn, T_CONVERSIONS, [_conversion_row(conversion, now)], T_CONVERSIONS.c.conversion_id
        )
        if not inserted:
            tally.duplicates += 1
            return
        tally.new.append(conversion.conversion_id)
        if stripe is not None:
            self._add_payments(conn, conversion.conversion_id, stripe, now)
        tally.touching.append((conversion, customer))

    def _placed(self, conn: Connection, tally: ConversionTally, now: datetime) -> None:
        """Store the touches of the conversions a batch of :meth:`_place` calls added.
        Right after the batch, in its transaction, before anything else changes."""
        record_conversions_touches(self, conn, tally.touching, now)
        tally.touching.clear()

    def _same_referee(
        self, conn: Connection, conversion: Conversion, customer: str | None
    ) -> tuple[str, str, bool] | None:
        """(id, code, has Stripe payments) of the earliest conversion of the same
        referee at the same milestone, or None."""
        same: list[Any] = []
        if conversion.referee_account_id:
            same.append(T_CONVERSIONS.c.referee_account_id == conversion.referee_account_id)
        if conversion.referee_contact_id:
            same.append(T_CONVERSIONS.c.referee_contact_id == conversion.referee_contact_id)
        if customer:
            same.append(
                T_CONVERSIONS.c.conversion_id.in_(
                    select(T_CONVERSION_PAYMENTS.c.conversion_id).where(
                        T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                        T_CONVERSION_PAYMENTS.c.customer_ref == customer,
                    )
                )
            )
        if not same:
            return None
        has_stripe = (
            exists()
            .where(
                T_CONVERSION_PAYMENTS.c.conversion_id == T_CONVERSIONS.c.conversion_id,
                T_CONVERSION_PAYMENTS.c.provider == SOURCE,
            )
            .label("has_stripe")
        )
        row = conn.execute(
            select(T_CONVERSIONS.c.conversion_id, T_CONVERSIONS.c.referral_code, has_stripe)
            .where(T_CONVERSIONS.c.milestone == conversion.milestone.value, or_(*same))
            .order_by(T_CONVERSIONS.c.created_at, T_CONVERSIONS.c.conversion_id)
            .limit(1)
        ).first()
        return None if row is None else (row[0], row[1], bool(row[2]))

    def _add_payments(
        self, conn: Connection, conversion_id: str, stripe: StripeConversion, now: datetime
    ) -> int:
        """Link the payment's Stripe ids to ``conversion_id``; how many were new."""
        return len(
            self._insert_ignore(
                conn,
                T_CONVERSION_PAYMENTS,
                [
                    {
                        "provider": SOURCE,
                        "payment_ref": ref,
                        "conversion_id": conversion_id,
                        "customer_ref": stripe.customer,
                        "amount_minor": stripe.payment.amount_minor,
                        "currency": stripe.payment.currency,
                        "created_at": now,
                    }
                    for ref in stripe.payment_refs
                ],
                T_CONVERSION_PAYMENTS.c.payment_ref,
            )
        )

    def _quarantine_all(self, conn: Connection, rejected: Sequence[Rejected], now: datetime) -> int:
        self._insert_ignore(
            conn,
            QuarantineRow,
            self._quarantine_rows(rejected, QUARANTINE_STAGE, now),
            QuarantineRow.id,
        )
        return len(rejected)

    def _queue_for(
        self,
        conn: Connection,
        new: Sequence[str],
        notices: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> int:
        return self._queue_notifications(conn, [notices[c] for c in new if c in notices], now)


def _conversion_row(c: Conversion, now: datetime) -> dict[str, Any]:
    return {
        "conversion_id": c.conversion_id,
        "source_event": c.source_event,
        "referral_code": c.referral_code,
        "referrer_id": c.referrer_id,
        "referee_account_id": c.referee_account_id,
        "referee_contact_id": c.referee_contact_id,
        "referee_email_domain": c.referee_email_domain,
        "card_fingerprint": c.card_fingerprint,
        "milestone": c.milestone.value,
        "occurred_at": c.occurred_at,
        "amount_minor": c.amount.amount_minor if c.amount else None,
        "currency": c.amount.currency if c.amount else None,
        "created_at": now,
    }
