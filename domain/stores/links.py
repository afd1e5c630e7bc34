"""The ``links`` store: whose a referral code is, and the tracked link's clicks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from domain.links import LinkClick


class LinkStore(Protocol):
    """Codes and clicks of the tracked link."""

    def live_referrer(self, code: str) -> str | None:
        """The owner of a code whose link is live.

        Args:
            code: the referral code, normalised.

        Returns:
            The owner's contact id; None for an unknown code and for a revoked one
            (its owner opted out), answered alike so neither is told from the other.
        """
        ...

    def record_link_clicks(self, clicks: Sequence[LinkClick], now: datetime) -> int:
        """Store clicks in one transaction, each once by its id.

        Args:
            clicks: the batch to store.
            now: the time of the write.

        Returns:
            How many clicks were new.
        """
        ...
