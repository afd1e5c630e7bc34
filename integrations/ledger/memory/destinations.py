"""The ``destinations`` store in memory: payout destination changes of contacts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any


class InMemoryDestinationsStore:
    """Payout destination changes, as the SQL store
    (:class:`~integrations.ledger.destinations.SqlDestinationsStore`) keeps them.

    ``changes`` is written by the sources fake's ``record_batch``. The SQL store asks the
    approvals and rewards tables whether a person has seen a change; here that is
    ``acknowledged``: per contact, when a reward of theirs flagged
    ``payout_destination_changed`` was last approved (a test sets it).

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.changes: list[dict[str, Any]] = []
        self.acknowledged: dict[str, datetime] = {}

    def destination_changes_of(self, contact_id: str) -> list[dict[str, object]]:
        self.calls.append(("destination_changes_of", contact_id))
        mine = [dict(c) for c in self.changes if c["contact_id"] == contact_id]
        return sorted(mine, key=lambda c: c["seen_at"])

    def referrers_with_changed_destination(self, referrer_ids: Iterable[str]) -> set[str]:
        wanted = set(referrer_ids)
        self.calls.append(("referrers_with_changed_destination", wanted))
        return {
            c["contact_id"]
            for c in self.changes
            if c["contact_id"] in wanted
            and not (
                c["contact_id"] in self.acknowledged
                and self.acknowledged[c["contact_id"]] >= c["seen_at"]
            )
        }
