"""The ``handoffs`` store: detractor follow-ups handed on to a person, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from domain.detractors import Channel, DetractorFollowUp, HandoffResult


class HandoffsStore(Protocol):
    """Hand-offs per channel (``email``, ``crm``): queued, claimed, settled."""

    def detractors_not_handed_on(self) -> int:
        """How many follow-ups have no hand-off yet (no owner was configured)."""
        ...

    def open_handoffs(self, now: datetime, with_crm: bool) -> int:
        """Queue a hand-off for every follow-up that has none.

        Args:
            now: when.
            with_crm: also queue the CRM channel.

        Returns:
            How many hand-offs were opened.
        """
        ...

    def handoffs_to_send(self, channel: Channel, after: str, limit: int) -> list[DetractorFollowUp]:
        """The queued hand-offs of ``channel``, by key after ``after``.

        Args:
            channel: ``email`` or ``crm``.
            after: the last key of the previous page (``""`` first).
            limit: the page size.

        Returns:
            The follow-ups to hand on, with the names the ledger knows.
        """
        ...

    def queued_handoffs(self, channel: Channel) -> int:
        """How many hand-offs of ``channel`` wait to be sent."""
        ...

    def claim_handoffs(self, channel: Channel, keys: Sequence[str], now: datetime) -> list[str]:
        """Move queued hand-offs to ``sending`` before the call.

        Args:
            channel: ``email`` or ``crm``.
            keys: the hand-offs to claim.
            now: the claim time.

        Returns:
            The keys this caller claimed (another run may have taken some).
        """
        ...

    def expire_handoff_claims(self, channel: Channel, claimed_before: datetime) -> int:
        """Mark ``unknown`` the claims older than ``claimed_before`` (their sender died).

        Args:
            channel: ``email`` or ``crm``.
            claimed_before: claims older than this expire.

        Returns:
            How many claims expired.
        """
        ...

    def record_handoff_results(
        self, channel: Channel, results: Sequence[HandoffResult], now: datetime
    ) -> None:
        """Settle claimed hand-offs; a hand-off not ``sending`` is left alone.

        Args:
            channel: ``email`` or ``crm``.
            results: how each settled.
            now: when.

        Raises:
            ValueError: a status that is not one of the channel's.
        """
        ...

    def handoff_counts(self) -> dict[str, dict[str, int]]:
        """Hand-offs per status of each channel (CRM: only those that have one)."""
        ...
