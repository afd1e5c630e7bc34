"""The referrer side's store (issue 15): a referrer's page, their reward choice, and
the requests for a fresh page link."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from domain.program import RewardChoice
from domain.referrer_page import ReferrerFacts


class ReferrerSideStore(Protocol):
    """Every read is keyed by one referrer's id (from a verified page token only)."""

    def referrer_facts(self, referrer_id: str) -> ReferrerFacts | None:
        """What the referrer's page shows; ``None`` for an unknown contact."""
        ...

    def referrers_with_rewards(self, limit: int = 1) -> list[str]:
        """Referrers holding rewards, those with the most first."""
        ...

    def record_reward_choice(self, referrer_id: str, choice: RewardChoice, now: datetime) -> None:
        """Append ``choice`` (the latest one counts)."""
        ...

    def record_referrer_visitor(self, referrer_id: str, visitor_hash: str, now: datetime) -> bool:
        """Remember that the visitor with this keyed hash opened the referrer's own page
        (their clicks on the referrer's link are then the referrer's own); the first
        sighting is kept. Returns whether the pair is new."""
        ...

    def reward_choices(self, referrer_ids: Iterable[str]) -> dict[str, RewardChoice]:
        """The latest choice of each referrer who made one."""
        ...

    def contacts_with_email(self, email: str, limit: int = 5) -> list[str]:
        """Ids of contacts with this address (case-insensitive), by id."""
        ...

    def page_link_requests_since(
        self, address_hash: str, visitor_hash: str, since: datetime
    ) -> tuple[int, int]:
        """Requests for a fresh link since ``since``: (for this address, by this visitor)."""
        ...

    def record_page_link_request(
        self,
        request_id: str,
        address_hash: str,
        visitor_hash: str,
        referrer_ids: Sequence[str],
        now: datetime,
    ) -> int:
        """Record the request and queue a ``page_link`` notice to each referrer, in one
        transaction; returns how many notices were queued."""
        ...
