"""The ``sources`` store in memory: accounts, contacts, events, cursors, the quarantine."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from domain.fraud import destination_changes
from domain.models import Account, Contact, IngestReport, Rejected, SourceEvent
from domain.ports import SourceBatch
from integrations.ledger.base import LedgerBase
from integrations.ledger.memory.destinations import InMemoryDestinationsStore


class InMemorySourcesStore:
    """What source reads stored, as :class:`~integrations.ledger.sources.SqlSourcesStore`.

    Events keep the order (and the ids) they were first stored in; a contact stored
    with another payout destination adds its changes to ``destinations``, as the SQL
    store does in the same transaction.

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
        events: the stored events by id, in the order stored.
    """

    def __init__(self, destinations: InMemoryDestinationsStore) -> None:
        self.destinations = destinations
        self.calls: list[tuple[Any, ...]] = []
        self.cursors: dict[str, str] = {}
        self.accounts: dict[str, Account] = {}
        self.contacts: dict[str, Contact] = {}
        self.events: dict[int, SourceEvent] = {}
        self._keys: set[tuple[str, str]] = set()
        self._ids = itertools.count(1)
        self.quarantine_rows: list[dict[str, Any]] = []

    def cursor(self, source: str) -> str | None:
        self.calls.append(("cursor", source))
        return self.cursors.get(source)

    def record_batch(self, batch: SourceBatch, now: datetime) -> IngestReport:
        self.calls.append(("record_batch", batch, now))
        self.accounts.update((a.account_id, a) for a in batch.accounts)
        naming = [c for c in batch.contacts if c.stripe_account_id or c.stripe_customer_id]
        for change in destination_changes(self.contacts, naming):
            self.destinations.changes.append(
                {
                    "contact_id": change.contact_id,
                    "field": change.field,
                    "old_value": change.old,
                    "new_value": change.new,
                    "source": batch.source,
                    "seen_at": now,
                }
            )
        for c in batch.contacts:
            before = self.contacts.get(c.contact_id)
            # A source that sends no Stripe ids keeps those another source set.
            self.contacts[c.contact_id] = (
                c
                if before is None
                else replace(
                    c,
                    stripe_customer_id=_kept(c.stripe_customer_id, before.stripe_customer_id),
                    stripe_account_id=_kept(c.stripe_account_id, before.stripe_account_id),
                )
            )
        new = 0
        for e in batch.events:
            if (e.source, e.event_id) not in self._keys:
                self._keys.add((e.source, e.event_id))
                self.events[next(self._ids)] = e
                new += 1
        self._keep(batch.rejected, "ingest", now)
        if batch.cursor is not None:
            self.cursors[batch.source] = batch.cursor
        return IngestReport(
            source=batch.source,
            records_in=batch.records_in,
            new_events=new,
            already_seen=len(batch.events) - new,
            quarantined=len(batch.rejected),
            reference_rows=batch.reference_only,
        )

    def quarantine(self, rejected: Sequence[Rejected], stage: str, now: datetime) -> int:
        self.calls.append(("quarantine", rejected, stage, now))
        return self._keep(rejected, stage, now)

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        self.calls.append(("quarantined", limit))
        shown = ("stage", "source", "record", "field", "reason")
        return [{k: row[k] for k in shown} for row in self.quarantine_rows[:limit]]

    def purge_quarantine(self, created_before: datetime, now: datetime) -> int:
        self.calls.append(("purge_quarantine", created_before, now))
        purged = 0
        for row in self.quarantine_rows:
            if row["created_at"] < created_before and row["purged_at"] is None:
                row.update(raw="", purged_at=now)
                purged += 1
        return purged

    def _keep(self, rejected: Sequence[Rejected], stage: str, now: datetime) -> int:
        """Add the rows not kept yet (unique by source, record and stage); how many."""
        seen = {(r["source"], r["record"], r["stage"]) for r in self.quarantine_rows}
        new = 0
        for row in LedgerBase._quarantine_rows(rejected, stage, now):
            key = (row["source"], row["record"], row["stage"])
            if key not in seen:
                seen.add(key)
                self.quarantine_rows.append({**row, "purged_at": None})
                new += 1
        return new


def _kept(new: str | None, old: str | None) -> str | None:
    """``COALESCE(new, old)``."""
    return old if new is None else new
