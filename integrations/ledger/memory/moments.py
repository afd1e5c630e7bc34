"""The ``moments`` store in memory: detection by the domain's reference interpreter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.models import Moment, SourceEvent
from domain.moments import DetectionCounts, DetectionSpec, detect
from integrations.ledger.memory.sources import InMemorySourcesStore


class InMemoryMomentsStore:
    """Detection as :class:`~integrations.ledger.detection.SqlMomentsStore` does it, with
    :func:`domain.moments.detect` over the events of the sources fake.

    ``chunk_size`` only sets how many chunks are counted (ids are consecutive here).

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
        moments: the stored moments by id.
        follow_ups: the detractors to follow up, by event key.
    """

    def __init__(self, sources: InMemorySourcesStore) -> None:
        self.sources = sources
        self.calls: list[tuple[Any, ...]] = []
        self.moments: dict[str, Moment] = {}
        self.follow_ups: dict[str, SourceEvent] = {}
        self.watermark = 0

    def detect_in_database(
        self, spec: DetectionSpec, now: datetime, chunk_size: int = 200_000
    ) -> DetectionCounts:
        self.calls.append(("detect_in_database", spec, now, chunk_size))
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        ids = sorted(i for i in self.sources.events if i > self.watermark)
        if not ids:
            return DetectionCounts()
        found = detect((self.sources.events[i] for i in ids), spec)
        new = [m for m in found.moments if m.moment_id not in self.moments]
        self.moments.update((m.moment_id, m) for m in new)
        for e in found.detractors:
            self.follow_ups.setdefault(e.key, e)
        chunks = -(-(ids[-1] - self.watermark) // chunk_size)
        self.watermark = ids[-1]
        return DetectionCounts(
            found.examined, len(new), len(found.detractors), found.without_contact, chunks
        )

    def detection_watermark(self) -> int:
        self.calls.append(("detection_watermark",))
        return self.watermark

    def events_to_detect(self) -> int:
        self.calls.append(("events_to_detect",))
        return sum(1 for i in self.sources.events if i > self.watermark)
