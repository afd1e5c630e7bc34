"""The ``provider_events`` store: the Stripe inbox, and every provider event seen once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class StoredStripeEvent:
    """A Stripe event from the inbox.

    Attributes:
        event_id: Stripe's event id (``evt_...``).
        type: the event type, e.g. ``charge.refunded``.
        created_at: when Stripe created the event (aware, UTC): the order of events.
        livemode: whether it came from live mode (test mode events are kept too).
        object_id: ``data.object.id``, if the event had one.
        payload: the event as received.
        received_at: when the ledger first stored it.
    """

    event_id: str
    type: str
    created_at: datetime
    livemode: bool
    object_id: str | None
    payload: dict[str, Any]
    received_at: datetime


class ProviderEventStore(Protocol):
    """Stripe events kept once and read oldest first; provider events recorded once."""

    def store_stripe_event(self, event: Mapping[str, Any], now: datetime) -> bool:
        """Keep a (verified) Stripe event in the inbox, once.

        Args:
            event: the event as received (``id``, ``type``, ``created``, ``livemode``,
                ``data.object``...).
            now: the time of receipt, timezone-aware.

        Returns:
            True the first time the event id is seen, False ever after.

        Raises:
            InputRejected: the event lacks a field the inbox needs, or an id or type
                is longer than the ledger stores.
        """
        ...

    def unprocessed_stripe_events(
        self, types: Sequence[str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        """Stripe events no stage has marked processed, oldest ``created`` first.

        Args:
            types: only these event types; ``None`` for every type.
            limit: at most this many.
        """
        ...

    def mark_stripe_events_processed(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark events processed; returns how many were not already (a rerun marks 0)."""
        ...

    def record_provider_event(
        self, provider: str, event_id: str, type_: str, now: datetime
    ) -> bool:
        """True the first time ``(provider, event_id)`` is seen, False ever after."""
        ...
