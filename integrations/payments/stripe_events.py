"""The Stripe events feed: the polling fallback behind the webhook endpoint.

Stripe keeps the events of the last 30 days listable at ``GET /v1/events``, newest
first. When the webhook endpoint was down (or a delivery was lost), listing the events
created since the last poll, minus an overlap, and storing each one in the inbox by its
id (a duplicate is ignored) recovers everything Stripe would have delivered, in the
same shape: the events are stored as plain dicts, exactly as a webhook body parses.

Only ids and counts reach errors and logs: an event's object may hold an address.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import stripe

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.models import PayoutOutcome
from domain.stripe_conversions import CONVERSION_EVENT_TYPES, LINK_EVENT_TYPES
from integrations.payments.stripe_rail import classify_stripe_error
from integrations.payments.throttle import (
    LIST_EVENTS,
    Throttle,
    no_throttle,
)

# Stripe's limits: at most 100 objects per page, at most 20 names in ``types``.
MAX_PAGE = 100
MAX_TYPES = 20
# What the conversion stage reads; add the other inbox readers' types (refunds...).
DEFAULT_TYPES: tuple[str, ...] = CONVERSION_EVENT_TYPES + LINK_EVENT_TYPES


class StripeEventFeed:
    """Lists Stripe events of chosen types created since a time, every page.

    Example::

        feed = StripeEventFeed(build_stripe_client(key, None, 2))
        for event in feed.since(int(last_seen.timestamp()) - 600):
            ledger.provider_events.store_stripe_event(event, now)
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        types: Sequence[str] = DEFAULT_TYPES,
        page_size: int = MAX_PAGE,
        throttle: Throttle | None = None,
    ) -> None:
        """Wrap a client built by :func:`~integrations.payments.stripe_rail.build_stripe_client`.

        Args:
            client: the Stripe client.
            types: the event types to list (exact names, at most 20); every stage that
                reads the inbox should find its types here, since the webhook endpoint
                and this feed fill the same inbox.
            page_size: events per request (1 to 100).
            throttle: called with the number of requests about to be made, before each
                one (the rails' shared Stripe rate limit).

        Raises:
            ValueError: no types, more than 20, or a page size outside 1..100.
        """
        if not types or len(types) > MAX_TYPES:
            raise ValueError(f"list 1 to {MAX_TYPES} event types, not {len(types)}")
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE}, not {page_size}")
        self._client = client
        self.types = tuple(types)
        self._page_size = page_size
        self._throttle: Throttle = throttle or no_throttle

    def since(self, created_gte: int) -> Iterator[dict[str, Any]]:
        """Every event of the feed's types created at or after ``created_gte``.

        Newest first, one page per request (``starting_after`` the last event of the
        previous page), as plain dicts shaped like a webhook body. An event created
        while the pages are read may be missed this time; the caller's next read
        starts from the newest ``created`` it saw, minus an overlap, and finds it.

        Args:
            created_gte: Unix time; events created before it are not listed.

        Yields:
            Each event, once per call.

        Raises:
            RetryableIntegrationError: a network error, rate limit or Stripe-side error.
            PermanentIntegrationError: Stripe refused the request (key, parameters).
        """
        after: str | None = None
        while True:
            params: stripe.params.EventListParams = {
                "created": {"gte": created_gte},
                "types": list(self.types),
                "limit": self._page_size,
            }
            if after is not None:
                params["starting_after"] = after
            self._throttle(1, endpoint=LIST_EVENTS)
            try:
                page = self._client.v1.events.list(params)
            except stripe.StripeError as exc:
                outcome, text = classify_stripe_error(exc)
                if outcome is PayoutOutcome.RETRYABLE:
                    raise RetryableIntegrationError(f"listing Stripe events: {text}") from None
                raise PermanentIntegrationError(f"listing Stripe events: {text}") from None
            events = [event.to_dict(for_json=True) for event in page.data]
            yield from events
            if not page.has_more or not events:
                return
            after = str(events[-1]["id"])
