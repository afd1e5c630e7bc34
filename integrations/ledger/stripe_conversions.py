"""The ``stripe`` store: what the Stripe conversion stages read, and payment links.

:class:`SqlStripeStore` (``ledger.stripe``) answers the Stripe conversion stage's
questions (the codes a Stripe customer converted under, the CRM contact naming a
customer, the ``invoice.paid`` events of invoices), keeps the polling cursor, and links
the payment ids of ``invoice_payment.paid`` events to the conversions owning their
invoices. Conversions themselves are placed by :mod:`tasks.use_cases.conversions`,
by the rules of :mod:`domain.placement`, through the ``conversions`` store.

Since the 2025-03-31 API version an invoice no longer names its payment intent or
charge; ``invoice_payment.paid`` events do, and :meth:`SqlStripeStore.link_stripe_payments`
adds them to the conversion owning the invoice (a link read before its conversion
waits for it), and to the recurring rewards the invoice earned (``reward_payments``).
A lead (a trial) owns its subscription and session with amount zero, so the payment
that ends the trial finds the code given at signup.

Stripe events are marked processed in the same transaction as what they produced, and
only the types a stage reads are ever touched: a refund waiting in the inbox for its
payment stays there for the stage that reads refunds. No payload value but ids and
amounts is written outside the inbox: never an address or a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from domain.models import Contact, Milestone
from domain.placement import ConversionTally
from domain.stores.conversions import ConversionsRecorded
from domain.stores.stripe import PaymentLink, PaymentsLinked
from domain.stripe_conversions import INVOICE_PAID, LINK_EVENT_TYPES, SOURCE
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    contact_from_row,
)
from integrations.ledger.conversions import lock_conversions
from integrations.ledger.provider_events import StoredStripeEvent, read_unprocessed_stripe_events
from integrations.ledger.reward_payments import link_reward_payments
from integrations.ledger.tables import (
    T_CONTACTS,
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_STRIPE_EVENTS,
    ContactRow,
    SourceCursorRow,
)

STRIPE_EVENTS_CURSOR = "stripe-events"

__all__ = [
    "STRIPE_EVENTS_CURSOR",
    "ConversionTally",
    "ConversionsRecorded",
    "PaymentLink",
    "PaymentsLinked",
    "SqlStripeStore",
]


class SqlStripeStore(LedgerBase):
    """The Stripe side of conversions on SQLAlchemy."""

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
                    select(T_CONTACTS)
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
            lock_conversions(self, conn)
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
