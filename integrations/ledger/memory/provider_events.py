"""The ``provider_events`` store in memory: the Stripe inbox as a dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from domain.stores.provider_events import StoredStripeEvent
from integrations.ledger.provider_events import STRIPE, _stripe_row


class InMemoryProviderEventStore:
    """A :class:`domain.stores.provider_events.ProviderEventStore` over dicts, recording
    calls. Events are checked as the SQL store checks them (the same row builder)."""

    def __init__(self) -> None:
        self.events: dict[str, StoredStripeEvent] = {}
        self.processed: dict[str, datetime] = {}
        self.seen: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, Any]] = []

    def store_stripe_event(self, event: Mapping[str, Any], now: datetime) -> bool:
        row = _stripe_row(event, now)
        self.calls.append(("store_stripe_event", row["event_id"]))
        recorded = self._record(STRIPE, row["event_id"])
        if row["event_id"] in self.events or not recorded:
            return False
        self.events[row["event_id"]] = StoredStripeEvent(
            event_id=row["event_id"],
            type=row["type"],
            created_at=row["created_at"],
            livemode=row["livemode"],
            object_id=row["object_id"],
            payload=dict(row["payload"]),
            received_at=now,
        )
        return recorded

    def unprocessed_stripe_events(
        self, types: Sequence[str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        waiting = [
            e
            for e in self.events.values()
            if e.event_id not in self.processed and (types is None or e.type in types)
        ]
        return sorted(waiting, key=lambda e: (e.created_at, e.event_id))[:limit]

    def mark_stripe_events_processed(self, event_ids: Sequence[str], now: datetime) -> int:
        self.calls.append(("mark_stripe_events_processed", sorted(set(event_ids))))
        marked = 0
        for event_id in sorted(set(event_ids)):
            if event_id in self.events and event_id not in self.processed:
                self.processed[event_id] = now
                marked += 1
        return marked

    def record_provider_event(
        self, provider: str, event_id: str, type_: str, now: datetime
    ) -> bool:
        self.calls.append(("record_provider_event", (provider, event_id)))
        return self._record(provider, event_id)

    def _record(self, provider: str, event_id: str) -> bool:
        # Keyed by (provider, event id), as ``provider_events``' primary key is.
        if (provider, event_id) in self.seen:
            return False
        self.seen.add((provider, event_id))
        return True
