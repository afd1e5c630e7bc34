"""The ``stripe`` store in memory: given answers, and links applied to given owners."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from domain.models import Contact, Milestone
from domain.stores.provider_events import StoredStripeEvent
from domain.stores.stripe import PaymentLink, PaymentsLinked


class InMemoryStripeStore:
    """A :class:`domain.stores.stripe.StripeStore` over dicts, recording its calls.

    ``customer_codes``, ``referees``, ``invoice_events`` and ``links`` are what the
    reads answer; ``invoice_owners`` (invoice id -> conversion id) stands for the
    conversions' payments, and :meth:`link_stripe_payments` adds a link's ids to
    ``linked_refs`` of its owner (recurring rewards are not modelled here).
    """

    def __init__(self) -> None:
        self.customer_codes: dict[str, dict[Milestone, set[str]]] = {}
        self.referees: dict[str, Contact] = {}
        self.invoice_events: dict[str, list[dict[str, Any]]] = {}
        self.links: list[StoredStripeEvent] = []
        self.invoice_owners: dict[str, str] = {}
        self.linked_refs: dict[str, set[str]] = {}
        self.processed: set[str] = set()
        self.cursors: dict[str, str] = {}
        self.calls: list[tuple[str, Any]] = []

    def stripe_customer_codes(
        self, customers: Iterable[str]
    ) -> dict[str, dict[Milestone, set[str]]]:
        wanted = set(customers)
        return {
            c: {m: set(codes) for m, codes in by.items()}
            for c, by in self.customer_codes.items()
            if c in wanted
        }

    def stripe_referees(self, customers: Iterable[str]) -> dict[str, Contact]:
        wanted = set(customers)
        return {c: r for c, r in self.referees.items() if c in wanted}

    def stripe_invoice_events(self, invoice_ids: Iterable[str]) -> list[dict[str, Any]]:
        return [e for i in sorted(set(invoice_ids)) for e in self.invoice_events.get(i, [])]

    def stripe_events_to_link(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        waiting = sorted(
            (e for e in self.links if e.event_id not in self.processed),
            key=lambda e: (e.created_at, e.event_id),
        )
        if after is not None:
            waiting = [e for e in waiting if (e.created_at, e.event_id) > after]
        return waiting[:limit]

    def save_cursor(self, source: str, cursor: str, now: datetime) -> None:
        self.calls.append(("save_cursor", (source, cursor)))
        self.cursors[source] = cursor

    def link_stripe_payments(
        self, links: Sequence[PaymentLink], give_up_before: datetime, now: datetime
    ) -> PaymentsLinked:
        self.calls.append(("link_stripe_payments", [link.event_id for link in links]))
        linked = closed = waiting = 0
        for link in links:
            owner = self.invoice_owners.get(link.refs[0]) if link.refs else None
            if owner is not None:
                self.linked_refs.setdefault(owner, set()).update(link.refs[1:])
                linked += 1
                self.processed.add(link.event_id)
            elif not link.refs or link.created_at < give_up_before:
                closed += 1
                self.processed.add(link.event_id)
            else:
                waiting += 1
        return PaymentsLinked(linked, closed, waiting)
