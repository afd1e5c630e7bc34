"""SendGrid's email events in the ledger: what may be stored, and whose message it was.

The ``emails`` store (:class:`~integrations.ledger.emails.SqlEmailStore`) applies a
batch with these, in one transaction: an event is new only if neither
``provider_events`` (keyed by provider and event id) nor ``email_events`` (keyed by
``sg_event_id``) has it, both inserts ``ON CONFLICT DO NOTHING``, so a redelivery, or two
deliveries racing, applies it once. Which events suppress a contact is the domain's
rule (:mod:`domain.suppression`).

No email address is stored: an event reaches a contact only through our opaque message
id, and its reason is redacted again before being stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from domain.models import EmailEvent, Rejected
from integrations.ledger.base import chunks
from integrations.ledger.tables import (
    EVENT_ID_CHARS,
    MESSAGE_ID_CHARS,
    REASON_CHARS,
    T_ASKS,
    T_NOTIFICATIONS,
)

SENDGRID = "sendgrid"
QUARANTINE_STAGE = "webhook"

# The parser already redacts reasons; this repeats it because the store may be handed
# events built elsewhere, and an address must never reach the table.
_ADDRESS_IN_TEXT = re.compile(r"[^\s@\[\]<>()\"',;:]+@[^\s@\[\]<>()\"',;:]+")


def storable(events: Sequence[EmailEvent]) -> tuple[list[EmailEvent], list[Rejected]]:
    """Events whose ids fit the columns, once per event id; the others refused."""
    kept: dict[str, EmailEvent] = {}
    refused: list[Rejected] = []
    for event in events:
        if len(event.event_id) > EVENT_ID_CHARS:
            refused.append(_refuse(event, "sg_event_id"))
        elif len(event.message_id) > MESSAGE_ID_CHARS:
            refused.append(_refuse(event, "message_id"))
        else:
            kept.setdefault(event.event_id, event)
    return list(kept.values()), refused


def message_contacts(conn: Connection, message_ids: Sequence[str]) -> dict[str, str]:
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


def event_rows(
    events: Sequence[EmailEvent], contacts: dict[str, str], now: datetime
) -> list[dict[str, Any]]:
    """The ``email_events`` rows of ``events``, reasons redacted."""
    return [
        {
            "sg_event_id": e.event_id,
            "message_id": e.message_id,
            "type": e.type.value,
            "occurred_at": e.occurred_at,
            "reason": redacted(e.reason),
            "contact_id": contacts.get(e.message_id),
            "received_at": now,
        }
        for e in events
    ]


def redacted(reason: str | None) -> str | None:
    """``reason`` with any address in it replaced, cut to the column's size."""
    if reason is None:
        return None
    return _ADDRESS_IN_TEXT.sub("<address>", reason)[:REASON_CHARS]


def _refuse(event: EmailEvent, field_: str) -> Rejected:
    return Rejected(
        SENDGRID,
        f"sendgrid-webhook:{event.event_id[:64]}",
        field_,
        f"{field_} is longer than the ledger stores",
    )
