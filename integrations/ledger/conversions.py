"""The ``conversions`` store: coded events, conversions and the Stripe ids they own.

:class:`SqlConversionStore` reads the CRM events carrying a referral code, and gives
the use cases of :mod:`tasks.use_cases.conversions` each step of placing a conversion
by the rules of :mod:`domain.placement` (the same payment, the same referee and
milestone, insert), so those rules are written once, in the domain. Every step runs
in the unit of work the store is bound to, after :meth:`SqlConversionStore.lock`:
SQLite opens every transaction with ``BEGIN IMMEDIATE`` and PostgreSQL takes a
transaction-level advisory lock, so two runs cannot both miss each other's conversion.

The rows of ``conversion_payments`` that one conversion owns are *aliases* of one
payment (its invoice, payment intent, charge, Checkout Session), each carrying the
full payment amount: look a refund up by the id it names, never sum a conversion's
rows. Rewards are unique per (conversion, rule, referrer) in the schema, so one
conversion can never pay twice. No payload value but ids and amounts is written
here: never an address or a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, exists, or_, select, text, update

from domain.models import Contact, Conversion, Milestone, Rejected, SourceEvent
from domain.placement import (
    EarlierConversion,
    KnownConversion,
    KnownPayment,
    NewPayment,
    PlacementFacts,
)
from domain.stripe_conversions import SOURCE, StripeConversion
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    contact_from_row,
    conversion_row,
    event_from_row,
)
from integrations.ledger.tables import (
    T_CONTACTS,
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_SOURCE_EVENTS,
    ContactRow,
    ConversionRow,
    QuarantineRow,
    ReferralCodeRow,
)
from integrations.ledger.touchpoints import record_conversions_touches

QUARANTINE_STAGE = "conversion"
# Serializes every writer of conversions on PostgreSQL (pg_advisory_xact_lock key).
_CONVERSIONS_LOCK = 0x5245_4643_4F4E_5601  # "REFCONV" + 1


def lock_conversions(store: LedgerBase, conn: Connection) -> None:
    """Take the conversions lock for the rest of ``conn``'s transaction (PostgreSQL;
    SQLite's ``BEGIN IMMEDIATE`` already serializes writers)."""
    if store._dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CONVERSIONS_LOCK})


class SqlConversionStore(LedgerBase):
    """Conversions on SQLAlchemy: reads, the legacy batch insert, and placement steps."""

    # -- reads ---------------------------------------------------------------------------

    def events_to_convert(self, after_id: int, limit: int) -> list[tuple[int, SourceEvent]]:
        """CRM events with a referral code not examined yet, by id after ``after_id``."""
        with self._connect() as conn:
            rows = conn.execute(
                select(T_SOURCE_EVENTS)
                .where(
                    T_SOURCE_EVENTS.c.converted_at.is_(None),
                    T_SOURCE_EVENTS.c.referral_code.is_not(None),
                    T_SOURCE_EVENTS.c.id > after_id,
                )
                .order_by(T_SOURCE_EVENTS.c.id)
                .limit(limit)
            ).mappings()
            return [(row["id"], event_from_row(row)) for row in rows]

    def code_owners(self, codes: Iterable[str]) -> dict[str, Contact]:
        """Referral code -> the contact owning it (unknown codes are left out)."""
        wanted = sorted(set(codes))
        owners: dict[str, Contact] = {}
        with self._connect() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(
                    select(ReferralCodeRow.code, T_CONTACTS)
                    .join(ContactRow, ContactRow.contact_id == ReferralCodeRow.contact_id)
                    .where(ReferralCodeRow.code.in_(chunk))
                ).mappings():
                    owners[row["code"]] = contact_from_row(row)
        return owners

    # -- the batch insert, without placement ---------------------------------------------

    def record_conversions(
        self,
        event_ids: Sequence[int],
        conversions: Sequence[Conversion],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        """Insert conversions as they are, with their touches and the quarantine, and
        mark ``event_ids`` examined, in one transaction; how many conversions were new."""
        with self._begin() as conn:
            new = self._insert_ignore(
                conn,
                ConversionRow,
                [conversion_row(c, now) for c in conversions],
                ConversionRow.conversion_id,
            )
            inserted = set(new)
            record_conversions_touches(
                self, conn, [(c, None) for c in conversions if c.conversion_id in inserted], now
            )
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(rejected, "conversion", now),
                QuarantineRow.id,
            )
            for ids in chunks(event_ids):
                conn.execute(
                    update(T_SOURCE_EVENTS)
                    .where(T_SOURCE_EVENTS.c.id.in_(ids))
                    .values(converted_at=now)
                )
        return len(new)

    # -- placement steps (see domain.placement) ------------------------------------------

    def lock(self) -> None:
        """Serialize every writer of conversions until the unit of work ends."""
        with self._begin() as conn:
            lock_conversions(self, conn)

    def payment_owner(self, refs: Sequence[str], milestone: Milestone) -> str | None:
        """The conversion at ``milestone`` owning any of the Stripe ids ``refs``."""
        if not refs:
            return None
        with self._connect() as conn:
            owner: str | None = conn.execute(
                select(T_CONVERSION_PAYMENTS.c.conversion_id)
                .join(
                    T_CONVERSIONS,
                    T_CONVERSIONS.c.conversion_id == T_CONVERSION_PAYMENTS.c.conversion_id,
                )
                .where(
                    T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                    T_CONVERSION_PAYMENTS.c.payment_ref.in_(list(refs)),
                    T_CONVERSIONS.c.milestone == milestone.value,
                )
                .order_by(T_CONVERSION_PAYMENTS.c.created_at, T_CONVERSION_PAYMENTS.c.payment_ref)
                .limit(1)
            ).scalar_one_or_none()
        return owner

    def earliest_of_referee(
        self, conversion: Conversion, customer: str | None
    ) -> EarlierConversion | None:
        """The earliest conversion of the same referee (CRM account, CRM contact or
        Stripe customer) at the same milestone, or None."""
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
        with self._connect() as conn:
            row = conn.execute(
                select(T_CONVERSIONS.c.conversion_id, T_CONVERSIONS.c.referral_code, has_stripe)
                .where(T_CONVERSIONS.c.milestone == conversion.milestone.value, or_(*same))
                .order_by(T_CONVERSIONS.c.created_at, T_CONVERSIONS.c.conversion_id)
                .limit(1)
            ).first()
        return None if row is None else EarlierConversion(row[0], row[1], bool(row[2]))

    def insert(self, conversion: Conversion, now: datetime) -> bool:
        """Insert ``conversion``; False when its id was already recorded."""
        with self._begin() as conn:
            return bool(
                self._insert_ignore(
                    conn,
                    T_CONVERSIONS,
                    [conversion_row(conversion, now)],
                    T_CONVERSIONS.c.conversion_id,
                )
            )

    def add_payments(self, conversion_id: str, stripe: StripeConversion, now: datetime) -> int:
        """Link the payment's Stripe ids to ``conversion_id``; how many were new."""
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    T_CONVERSION_PAYMENTS,
                    [_payment_row(ref, conversion_id, stripe, now) for ref in stripe.payment_refs],
                    T_CONVERSION_PAYMENTS.c.payment_ref,
                )
            )

    # -- a batch placed at once (see domain.placement.PlacementBook) ----------------------

    def placement_facts(
        self, items: Sequence[tuple[Conversion, StripeConversion | None]]
    ) -> PlacementFacts:
        """What placing this batch can depend on: a few reads per kind of key (CRM
        accounts, CRM contacts, Stripe customers, Stripe ids, conversion ids, source
        events), each an index lookup by the batch's own keys, whatever the table's
        size."""
        c, p = T_CONVERSIONS, T_CONVERSION_PAYMENTS
        accounts = {x.referee_account_id for x, _ in items if x.referee_account_id}
        contacts = {x.referee_contact_id for x, _ in items if x.referee_contact_id}
        customers = {s.customer for _, s in items if s is not None and s.customer}
        refs = {r for _, s in items if s is not None for r in s.payment_refs}
        ids = {x.conversion_id for x, _ in items}
        events = {x.source_event for x, _ in items}
        known: dict[str, KnownConversion] = {}
        with self._connect() as conn:

            def read(where: Any, values: set[str]) -> None:
                for chunk in chunks(sorted(values)):
                    for row in conn.execute(
                        select(
                            c.c.conversion_id,
                            c.c.source_event,
                            c.c.referral_code,
                            c.c.milestone,
                            c.c.referee_account_id,
                            c.c.referee_contact_id,
                            c.c.created_at,
                        ).where(where.in_(chunk))
                    ):
                        known[row[0]] = KnownConversion(
                            row[0], row[1], row[2], Milestone(row[3]), row[4], row[5], row[6]
                        )

            def paid(where: Any, values: set[str]) -> set[str]:
                found: set[str] = set()
                for chunk in chunks(sorted(values)):
                    found.update(
                        conn.execute(
                            select(p.c.conversion_id).where(
                                p.c.provider == SOURCE, where.in_(chunk)
                            )
                        ).scalars()
                    )
                return found

            read(c.c.referee_account_id, accounts)
            read(c.c.referee_contact_id, contacts)
            read(c.c.conversion_id, ids)
            read(c.c.source_event, events)
            others = paid(p.c.customer_ref, customers) | paid(p.c.payment_ref, refs)
            read(c.c.conversion_id, others - known.keys())
            payments: list[KnownPayment] = []
            for chunk in chunks(sorted(known)):
                payments += [
                    KnownPayment(*row)
                    for row in conn.execute(
                        select(p.c.payment_ref, p.c.conversion_id, p.c.customer_ref, p.c.created_at)
                        .where(p.c.provider == SOURCE, p.c.conversion_id.in_(chunk))
                        .order_by(p.c.conversion_id, p.c.payment_ref)
                    )
                ]
        return PlacementFacts(sorted(known.values(), key=lambda k: k.conversion_id), payments)

    def record_placed(
        self, conversions: Sequence[Conversion], payments: Sequence[NewPayment], now: datetime
    ) -> tuple[set[str], int]:
        """Insert a placed batch's new conversions, then link its new Stripe ids, in a
        statement or two each (rows already recorded are skipped)."""
        with self._begin() as conn:
            inserted = set(
                self._insert_ignore(
                    conn,
                    T_CONVERSIONS,
                    [conversion_row(x, now) for x in conversions],
                    T_CONVERSIONS.c.conversion_id,
                )
            )
            linked = self._insert_ignore(
                conn,
                T_CONVERSION_PAYMENTS,
                [_payment_row(n.payment_ref, n.conversion_id, n.stripe, now) for n in payments],
                T_CONVERSION_PAYMENTS.c.payment_ref,
            )
        return inserted, len(linked)

    def mark_events_converted(self, event_ids: Sequence[int], now: datetime) -> int:
        """Mark CRM events examined; how many were not already."""
        marked = 0
        with self._begin() as conn:
            for ids in chunks(sorted(set(event_ids))):
                marked += conn.execute(
                    update(T_SOURCE_EVENTS)
                    .where(T_SOURCE_EVENTS.c.id.in_(ids), T_SOURCE_EVENTS.c.converted_at.is_(None))
                    .values(converted_at=now)
                ).rowcount
        return marked

    def quarantine_rejected(self, rejected: Sequence[Rejected], now: datetime) -> int:
        """Quarantine refused conversions (stage ``conversion``); returns how many were
        handed in (a rerun's repeats are kept once)."""
        with self._begin() as conn:
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(rejected, QUARANTINE_STAGE, now),
                QuarantineRow.id,
            )
        return len(rejected)

    def queue_notices(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Queue the notifications of new conversions; how many were new."""
        with self._begin() as conn:
            return self._queue_notifications(conn, rows, now)


def _payment_row(
    ref: str, conversion_id: str, stripe: StripeConversion, now: datetime
) -> dict[str, Any]:
    """The ``conversion_payments`` row linking Stripe id ``ref`` to ``conversion_id``."""
    return {
        "provider": SOURCE,
        "payment_ref": ref,
        "conversion_id": conversion_id,
        "customer_ref": stripe.customer,
        "amount_minor": stripe.payment.amount_minor,
        "currency": stripe.payment.currency,
        "created_at": now,
    }
