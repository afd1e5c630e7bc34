"""The ``emails`` store: every email's bookkeeping, from queued to settled.

Asks (``kind`` ``"ask"``) and notifications (``kind`` ``"notification"``) share one
status machine: ``queued`` -> ``sending`` (claimed by one sender) -> ``accepted`` or
``failed``, or back to ``queued`` for a retry; a message left ``sending`` by a sender
that died becomes ``unknown`` for a person to check, never sent twice automatically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from domain.models import Contact, EmailEvent, EmailEventsApplied, EmailResult, Rejected
from domain.shards import Shard


class EmailStore(Protocol):
    """Outbox, sending status, notifications, suppressions and the provider's events."""

    # -- the local backend's outbox ----------------------------------------------------

    def write_outbox(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Keep each message of the local email backend once, by its message id.

        Args:
            rows: ``message_id``, ``kind``, ``to_name``, ``to_email``, ``subject``,
                ``body``, ``created_at``.

        Returns:
            How many were new.
        """
        ...

    def outbox(self, limit: int = 20) -> list[dict[str, Any]]:
        """The oldest messages of the local outbox (id, kind, name, subject, body)."""
        ...

    # -- sending -----------------------------------------------------------------------

    def mark_sending(self, kind: str, message_ids: Sequence[str], now: datetime) -> list[str]:
        """Claim queued messages for sending.

        Args:
            kind: ``"ask"`` or ``"notification"``.
            message_ids: the messages to claim.
            now: the claim's time (kept until the message is settled).

        Returns:
            The ids this caller claimed (another sender may have claimed the rest).
        """
        ...

    def expire_sending(self, kind: str, claimed_before: datetime) -> int:
        """Mark ``unknown`` the messages claimed before ``claimed_before`` and never
        settled; how many."""
        ...

    def record_email_results(
        self, kind: str, results: Sequence[EmailResult], now: datetime
    ) -> None:
        """Settle claimed messages with the provider's answers (a retryable one goes
        back to ``queued``).

        Args:
            kind: ``"ask"`` or ``"notification"``.
            results: one per message sent.
            now: the time an accepted message is recorded as sent.
        """
        ...

    def queued_emails(self, kind: str) -> int:
        """How many asks (``kind`` ``"ask"``) or notifications (any other) wait."""
        ...

    # -- notifications -----------------------------------------------------------------

    def queue_notifications(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Queue notifications (``notification_id``, ``contact_id``, ``kind``, ``data``),
        each once by its id; how many were new."""
        ...

    def notifications_to_send(
        self, after: str, limit: int, shard: Shard | None = None
    ) -> list[tuple[str, str, Contact, dict[str, Any]]]:
        """Queued notifications (id, kind, contact, data), by id after ``after``; with
        ``shard``, only those to the contacts in it (issue 17)."""
        ...

    # -- suppressions and the provider's events ----------------------------------------

    def suppressed(self, contact_ids: Iterable[str]) -> set[str]:
        """Those of ``contact_ids`` on the suppression list."""
        ...

    def suppress(self, contact_ids: Sequence[str], reason: str, now: datetime) -> int:
        """Put contacts on the suppression list (once each); how many were new."""
        ...

    def apply_email_events(
        self,
        events: Sequence[EmailEvent],
        now: datetime,
        rejected: Sequence[Rejected] = (),
    ) -> EmailEventsApplied:
        """Store the provider's events once each and suppress the contacts they call for
        (:func:`domain.suppression.suppression_reason`), in one transaction.

        Args:
            events: parsed, verified events, in any order.
            now: the time of receipt.
            rejected: items the parser refused, quarantined in the same transaction.

        Returns:
            The counts, and the contacts newly suppressed.
        """
        ...
