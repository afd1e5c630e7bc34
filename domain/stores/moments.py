"""The ``moments`` store: detection of moments and detractors among stored events."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from domain.moments import DetectionCounts, DetectionSpec


class MomentsStore(Protocol):
    """Detection where the events are, and how far it got."""

    def detect_in_database(
        self, spec: DetectionSpec, now: datetime, chunk_size: int = ...
    ) -> DetectionCounts:
        """Examine every stored event not examined yet under ``spec``.

        Stores a moment per event a rule selects (id: the event key) and a follow-up
        per detractor, exactly as :func:`domain.moments.detect` would find them. Commits
        chunk by chunk, so it is called outside a unit of work.

        Args:
            spec: the rules (``domain.moments.detection_spec(program)``).
            now: when the run happened.
            chunk_size: events per transaction.

        Returns:
            What the run examined and found.
        """
        ...

    def detection_watermark(self) -> int:
        """The highest event id detection has examined (0 before the first run)."""
        ...

    def events_to_detect(self) -> int:
        """How many stored events detection has not examined yet."""
        ...
