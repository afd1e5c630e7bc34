"""The ``sources`` store: what source reads stored, and the quarantine of what they refused."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from domain.models import IngestReport, Rejected
from domain.ports import SourceBatch


class SourcesStore(Protocol):
    """Source reads, their cursors and the quarantine."""

    def cursor(self, source: str) -> str | None:
        """Where the last stored read of ``source`` ended.

        Args:
            source: the source's name (or a named read of it, ``hubspot:registrations``).

        Returns:
            The cursor stored with the last batch, ``None`` before the first.
        """
        ...

    def record_batch(self, batch: SourceBatch, now: datetime) -> IngestReport:
        """Store one source read atomically: reference rows, events, rejects, cursor.

        Events already stored are ignored; the cursor moves with the events it covers;
        a contact stored with another payout destination gets its change rows.

        Args:
            batch: what one read of a source returned.
            now: when it was stored.

        Returns:
            How many records came in, were new, already seen and quarantined.
        """
        ...

    def quarantine(self, rejected: Sequence[Rejected], stage: str, now: datetime) -> int:
        """Keep refused input with its reason (a masked, capped excerpt of the record).

        Args:
            rejected: the refused records.
            stage: the stage that refused them (``ingest``, ``conversion``...).
            now: when.

        Returns:
            How many were new (the same record refused again by the same stage is not).
        """
        ...

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        """Quarantined input without its raw excerpt, oldest first.

        Args:
            limit: how many rows at most.

        Returns:
            One dict per row: ``stage``, ``source``, ``record``, ``field``, ``reason``.
        """
        ...

    def purge_quarantine(self, created_before: datetime, now: datetime) -> int:
        """Empty the excerpt of quarantine rows older than the retention period.

        Args:
            created_before: rows created before this are purged.
            now: when (``purged_at``).

        Returns:
            How many rows were purged now; each keeps its reason.
        """
        ...
