"""The webhook inbox area of the ledger: SendGrid events applied once.

(Stripe events are kept by the ``provider_events`` store,
:mod:`integrations.ledger.provider_events`.)

:class:`WebhookLedger` is a mixin of :class:`~integrations.ledger.base.LedgerBase`
meant to join :class:`~integrations.ledger.sql.SqlLedger`'s bases. Every method is one
transaction, and every write is idempotent:

* an event is new only if neither ``provider_events`` (the ledger's record of every
  provider event applied, keyed by provider and event id) nor its own table (keyed by
  the event id) has it. Both inserts are ``ON CONFLICT DO NOTHING`` in one
  transaction, so a redelivery, or two deliveries racing, applies it once;
* suppressions are inserted the same way, so suppressing twice changes nothing.

Neither an email address nor a secret is stored here: SendGrid events reach a contact
only through our opaque message id, and their reasons are redacted again before
being stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, select

from domain.models import Rejected
from integrations.email.sendgrid_webhook import EmailEvent, EmailEventType
from integrations.ledger.base import (
    LedgerBase,
    chunks,
)
from integrations.ledger.tables import (
    EVENT_ID_CHARS,
    MESSAGE_ID_CHARS,
    REASON_CHARS,
    T_ASKS,
    T_EMAIL_EVENTS,
    T_NOTIFICATIONS,
    ProviderEventRow,
    QuarantineRow,
    SuppressionRow,
)

SENDGRID = "sendgrid"
QUARANTINE_STAGE = "webhook"


# Events after which we never email the contact again. A bounce only when hard: a
# "blocked" bounce is a refusal the address may recover from.
_SUPPRESSING = frozenset(
    {
        EmailEventType.BOUNCE,
        EmailEventType.UNSUBSCRIBE,
        EmailEventType.GROUP_UNSUBSCRIBE,
        EmailEventType.SPAMREPORT,
    }
)
# Reasons SendGrid gives for dropping mail to an address it will never deliver to.
# ("Invalid" alone is an invalid address; "Invalid SMTPAPI header" is our mistake.)
_FINAL_DROPS = ("bounced address", "unsubscribed address", "spam reporting address")
# The parser already redacts reasons; this repeats it because the mixin may be handed
# events built elsewhere, and an address must never reach the table.
_ADDRESS_IN_TEXT = re.compile(r"[^\s@\[\]<>()\"',;:]+@[^\s@\[\]<>()\"',;:]+")


@dataclass(frozen=True, slots=True)
class EmailEventsApplied:
    """What one batch of SendGrid events did to the ledger.

    Attributes:
        received: events handed in (after dropping repeats within the batch).
        new: events stored and applied for the first time.
        duplicates: events the ledger already had; nothing was done with them.
        unknown_messages: new events whose message id no ask or notification has;
            they are kept, and suppress nobody.
        rejected: items refused (by the parser, or here for ids too long to store),
            kept in the quarantine with their reason.
        suppressed: contacts suppressed by this batch and not before, by contact id.
    """

    received: int
    new: int
    duplicates: int
    unknown_messages: int
    rejected: int
    suppressed: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """The numbers only: safe to log and to answer with (no ids, no addresses)."""
        return {
            "received": self.received,
            "new": self.new,
            "duplicates": self.duplicates,
            "unknown_messages": self.unknown_messages,
            "rejected": self.rejected,
            "suppressed": len(self.suppressed),
        }


def suppression_reason(event: EmailEvent) -> str | None:
    """The suppression an event calls for (the event type), or None.

    Only a hard bounce suppresses: the parser words it ``"bounce"`` or
    ``"bounce: <detail>"``, while a block reads ``"blocked: ..."``.
    """
    if event.type is EmailEventType.DROPPED:
        # SendGrid drops mail to addresses on its own bounce, unsubscribe and spam
        # lists, or invalid ones: those are as final as the events that put them there.
        # Other drops (a bad header, content) are ours to fix, not the contact's.
        reason = (event.reason or "").strip().lower()
        if reason == "invalid" or any(marker in reason for marker in _FINAL_DROPS):
            return f"dropped: {reason}"[:64]
        return None
    if event.type not in _SUPPRESSING:
        return None
    if event.type is EmailEventType.BOUNCE:
        reason = event.reason or ""
        if not (reason == "bounce" or reason.startswith("bounce:")):
            return None
    return event.type.value


class WebhookLedger(LedgerBase):
    """The ledger's webhook inbox; a mixin for :class:`~integrations.ledger.sql.SqlLedger`."""

    # -- SendGrid --------------------------------------------------------------------

    def apply_email_events(
        self,
        events: Sequence[EmailEvent],
        now: datetime,
        rejected: Sequence[Rejected] = (),
    ) -> EmailEventsApplied:
        """Store SendGrid events once each and suppress the contacts they call for.

        Each new event is kept with the contact its message id leads to (through the
        asks and the notifications), or none for a message id that is not ours. A new
        hard bounce, unsubscribe, group unsubscribe or spam report suppresses that
        contact, with the event type as the reason; other events are only kept. Items
        refused by the parser go to the quarantine, in the same transaction.

        Args:
            events: parsed, verified events (see ``parse_events``), in any order.
            now: the time of receipt, timezone-aware.
            rejected: items the parser refused, to quarantine.

        Returns:
            The counts, and the contacts newly suppressed.
        """
        storable, too_long = _storable(events)
        refused = [*rejected, *too_long]
        # Sorted so that two transactions inserting overlapping batches take their row
        # locks in the same order (Postgres would otherwise deadlock one of them).
        storable.sort(key=lambda e: e.event_id)
        with self._begin() as conn:
            if refused:
                self._insert_ignore(
                    conn,
                    QuarantineRow,
                    self._quarantine_rows(refused, QUARANTINE_STAGE, now),
                    QuarantineRow.id,
                )
            contacts = self._message_contacts(conn, sorted({e.message_id for e in storable}))
            recorded = self._record_provider_events(
                conn, SENDGRID, [(e.event_id, e.type.value) for e in storable], now
            )
            stored = set(
                self._insert_ignore(
                    conn,
                    T_EMAIL_EVENTS,
                    [
                        {
                            "sg_event_id": e.event_id,
                            "message_id": e.message_id,
                            "type": e.type.value,
                            "occurred_at": e.occurred_at,
                            "reason": _redacted(e.reason),
                            "contact_id": contacts.get(e.message_id),
                            "received_at": now,
                        }
                        for e in storable
                    ],
                    T_EMAIL_EVENTS.c.sg_event_id,
                )
            )
            new = [e for e in storable if e.event_id in recorded and e.event_id in stored]
            suppressed = self._suppress_for(conn, new, contacts, now)
        return EmailEventsApplied(
            received=len(storable) + len(too_long),
            new=len(new),
            duplicates=len(storable) - len(new),
            unknown_messages=sum(1 for e in new if e.message_id not in contacts),
            rejected=len(refused),
            suppressed=suppressed,
        )

    def _message_contacts(self, conn: Connection, message_ids: Sequence[str]) -> dict[str, str]:
        """Message id -> contact id, for asks and notifications (one id space: UUIDs)."""
        found: dict[str, str] = {}
        for table, pk in (
            (T_ASKS, T_ASKS.c.ask_id),
            (T_NOTIFICATIONS, T_NOTIFICATIONS.c.notification_id),
        ):
            for chunk in chunks(message_ids):
                for message_id, contact_id in conn.execute(
                    select(pk, table.c.contact_id).where(pk.in_(chunk))
                ):
                    found[message_id] = contact_id
        return found

    def _suppress_for(
        self,
        conn: Connection,
        events: Iterable[EmailEvent],
        contacts: Mapping[str, str],
        now: datetime,
    ) -> tuple[str, ...]:
        reasons: dict[str, str] = {}
        # The earliest suppressing event of a contact gives the reason.
        for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
            reason = suppression_reason(event)
            contact_id = contacts.get(event.message_id)
            if reason is not None and contact_id is not None:
                reasons.setdefault(contact_id, reason)
        inserted = self._insert_ignore(
            conn,
            SuppressionRow,
            [
                {"contact_id": contact_id, "reason": reason, "created_at": now}
                for contact_id, reason in sorted(reasons.items())
            ],
            SuppressionRow.contact_id,
        )
        return tuple(sorted(inserted))

    # -- shared ----------------------------------------------------------------------

    def _record_provider_events(
        self, conn: Connection, provider: str, events: Sequence[tuple[str, str]], now: datetime
    ) -> set[str]:
        """Record (event id, type) pairs in ``provider_events``; the ids that were new."""
        return set(
            self._insert_ignore(
                conn,
                ProviderEventRow,
                [
                    {"provider": provider, "event_id": event_id, "type": type_, "received_at": now}
                    for event_id, type_ in events
                ],
                ProviderEventRow.event_id,
            )
        )


def _storable(events: Sequence[EmailEvent]) -> tuple[list[EmailEvent], list[Rejected]]:
    """Events whose ids fit the columns, once per event id; the others refused."""
    kept: dict[str, EmailEvent] = {}
    refused: list[Rejected] = []
    for event in events:
        if len(event.event_id) > EVENT_ID_CHARS:
            refused.append(_refuse_email(event, "sg_event_id"))
        elif len(event.message_id) > MESSAGE_ID_CHARS:
            refused.append(_refuse_email(event, "message_id"))
        else:
            kept.setdefault(event.event_id, event)
    return list(kept.values()), refused


def _refuse_email(event: EmailEvent, field_: str) -> Rejected:
    return Rejected(
        SENDGRID,
        f"sendgrid-webhook:{event.event_id[:64]}",
        field_,
        f"{field_} is longer than the ledger stores",
    )


def _redacted(reason: str | None) -> str | None:
    if reason is None:
        return None
    return _ADDRESS_IN_TEXT.sub("<address>", reason)[:REASON_CHARS]
