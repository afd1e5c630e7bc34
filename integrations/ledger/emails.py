"""The ``emails`` store: the bookkeeping of every email the program sends.

Asks and notifications share one status machine (``queued`` -> ``sending`` ->
``accepted`` / ``failed`` / back to ``queued`` for a retry, or ``unknown`` when a sender
died mid-call), the local backend's outbox, the suppression list, and SendGrid's
events, which suppress the contacts they call for (:mod:`domain.suppression`; the
helpers in :mod:`integrations.ledger.email_events`). Typed by
:class:`domain.stores.emails.EmailStore`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from domain.models import (
    Contact,
    EmailEvent,
    EmailEventsApplied,
    EmailOutcome,
    EmailResult,
    ReferrerType,
    Rejected,
)
from domain.shards import Shard
from domain.suppression import suppressions
from integrations.ledger.base import LedgerBase
from integrations.ledger.email_events import (
    QUARANTINE_STAGE,
    SENDGRID,
    event_rows,
    message_contacts,
    storable,
)
from integrations.ledger.notifications import queue_notifications
from integrations.ledger.shards import in_shard
from integrations.ledger.tables import (
    T_ASKS,
    T_EMAIL_EVENTS,
    T_NOTIFICATIONS,
    AskRow,
    ContactRow,
    EmailOutboxRow,
    NotificationRow,
    ProviderEventRow,
    QuarantineRow,
    SuppressionRow,
)

_MESSAGE_TABLES: dict[str, Table] = {"ask": T_ASKS, "notification": T_NOTIFICATIONS}
# Results alike from this many messages on are recorded by one UPDATE over their ids.
_GROUP_MIN = 16


class SqlEmailStore(LedgerBase):
    """Outbox, sending status, notifications, suppressions and SendGrid's events."""

    def write_outbox(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """The local email backend: keep each message once, by its message id."""
        with self._begin() as conn:
            return len(self._insert_ignore(conn, EmailOutboxRow, rows, EmailOutboxRow.message_id))

    def outbox(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(
                        EmailOutboxRow.message_id,
                        EmailOutboxRow.kind,
                        EmailOutboxRow.to_name,
                        EmailOutboxRow.subject,
                        EmailOutboxRow.body,
                    )
                    .order_by(EmailOutboxRow.created_at, EmailOutboxRow.message_id)
                    .limit(limit)
                ).mappings()
            ]

    def mark_sending(self, kind: str, message_ids: Sequence[str], now: datetime) -> list[str]:
        """Claim queued messages for sending; returns those this caller claimed.

        A message left in ``sending`` by a crash is never sent again automatically:
        :meth:`expire_sending` marks it ``unknown`` for a person to check, because the
        email may already have gone out and a second ask is worse than a missing one.
        ``sent_at`` holds the claim time while the message is ``sending``.
        """
        table = _MESSAGE_TABLES[kind]
        pk = table.primary_key.columns.values()[0]
        if not message_ids:
            return []
        with self._begin() as conn:
            return list(
                conn.execute(
                    update(table)
                    .where(self._one_of(pk, message_ids), table.c.status == "queued")
                    .values(status="sending", sent_at=now)
                    .returning(pk)
                ).scalars()
            )

    def expire_sending(self, kind: str, claimed_before: datetime) -> int:
        """Mark ``unknown`` the messages claimed before ``claimed_before`` and never
        settled: their sender died between the call and the commit."""
        table = _MESSAGE_TABLES[kind]
        with self._begin() as conn:
            return conn.execute(
                update(table)
                .where(table.c.status == "sending", table.c.sent_at < claimed_before)
                .values(status="unknown")
            ).rowcount

    def record_email_results(
        self, kind: str, results: Sequence[EmailResult], now: datetime
    ) -> None:
        table = _MESSAGE_TABLES[kind]
        pk = table.primary_key.columns.values()[0]
        status = {
            EmailOutcome.ACCEPTED: "accepted",
            EmailOutcome.FAILED: "failed",
            EmailOutcome.RETRYABLE: "queued",
        }
        if not results:
            return
        # A provider request settles up to 1,000 messages alike (accepted, one shared
        # provider ref): each large group of identical outcomes is one UPDATE over its
        # ids, far cheaper than a statement run per row. Outcomes of their own (a
        # backend with a ref per message, scattered failures) go row by row, in one
        # executemany.
        groups: dict[tuple[str, str | None, str | None, datetime | None], list[str]] = {}
        seen: set[str] = set()
        for r in results:
            # A message listed twice is settled by its first result, as row by row.
            if r.message_id in seen:
                continue
            seen.add(r.message_id)
            key = (
                status[r.outcome],
                r.provider_ref,
                r.error[:512] if r.error else None,
                now if r.outcome is EmailOutcome.ACCEPTED else None,
            )
            groups.setdefault(key, []).append(r.message_id)
        singles = [
            {"m_id": m_id, "m_status": s, "m_ref": ref, "m_error": error, "m_sent": sent_at}
            for (s, ref, error, sent_at), ids in groups.items()
            if len(ids) < _GROUP_MIN
            for m_id in ids
        ]
        with self._begin() as conn:
            for (new_status, ref, error, sent_at), ids in groups.items():
                if len(ids) >= _GROUP_MIN:
                    conn.execute(
                        update(table)
                        .where(self._one_of(pk, ids), table.c.status == "sending")
                        .values(status=new_status, provider_ref=ref, error=error, sent_at=sent_at)
                    )
            if singles:
                conn.execute(
                    update(table)
                    .where(pk == bindparam("m_id"), table.c.status == "sending")
                    .values(
                        status=bindparam("m_status"),
                        provider_ref=bindparam("m_ref"),
                        error=bindparam("m_error"),
                        sent_at=bindparam("m_sent"),
                    ),
                    singles,
                )

    def _one_of(self, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
        """``column`` is one of ``ids``, as one bound value whatever their number: a JSON
        array on SQLite, an array on PostgreSQL. A page of 1,000 ids is one statement,
        not two lists of 500 parameters, each parameter compiled into the SQL on every
        call (what ``IN`` with a list costs)."""
        clause: ColumnElement[bool]
        if self._dialect == "postgresql":
            clause = column == any_(bindparam("one_of", list(ids), type_=ARRAY(String)))
        else:
            each = func.json_each(bindparam("one_of", json.dumps(list(ids)), type_=String))
            clause = column.in_(select(literal_column("value", String)).select_from(each))
        return clause

    def queue_notifications(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Queue notifications in a transaction of their own (areas queueing inside
        theirs call :func:`~integrations.ledger.notifications.queue_notifications`)."""
        with self._begin() as conn:
            return queue_notifications(conn, rows, now)

    def notifications_to_send(
        self, after: str, limit: int, shard: Shard | None = None
    ) -> list[tuple[str, str, Contact, dict[str, Any]]]:
        """Queued notifications (id, kind, contact, data), by id after ``after``."""
        referrer_types = {t.value: t for t in ReferrerType}
        with self._connect() as conn:
            # The columns a notice needs, read by position (mappings of whole rows cost
            # more than the query).
            rows = conn.execute(
                select(
                    NotificationRow.notification_id,
                    NotificationRow.kind,
                    NotificationRow.data,
                    ContactRow.contact_id,
                    ContactRow.account_id,
                    ContactRow.name,
                    ContactRow.email,
                    ContactRow.referrer_type,
                    ContactRow.opted_out,
                    ContactRow.stripe_customer_id,
                    ContactRow.stripe_account_id,
                )
                .join(ContactRow, ContactRow.contact_id == NotificationRow.contact_id)
                .where(
                    NotificationRow.status == "queued",
                    NotificationRow.notification_id > after,
                )
                .where(in_shard(NotificationRow.contact_id, shard))
                .order_by(NotificationRow.notification_id)
                .limit(limit)
            ).tuples()
            return [
                (
                    notification_id,
                    kind,
                    Contact(
                        contact_id=contact_id,
                        account_id=account_id,
                        name=name,
                        email=email,
                        referrer_type=referrer_types[referrer_type],
                        opted_out=bool(opted_out),
                        stripe_customer_id=customer,
                        stripe_account_id=connected,
                    ),
                    dict(data),
                )
                for (
                    notification_id,
                    kind,
                    data,
                    contact_id,
                    account_id,
                    name,
                    email,
                    referrer_type,
                    opted_out,
                    customer,
                    connected,
                ) in rows
            ]

    def queued_emails(self, kind: str) -> int:
        """How many asks (``kind`` ``"ask"``) or notifications (any other) wait to be sent."""
        row = AskRow if kind == "ask" else NotificationRow
        with self._connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(row).where(row.status == "queued")
                ).scalar_one()
            )

    def suppressed(self, contact_ids: Iterable[str]) -> set[str]:
        """Those of ``contact_ids`` on the suppression list."""
        ids = sorted(set(contact_ids))
        if not ids:
            return set()
        with self._connect() as conn:
            return set(
                conn.execute(
                    select(SuppressionRow.contact_id).where(
                        self._one_of(SuppressionRow.contact_id, ids)
                    )
                ).scalars()
            )

    def suppress(self, contact_ids: Sequence[str], reason: str, now: datetime) -> int:
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    SuppressionRow,
                    [{"contact_id": c, "reason": reason, "created_at": now} for c in contact_ids],
                    SuppressionRow.contact_id,
                )
            )

    def apply_email_events(
        self,
        events: Sequence[EmailEvent],
        now: datetime,
        rejected: Sequence[Rejected] = (),
    ) -> EmailEventsApplied:
        """Store SendGrid events once each and suppress the contacts they call for.

        Each new event is kept with the contact its message id leads to (through the
        asks and the notifications), or none for a message id that is not ours. A new
        event :func:`domain.suppression.suppression_reason` calls final suppresses that
        contact; other events are only kept. Items refused by the parser go to the
        quarantine, in the same transaction.

        Args:
            events: parsed, verified events (see ``parse_events``), in any order.
            now: the time of receipt, timezone-aware.
            rejected: items the parser refused, to quarantine.

        Returns:
            The counts, and the contacts newly suppressed.
        """
        kept, too_long = storable(events)
        refused = [*rejected, *too_long]
        # Sorted so that two transactions inserting overlapping batches take their row
        # locks in the same order (Postgres would otherwise deadlock one of them).
        kept.sort(key=lambda e: e.event_id)
        with self._begin() as conn:
            if refused:
                self._insert_ignore(
                    conn,
                    QuarantineRow,
                    self._quarantine_rows(refused, QUARANTINE_STAGE, now),
                    QuarantineRow.id,
                )
            contacts = message_contacts(conn, sorted({e.message_id for e in kept}))
            recorded = set(
                self._insert_ignore(
                    conn,
                    ProviderEventRow,
                    [
                        {
                            "provider": SENDGRID,
                            "event_id": e.event_id,
                            "type": e.type.value,
                            "received_at": now,
                        }
                        for e in kept
                    ],
                    ProviderEventRow.event_id,
                )
            )
            stored = set(
                self._insert_ignore(
                    conn,
                    T_EMAIL_EVENTS,
                    event_rows(kept, contacts, now),
                    T_EMAIL_EVENTS.c.sg_event_id,
                )
            )
            new = [e for e in kept if e.event_id in recorded and e.event_id in stored]
            suppressed = self._insert_ignore(
                conn,
                SuppressionRow,
                [
                    {"contact_id": contact_id, "reason": reason, "created_at": now}
                    for contact_id, reason in sorted(suppressions(new, contacts).items())
                ],
                SuppressionRow.contact_id,
            )
        return EmailEventsApplied(
            received=len(kept) + len(too_long),
            new=len(new),
            duplicates=len(kept) - len(new),
            unknown_messages=sum(1 for e in new if e.message_id not in contacts),
            rejected=len(refused),
            suppressed=tuple(sorted(suppressed)),
        )
