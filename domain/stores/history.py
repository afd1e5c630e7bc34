"""The ``history`` store: the stored history read back, for replays (what-if)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from domain.models import Conversion


class HistoryStore(Protocol):
    """Every conversion ever recorded."""

    def conversion_history(self, page_size: int = 5000) -> Iterator[list[Conversion]]:
        """Every stored conversion, oldest id first.

        Args:
            page_size: conversions per page.

        Yields:
            Pages of conversions, none empty.
        """
        ...
