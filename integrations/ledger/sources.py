"""The intake of sources in the ledger (the ``sources`` store).

What a source read leaves behind: its reference rows, events and rejects with the
cursor that covers them (one transaction per batch), the quarantine of refused input
and the purge of its excerpts once the retention period is over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from domain.models import IngestReport, Rejected
from domain.ports import SourceBatch
from integrations.ledger.base import LedgerBase, chunks, contact_row, event_row
from integrations.ledger.destinations import record_destination_changes
from integrations.ledger.tables import (
    T_QUARANTINE,
    AccountRow,
    ContactRow,
    QuarantineRow,
    SourceCursorRow,
    SourceEventRow,
)

# Rows purged per transaction: a first purge of a large quarantine holds no long lock.
PURGE_CHUNK = 5_000


class SqlSourcesStore(LedgerBase):
    """The ``sources`` store: what each source read stored, and what it refused."""

    def cursor(self, source: str) -> str | None:
        """Where the last stored read of ``source`` ended (``None`` before the first)."""
        with self._connect() as conn:
            return conn.execute(
                select(SourceCursorRow.cursor).where(SourceCursorRow.source == source)
            ).scalar_one_or_none()

    def record_batch(self, batch: SourceBatch, now: datetime) -> IngestReport:
        """Store one source read atomically: reference rows, events, rejects, cursor.

        The cursor moves in the same transaction as the events it covers, so a crash
        either keeps both or neither: the next run re-reads, and duplicates are ignored.
        A contact stored with another payout destination than before gets its
        ``payout_destination_changes`` rows in the same transaction.
        """
        with self._begin() as conn:
            self._upsert(
                conn,
                AccountRow,
                [
                    {
                        "account_id": a.account_id,
                        "name": a.name,
                        "domain": a.domain,
                        "customer_since": a.customer_since,
                        "updated_at": now,
                    }
                    for a in batch.accounts
                ],
                "account_id",
            )
            record_destination_changes(conn, batch.contacts, batch.source, now)
            self._upsert_contacts(conn, [contact_row(c, now) for c in batch.contacts])
            inserted = self._insert_ignore(
                conn, SourceEventRow, [event_row(e, now) for e in batch.events], SourceEventRow.id
            )
            # A reject delivered again is counted as quarantined all the same.
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(batch.rejected, "ingest", now),
                QuarantineRow.id,
            )
            if batch.cursor is not None:
                self._upsert(
                    conn,
                    SourceCursorRow,
                    [{"source": batch.source, "cursor": batch.cursor, "updated_at": now}],
                    "source",
                )
        return IngestReport(
            source=batch.source,
            records_in=batch.records_in,
            new_events=len(inserted),
            already_seen=len(batch.events) - len(inserted),
            quarantined=len(batch.rejected),
            reference_rows=batch.reference_only,
        )

    def _upsert_contacts(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or refresh contacts. A source that does not know a contact's Stripe
        ids (sends none) keeps the ids another source set, rather than erasing them."""
        if not rows:
            return
        stmt = self._insert(ContactRow)
        keep = ("stripe_customer_id", "stripe_account_id")
        stmt = stmt.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={
                c: (
                    func.coalesce(getattr(stmt.excluded, c), getattr(ContactRow, c))
                    if c in keep
                    else getattr(stmt.excluded, c)
                )
                for c in rows[0]
                if c != "contact_id"
            },
        )
        conn.execute(stmt, list(rows))

    def quarantine(self, rejected: Sequence[Rejected], stage: str, now: datetime) -> int:
        """Keep refused input with its reason; returns how many were new."""
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    QuarantineRow,
                    self._quarantine_rows(rejected, stage, now),
                    QuarantineRow.id,
                )
            )

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        """Quarantined input without its raw text (which may hold personal data)."""
        with self._connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(
                        QuarantineRow.stage,
                        QuarantineRow.source,
                        QuarantineRow.record,
                        QuarantineRow.field,
                        QuarantineRow.reason,
                    )
                    .order_by(QuarantineRow.id)
                    .limit(limit)
                ).mappings()
            ]

    def purge_quarantine(self, created_before: datetime, now: datetime) -> int:
        """Empty the excerpt of every quarantine row created before ``created_before``
        and not purged yet, keeping the row and its reason; returns how many.

        Unbound, each chunk of rows is its own transaction; bound to a unit of work,
        every chunk runs in that one.
        """
        purged = 0
        while True:
            with self._begin() as conn:
                ids = list(
                    conn.execute(
                        select(T_QUARANTINE.c.id)
                        .where(
                            T_QUARANTINE.c.created_at < created_before,
                            T_QUARANTINE.c.purged_at.is_(None),
                        )
                        .order_by(T_QUARANTINE.c.id)
                        .limit(PURGE_CHUNK)
                    ).scalars()
                )
                for chunk in chunks(ids):
                    conn.execute(
                        update(T_QUARANTINE)
                        .where(T_QUARANTINE.c.id.in_(chunk), T_QUARANTINE.c.purged_at.is_(None))
                        .values(raw="", purged_at=now)
                    )
            purged += len(ids)
            if len(ids) < PURGE_CHUNK:
                return purged
