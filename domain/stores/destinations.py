"""The ``destinations`` store: the payout destination changes seen on contacts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class DestinationsStore(Protocol):
    """Payout destination changes (written with the contacts, by ``record_batch``)."""

    def destination_changes_of(self, contact_id: str) -> list[dict[str, object]]:
        """The recorded payout destination changes of one contact.

        Args:
            contact_id: the contact.

        Returns:
            One dict per change (``field``, ``old_value``, ``new_value``, ``source``,
            ``seen_at``...), oldest first.
        """
        ...

    def referrers_with_changed_destination(self, referrer_ids: Iterable[str]) -> set[str]:
        """The referrers whose payouts wait for a person after a destination change.

        Args:
            referrer_ids: the referrers to look at.

        Returns:
            Those with a change that no approval of a reward of theirs flagged
            ``payout_destination_changed`` has seen since.
        """
        ...
