"""The ``stripe`` store: what the Stripe conversion stages read, and payment links."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.models import Contact, Milestone
from domain.stores.provider_events import StoredStripeEvent


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


class StripeStore(Protocol):
    """The Stripe side of conversions: customers, invoices, links, the polling cursor."""

    def stripe_customer_codes(
        self, customers: Iterable[str]
    ) -> dict[str, dict[Milestone, set[str]]]:
        """Stripe customer -> milestone -> the referral codes of its conversions."""
        ...

    def stripe_referees(self, customers: Iterable[str]) -> dict[str, Contact]:
        """Stripe customer -> the CRM contact that names it (the first by id)."""
        ...

    def stripe_invoice_events(self, invoice_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The ``invoice.paid`` events of ``invoice_ids`` in the inbox, processed or not."""
        ...

    def stripe_events_to_link(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        """Unprocessed payment-link events, oldest first, after ``after``."""
        ...

    def save_cursor(self, source: str, cursor: str, now: datetime) -> None:
        """Keep ``source``'s read position, e.g. ``stripe-events``."""
        ...

    def link_stripe_payments(
        self, links: Sequence[PaymentLink], give_up_before: datetime, now: datetime
    ) -> PaymentsLinked:
        """Give the conversion (and the recurring rewards) owning each link's invoice the
        link's payment ids, in one transaction that marks the linked events processed.

        Args:
            links: the links read from the inbox.
            give_up_before: links older than this stop waiting for their conversion.
            now: when this is recorded, timezone-aware.

        Returns:
            How many events linked ids, were closed without a conversion, or wait.
        """
        ...
