"""What the fraud checks need to know beyond a batch of conversions.

:class:`SqlFraudStore` is the ``fraud`` store of the ledger (``ledger.fraud``, typed by
:class:`domain.stores.fraud.FraudStore`) with one read,
:meth:`SqlFraudStore.fraud_history`, that gathers what :func:`domain.fraud.flags_for_batch`
compares the batch with: the referee contacts, the Stripe customers that paid each
conversion, the cards each referrer paid with, each referrer's recent conversions and
the part of the referrer graph a cycle could go through, and when each code's tracked
link was first clicked by its owner (from a browser seen on their page) and by anyone
else. Emails are read from the contacts table as they are for sending, and only ever
compared in memory.

It also keeps what the same-card check learns from the payment provider: the
conversions paid through Stripe whose card is not known yet
(:meth:`SqlFraudStore.conversions_without_card`), and the fingerprint read for each
(:meth:`SqlFraudStore.record_card_fingerprints`), before their rewards are computed.
The fingerprint is the only card datum ever stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, exists, func, select, update

from domain.fraud import MAX_CYCLE_LENGTH, FirstClicks, FraudHistory, ReferralEdge, party
from domain.models import Contact, Conversion
from domain.program import Fraud
from domain.stores.fraud import CardLookup
from domain.stripe_conversions import SOURCE
from integrations.ledger.base import LedgerBase, chunks, contact_from_row
from integrations.ledger.links import PERSON, counted_click, own_click
from integrations.ledger.tables import (
    T_CONTACTS,
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_LINK_CLICKS,
    T_STRIPE_EVENTS,
)
from integrations.payments.stripe_payloads import event_object

__all__ = ["CardLookup", "SqlFraudStore"]

_STRIPE_RECORD = f"{SOURCE}:"


class SqlFraudStore(LedgerBase):
    """The fraud checks' read of the ledger, and the cards learned from Stripe."""

    def fraud_history(
        self,
        conversions: Sequence[Conversion],
        referrers: Mapping[str, Contact],
        rules: Fraud,
    ) -> FraudHistory:
        """Everything :func:`domain.fraud.flags_for_batch` needs about ``conversions``.

        Args:
            conversions: the batch about to be rewarded.
            referrers: their referrers, by contact id.
            rules: the velocity window.

        Returns:
            The history around the batch (see :class:`domain.fraud.FraudHistory`).
        """
        if not conversions:
            return FraudHistory()
        with self._connect() as conn:
            referee_ids = sorted({c.referee_contact_id or "" for c in conversions} - {""})
            referees = {
                r["contact_id"]: contact_from_row(r)
                for chunk in chunks(referee_ids)
                for r in conn.execute(
                    select(T_CONTACTS).where(T_CONTACTS.c.contact_id.in_(chunk))
                ).mappings()
            }
            return FraudHistory(
                referees=referees,
                referee_customers=self._referee_customers(conn, conversions),
                referrer_cards=self._referrer_cards(conn, referrers),
                recent=self._recent(conn, conversions, timedelta(hours=rules.window_hours)),
                edges=self._edges(conn, referrers.values()),
                link_clicks=self._first_link_clicks(conn, conversions),
            )

    def conversions_without_card(self, after: str, limit: int) -> list[CardLookup]:
        """Conversions not rewarded yet, paid through Stripe, whose card is unknown.

        Args:
            after: the last conversion id of the previous page (``""`` to start).
            limit: at most this many, by conversion id.

        Returns:
            Each with its payment ids and the object of the event it was read from.
        """
        paid = exists().where(
            T_CONVERSION_PAYMENTS.c.conversion_id == T_CONVERSIONS.c.conversion_id,
            T_CONVERSION_PAYMENTS.c.provider == SOURCE,
        )
        with self._connect() as conn:
            rows = conn.execute(
                select(T_CONVERSIONS.c.conversion_id, T_CONVERSIONS.c.source_event)
                .where(
                    T_CONVERSIONS.c.rewarded_at.is_(None),
                    T_CONVERSIONS.c.card_fingerprint.is_(None),
                    T_CONVERSIONS.c.conversion_id > after,
                    paid,
                )
                .order_by(T_CONVERSIONS.c.conversion_id)
                .limit(limit)
            ).all()
            ids = [r.conversion_id for r in rows]
            refs: dict[str, list[str]] = {}
            for chunk in chunks(ids):
                for conversion_id, ref in conn.execute(
                    select(
                        T_CONVERSION_PAYMENTS.c.conversion_id, T_CONVERSION_PAYMENTS.c.payment_ref
                    )
                    .where(
                        T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                        T_CONVERSION_PAYMENTS.c.conversion_id.in_(chunk),
                    )
                    .order_by(
                        T_CONVERSION_PAYMENTS.c.created_at, T_CONVERSION_PAYMENTS.c.payment_ref
                    )
                ):
                    refs.setdefault(conversion_id, []).append(ref)
            events = {
                r.source_event: r.source_event[len(_STRIPE_RECORD) :]
                for r in rows
                if r.source_event.startswith(_STRIPE_RECORD)
            }
            payloads: dict[str, Any] = {}
            for chunk in chunks(sorted(set(events.values()))):
                for event_id, payload in conn.execute(
                    select(T_STRIPE_EVENTS.c.event_id, T_STRIPE_EVENTS.c.payload).where(
                        T_STRIPE_EVENTS.c.event_id.in_(chunk)
                    )
                ):
                    payloads[event_id] = payload
        return [
            CardLookup(
                r.conversion_id,
                tuple(refs.get(r.conversion_id, ())),
                event_object(payloads.get(events.get(r.source_event, ""), {})),
            )
            for r in rows
        ]

    def record_card_fingerprints(self, found: Mapping[str, str]) -> int:
        """Keep the fingerprint of the card each conversion was paid with.

        Only on a conversion whose card is still unknown and whose rewards are not
        computed yet: the flags of a reward already computed do not change under it.

        Args:
            found: conversion id -> fingerprint.

        Returns:
            How many conversions learned their card.
        """
        learned = 0
        with self._begin() as conn:
            for conversion_id, fingerprint in sorted(found.items()):
                learned += conn.execute(
                    update(T_CONVERSIONS)
                    .where(
                        T_CONVERSIONS.c.conversion_id == conversion_id,
                        T_CONVERSIONS.c.card_fingerprint.is_(None),
                        T_CONVERSIONS.c.rewarded_at.is_(None),
                    )
                    .values(card_fingerprint=fingerprint[:64])
                ).rowcount
        return learned

    @staticmethod
    def _referee_customers(
        conn: Connection, conversions: Sequence[Conversion]
    ) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for chunk in chunks(sorted({c.conversion_id for c in conversions})):
            for conversion_id, customer in conn.execute(
                select(
                    T_CONVERSION_PAYMENTS.c.conversion_id, T_CONVERSION_PAYMENTS.c.customer_ref
                ).where(
                    T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                    T_CONVERSION_PAYMENTS.c.conversion_id.in_(chunk),
                    T_CONVERSION_PAYMENTS.c.customer_ref.is_not(None),
                )
            ):
                found.setdefault(conversion_id, set()).add(customer)
        return {k: frozenset(v) for k, v in found.items()}

    @staticmethod
    def _referrer_cards(
        conn: Connection, referrers: Mapping[str, Contact]
    ) -> dict[str, frozenset[str]]:
        """The fingerprints of the cards each referrer paid with: conversions where they
        were the referee themselves, or paid as their own Stripe customer."""
        cards: dict[str, set[str]] = {}
        by_customer = {r.stripe_customer_id: r.contact_id for r in referrers.values()}
        by_customer.pop(None, None)
        for chunk in chunks(sorted(referrers)):
            for contact_id, card in conn.execute(
                select(T_CONVERSIONS.c.referee_contact_id, T_CONVERSIONS.c.card_fingerprint).where(
                    T_CONVERSIONS.c.referee_contact_id.in_(chunk),
                    T_CONVERSIONS.c.card_fingerprint.is_not(None),
                )
            ):
                cards.setdefault(contact_id, set()).add(card)
        for chunk in chunks(sorted(c for c in by_customer if c)):
            for customer, card in conn.execute(
                select(T_CONVERSION_PAYMENTS.c.customer_ref, T_CONVERSIONS.c.card_fingerprint)
                .join(
                    T_CONVERSIONS,
                    T_CONVERSIONS.c.conversion_id == T_CONVERSION_PAYMENTS.c.conversion_id,
                )
                .where(
                    T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                    T_CONVERSION_PAYMENTS.c.customer_ref.in_(chunk),
                    T_CONVERSIONS.c.card_fingerprint.is_not(None),
                )
            ):
                cards.setdefault(by_customer[customer], set()).add(card)
        return {k: frozenset(v) for k, v in cards.items()}

    @staticmethod
    def _recent(
        conn: Connection, conversions: Sequence[Conversion], window: timedelta
    ) -> dict[str, dict[str, datetime]]:
        since = min(c.occurred_at for c in conversions) - window
        until = max(c.occurred_at for c in conversions)
        recent: dict[str, dict[str, datetime]] = {}
        for chunk in chunks(sorted({c.referrer_id for c in conversions})):
            for referrer_id, conversion_id, occurred_at in conn.execute(
                select(
                    T_CONVERSIONS.c.referrer_id,
                    T_CONVERSIONS.c.conversion_id,
                    T_CONVERSIONS.c.occurred_at,
                ).where(
                    T_CONVERSIONS.c.referrer_id.in_(chunk),
                    T_CONVERSIONS.c.occurred_at > since,
                    T_CONVERSIONS.c.occurred_at <= until,
                )
            ):
                recent.setdefault(referrer_id, {})[conversion_id] = occurred_at
        return recent

    @staticmethod
    def _first_link_clicks(
        conn: Connection, conversions: Sequence[Conversion]
    ) -> dict[str, FirstClicks]:
        """Code -> its link's first person's click by its owner and by anyone else (two
        grouped reads per chunk of codes, whatever the number of clicks)."""
        codes = sorted({c.referral_code for c in conversions if c.referral_code})
        own: dict[str, datetime] = {}
        others: dict[str, datetime] = {}
        for chunk in chunks(codes):
            for found, where in (
                (own, (T_LINK_CLICKS.c.visitor_kind == PERSON) & own_click()),
                (others, counted_click()),
            ):
                for code, first in conn.execute(
                    select(T_LINK_CLICKS.c.code, func.min(T_LINK_CLICKS.c.clicked_at))
                    .where(T_LINK_CLICKS.c.code.in_(chunk), where)
                    .group_by(T_LINK_CLICKS.c.code)
                ):
                    found[code] = first
        return {
            code: FirstClicks(own=own.get(code), others=others.get(code))
            for code in own.keys() | others.keys()
        }

    @staticmethod
    def _edges(conn: Connection, referrers: Iterable[Contact]) -> list[ReferralEdge]:
        """The conversions of everyone who referred the batch's referrers, and of those
        who referred them, up to :data:`domain.fraud.MAX_CYCLE_LENGTH` steps back."""
        frontier = {p for r in referrers if (p := party(r.account_id, r.contact_id))}
        seen = set(frontier)
        found: dict[str, ReferralEdge] = {}
        referee_contact = T_CONTACTS.alias("referee_contact")
        referrer_contact = T_CONTACTS.alias("referrer_contact")
        conversions = select(
            T_CONVERSIONS.c.conversion_id,
            T_CONVERSIONS.c.referee_account_id,
            T_CONVERSIONS.c.referee_contact_id,
            referee_contact.c.account_id.label("referee_contact_account"),
            T_CONVERSIONS.c.referrer_id,
            referrer_contact.c.account_id.label("referrer_account"),
        ).select_from(
            T_CONVERSIONS.outerjoin(
                referee_contact,
                referee_contact.c.contact_id == T_CONVERSIONS.c.referee_contact_id,
            ).outerjoin(
                referrer_contact,
                referrer_contact.c.contact_id == T_CONVERSIONS.c.referrer_id,
            )
        )
        for _ in range(MAX_CYCLE_LENGTH):
            if not frontier:
                break
            accounts = sorted(p.split(":", 1)[1] for p in frontier if p.startswith("account:"))
            contacts = sorted(p.split(":", 1)[1] for p in frontier if p.startswith("contact:"))
            next_frontier: set[str] = set()
            for kind, ids in (("account", accounts), ("contact", contacts)):
                for chunk in chunks(ids):
                    # A party's conversions are those naming it, or (an account) one of
                    # its contacts. One OR across the join would scan every conversion
                    # (no index serves it), for each chunk of each batch: two lookups.
                    if kind == "account":
                        wheres = [
                            T_CONVERSIONS.c.referee_account_id.in_(chunk),
                            T_CONVERSIONS.c.referee_contact_id.in_(
                                select(T_CONTACTS.c.contact_id).where(
                                    T_CONTACTS.c.account_id.in_(chunk)
                                )
                            ),
                        ]
                    else:
                        wheres = [T_CONVERSIONS.c.referee_contact_id.in_(chunk)]
                    rows = [
                        row
                        for where in wheres
                        for row in conn.execute(conversions.where(where)).mappings()
                    ]
                    for row in rows:
                        edge = ReferralEdge(
                            conversion_id=row["conversion_id"],
                            referee_account_id=row["referee_account_id"]
                            or row["referee_contact_account"],
                            referee_contact_id=row["referee_contact_id"],
                            referrer_id=row["referrer_id"],
                            referrer_account_id=row["referrer_account"],
                        )
                        found[edge.conversion_id] = edge
                        if edge.referrer is not None and edge.referrer not in seen:
                            next_frontier.add(edge.referrer)
            seen |= next_frontier
            frontier = next_frontier
        return list(found.values())
