"""The ``history`` store in memory: the conversions a replay reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from domain.models import Conversion


class InMemoryHistoryStore:
    """Every conversion, as :class:`~integrations.ledger.history.SqlHistoryStore`.

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
        conversions: the recorded conversions by id (a test or the conversions fake
            fills it).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.conversions: dict[str, Conversion] = {}

    def conversion_history(self, page_size: int = 5000) -> Iterator[list[Conversion]]:
        self.calls.append(("conversion_history", page_size))
        ordered = [self.conversions[k] for k in sorted(self.conversions)]
        for start in range(0, len(ordered), page_size):
            yield ordered[start : start + page_size]
