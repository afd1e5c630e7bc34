"""The ``emails`` store in memory: messages with their status, suppressions, events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.models import (
    Contact,
    EmailEvent,
    EmailEventsApplied,
    EmailOutcome,
    EmailResult,
    Rejected,
)
from domain.shards import Shard
from domain.suppression import suppressions

_STATUS = {
    EmailOutcome.ACCEPTED: "accepted",
    EmailOutcome.FAILED: "failed",
    EmailOutcome.RETRYABLE: "queued",
}


@dataclass
class Message:
    """An ask or a notification as the store tracks it."""

    contact_id: str
    status: str = "queued"
    sent_at: datetime | None = None
    provider_ref: str | None = None
    error: str | None = None
    kind: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class InMemoryEmailStore:
    """A recording fake of :class:`domain.stores.emails.EmailStore`.

    Asks are queued by the asks area in SQL (one table); here a test puts them in
    ``messages["ask"]`` itself, and the contacts notifications go to in ``contacts``.

    Attributes:
        messages: kind (``ask``, ``notification``) -> message id -> message.
        contacts: contact id -> contact, for :meth:`notifications_to_send`.
        outbox_rows: the local backend's messages by message id, in arrival order.
        suppressions: contact id -> reason.
        events: stored provider events by event id.
        quarantined: refused items.
        calls: (method, arguments) of every call, in order.
    """

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Message]] = {"ask": {}, "notification": {}}
        self.contacts: dict[str, Contact] = {}
        self.outbox_rows: dict[str, dict[str, Any]] = {}
        self.suppressions: dict[str, str] = {}
        self.events: dict[str, EmailEvent] = {}
        self.quarantined: list[Rejected] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def write_outbox(self, rows: Sequence[Mapping[str, Any]]) -> int:
        self.calls.append(("write_outbox", (list(rows),)))
        new = 0
        for row in rows:
            if row["message_id"] not in self.outbox_rows:
                self.outbox_rows[row["message_id"]] = dict(row)
                new += 1
        return new

    def outbox(self, limit: int = 20) -> list[dict[str, Any]]:
        self.calls.append(("outbox", (limit,)))
        rows = sorted(self.outbox_rows.values(), key=lambda r: (r["created_at"], r["message_id"]))
        keys = ("message_id", "kind", "to_name", "subject", "body")
        return [{k: r[k] for k in keys} for r in rows[:limit]]

    def mark_sending(self, kind: str, message_ids: Sequence[str], now: datetime) -> list[str]:
        self.calls.append(("mark_sending", (kind, list(message_ids), now)))
        claimed = []
        for message_id in message_ids:
            message = self.messages[kind].get(message_id)
            if message is not None and message.status == "queued":
                message.status, message.sent_at = "sending", now
                claimed.append(message_id)
        return claimed

    def expire_sending(self, kind: str, claimed_before: datetime) -> int:
        self.calls.append(("expire_sending", (kind, claimed_before)))
        expired = 0
        for message in self.messages[kind].values():
            if message.status == "sending" and message.sent_at and message.sent_at < claimed_before:
                message.status = "unknown"
                expired += 1
        return expired

    def record_email_results(
        self, kind: str, results: Sequence[EmailResult], now: datetime
    ) -> None:
        self.calls.append(("record_email_results", (kind, list(results), now)))
        for result in results:
            message = self.messages[kind].get(result.message_id)
            if message is None or message.status != "sending":
                continue
            message.status = _STATUS[result.outcome]
            message.provider_ref = result.provider_ref
            message.error = result.error[:512] if result.error else None
            message.sent_at = now if result.outcome is EmailOutcome.ACCEPTED else None

    def queued_emails(self, kind: str) -> int:
        self.calls.append(("queued_emails", (kind,)))
        table = self.messages["ask" if kind == "ask" else "notification"]
        return sum(1 for m in table.values() if m.status == "queued")

    def queue_notifications(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        self.calls.append(("queue_notifications", (list(rows), now)))
        table = self.messages["notification"]
        new = 0
        for row in rows:
            if row["notification_id"] not in table:
                table[row["notification_id"]] = Message(
                    row["contact_id"], kind=row["kind"], data=dict(row["data"])
                )
                new += 1
        return new

    def notifications_to_send(
        self, after: str, limit: int, shard: Shard | None = None
    ) -> list[tuple[str, str, Contact, dict[str, Any]]]:
        args = (after, limit) if shard is None else (after, limit, shard)
        self.calls.append(("notifications_to_send", args))
        return [
            (message_id, m.kind, self.contacts[m.contact_id], dict(m.data))
            for message_id, m in sorted(self.messages["notification"].items())
            if m.status == "queued"
            and message_id > after
            and m.contact_id in self.contacts
            and (shard is None or shard.holds(m.contact_id))
        ][:limit]

    def suppressed(self, contact_ids: Iterable[str]) -> set[str]:
        ids = set(contact_ids)
        self.calls.append(("suppressed", (sorted(ids),)))
        return ids & set(self.suppressions)

    def suppress(self, contact_ids: Sequence[str], reason: str, now: datetime) -> int:
        self.calls.append(("suppress", (list(contact_ids), reason, now)))
        new = [c for c in dict.fromkeys(contact_ids) if c not in self.suppressions]
        for contact_id in new:
            self.suppressions[contact_id] = reason
        return len(new)

    def apply_email_events(
        self,
        events: Sequence[EmailEvent],
        now: datetime,
        rejected: Sequence[Rejected] = (),
    ) -> EmailEventsApplied:
        self.calls.append(("apply_email_events", (list(events), now, list(rejected))))
        self.quarantined += rejected
        batch = list({e.event_id: e for e in reversed(events)}.values())
        new = [e for e in batch if e.event_id not in self.events]
        for event in new:
            self.events[event.event_id] = event
        contacts = {
            message_id: m.contact_id
            for table in self.messages.values()
            for message_id, m in table.items()
        }
        suppressed = []
        for contact_id, reason in sorted(suppressions(new, contacts).items()):
            if contact_id not in self.suppressions:
                self.suppressions[contact_id] = reason
                suppressed.append(contact_id)
        return EmailEventsApplied(
            received=len(batch),
            new=len(new),
            duplicates=len(batch) - len(new),
            unknown_messages=sum(1 for e in new if e.message_id not in contacts),
            rejected=len(rejected),
            suppressed=tuple(suppressed),
        )
