"""The local outbox: the email backend when no SendGrid key is configured.

Messages are stored in the ledger's ``email_outbox`` table, once per message id, and
the demo prints them from there. Nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from domain.models import EmailMessage, EmailOutcome, EmailResult
from integrations.ledger.sql import SqlLedger


class OutboxEmailSender:
    """Writes each email to the outbox table instead of sending it."""

    name = "outbox"

    def __init__(self, ledger: SqlLedger) -> None:
        self.ledger = ledger

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]:
        now = datetime.now(UTC)
        self.ledger.emails.write_outbox(
            [
                {
                    "message_id": m.message_id,
                    "kind": m.kind,
                    "to_name": m.to_name,
                    "to_email": m.to_email,
                    "subject": m.subject,
                    "body": m.data.get("text", ""),
                    "created_at": now,
                }
                for m in messages
            ]
        )
        return [
            EmailResult(m.message_id, EmailOutcome.ACCEPTED, provider_ref=f"outbox:{m.message_id}")
            for m in messages
        ]
