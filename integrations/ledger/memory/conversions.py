"""The ``conversions`` store in memory: conversions, their Stripe ids, coded events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.models import Contact, Conversion, Milestone, Rejected, SourceEvent
from domain.placement import (
    EarlierConversion,
    KnownConversion,
    KnownPayment,
    NewPayment,
    PlacementFacts,
)
from domain.stripe_conversions import StripeConversion


@dataclass(frozen=True, slots=True)
class _Payment:
    conversion_id: str
    customer: str | None
    created_at: datetime


class InMemoryConversionStore:
    """A :class:`domain.stores.conversions.ConversionStore` over dicts, recording calls.

    It orders "earliest" as the SQL store does (by creation time, then id), so a batch
    placed here comes to what it comes to on the ledger. ``record_conversions`` stores
    no touches here: the ``touchpoints`` fake keeps those, through the use cases.
    """

    def __init__(
        self,
        events: Mapping[int, SourceEvent] | None = None,
        owners: Mapping[str, Contact] | None = None,
    ) -> None:
        self.events: dict[int, SourceEvent] = dict(events or {})
        self.converted_events: dict[int, datetime] = {}
        self.owners: dict[str, Contact] = dict(owners or {})
        self.conversions: dict[str, tuple[Conversion, datetime]] = {}
        self.payments: dict[str, _Payment] = {}
        self.quarantined: list[Rejected] = []
        self.notices: dict[str, dict[str, Any]] = {}
        self.locks = 0
        self.calls: list[tuple[str, Any]] = []

    def events_to_convert(self, after_id: int, limit: int) -> list[tuple[int, SourceEvent]]:
        waiting = sorted(
            (i, e)
            for i, e in self.events.items()
            if i > after_id and e.referral_code is not None and i not in self.converted_events
        )
        return waiting[:limit]

    def code_owners(self, codes: Iterable[str]) -> dict[str, Contact]:
        return {c: self.owners[c] for c in set(codes) if c in self.owners}

    def record_conversions(
        self,
        event_ids: Sequence[int],
        conversions: Sequence[Conversion],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        self.calls.append(("record_conversions", [c.conversion_id for c in conversions]))
        new = sum(self.insert(c, now) for c in conversions)
        self.quarantine_rejected(rejected, now)
        for event_id in event_ids:
            self.converted_events[event_id] = now
        return new

    def lock(self) -> None:
        self.locks += 1
        self.calls.append(("lock", None))

    def payment_owner(self, refs: Sequence[str], milestone: Milestone) -> str | None:
        owned = sorted(
            (p.created_at, ref, p.conversion_id)
            for ref in set(refs)
            if (p := self.payments.get(ref)) is not None
            and self.conversions[p.conversion_id][0].milestone is milestone
        )
        return owned[0][2] if owned else None

    def earliest_of_referee(
        self, conversion: Conversion, customer: str | None
    ) -> EarlierConversion | None:
        if not (conversion.referee_account_id or conversion.referee_contact_id or customer):
            return None
        paid_by = {p.conversion_id for p in self.payments.values() if p.customer == customer}
        same = sorted(
            (created, c.conversion_id, c)
            for c, created in self.conversions.values()
            if c.milestone is conversion.milestone
            and (
                (
                    conversion.referee_account_id is not None
                    and c.referee_account_id == conversion.referee_account_id
                )
                or (
                    conversion.referee_contact_id is not None
                    and c.referee_contact_id == conversion.referee_contact_id
                )
                or (customer is not None and c.conversion_id in paid_by)
            )
        )
        if not same:
            return None
        _, conversion_id, earliest = same[0]
        has_stripe = any(p.conversion_id == conversion_id for p in self.payments.values())
        return EarlierConversion(conversion_id, earliest.referral_code, has_stripe)

    def insert(self, conversion: Conversion, now: datetime) -> bool:
        self.calls.append(("insert", conversion.conversion_id))
        if conversion.conversion_id in self.conversions:
            return False
        self.conversions[conversion.conversion_id] = (conversion, now)
        return True

    def add_payments(self, conversion_id: str, stripe: StripeConversion, now: datetime) -> int:
        self.calls.append(("add_payments", (conversion_id, stripe.payment_refs)))
        added = 0
        for ref in stripe.payment_refs:
            if ref not in self.payments:
                self.payments[ref] = _Payment(conversion_id, stripe.customer, now)
                added += 1
        return added

    def placement_facts(
        self, items: Sequence[tuple[Conversion, StripeConversion | None]]
    ) -> PlacementFacts:
        self.calls.append(("placement_facts", [c.conversion_id for c, _ in items]))
        accounts = {c.referee_account_id for c, _ in items if c.referee_account_id}
        contacts = {c.referee_contact_id for c, _ in items if c.referee_contact_id}
        customers = {s.customer for _, s in items if s is not None and s.customer}
        refs = {r for _, s in items if s is not None for r in s.payment_refs}
        ids = {c.conversion_id for c, _ in items}
        events = {c.source_event for c, _ in items}
        wanted = {
            conversion_id
            for conversion_id, (c, _) in self.conversions.items()
            if c.referee_account_id in accounts
            or c.referee_contact_id in contacts
            or conversion_id in ids
            or c.source_event in events
        }
        wanted |= {
            p.conversion_id
            for ref, p in self.payments.items()
            if ref in refs or (p.customer is not None and p.customer in customers)
        }
        return PlacementFacts(
            [
                KnownConversion(
                    c.conversion_id,
                    c.source_event,
                    c.referral_code,
                    c.milestone,
                    c.referee_account_id,
                    c.referee_contact_id,
                    created,
                )
                for c, created in (self.conversions[i] for i in sorted(wanted))
            ],
            [
                KnownPayment(ref, p.conversion_id, p.customer, p.created_at)
                for ref, p in sorted(self.payments.items())
                if p.conversion_id in wanted
            ],
        )

    def record_placed(
        self, conversions: Sequence[Conversion], payments: Sequence[NewPayment], now: datetime
    ) -> tuple[set[str], int]:
        self.calls.append(("record_placed", [c.conversion_id for c in conversions]))
        events = {c.source_event for c, _ in self.conversions.values()}
        inserted: set[str] = set()
        for conversion in conversions:
            if conversion.conversion_id in self.conversions or conversion.source_event in events:
                continue
            self.conversions[conversion.conversion_id] = (conversion, now)
            events.add(conversion.source_event)
            inserted.add(conversion.conversion_id)
        linked = 0
        for new in payments:
            if new.payment_ref not in self.payments:
                self.payments[new.payment_ref] = _Payment(
                    new.conversion_id, new.stripe.customer, now
                )
                linked += 1
        return inserted, linked

    def mark_events_converted(self, event_ids: Sequence[int], now: datetime) -> int:
        self.calls.append(("mark_events_converted", sorted(set(event_ids))))
        marked = 0
        for event_id in sorted(set(event_ids)):
            if event_id not in self.converted_events:
                self.converted_events[event_id] = now
                marked += 1
        return marked

    def quarantine_rejected(self, rejected: Sequence[Rejected], now: datetime) -> int:
        self.quarantined += [r for r in rejected if r not in self.quarantined]
        return len(rejected)

    def queue_notices(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        queued = 0
        for row in rows:
            if row["notification_id"] not in self.notices:
                self.notices[row["notification_id"]] = dict(row)
                queued += 1
        return queued
