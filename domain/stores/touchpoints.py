"""The ``touchpoints`` store: the touches that credit referrers for a conversion."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.models import Conversion
from domain.touchpoints import StoredTouchpoint


@dataclass(frozen=True, slots=True)
class Referee:
    """What names a referee: any one of these finds its touches."""

    account_id: str | None
    contact_id: str | None
    customer: str | None

    @property
    def known(self) -> bool:
        return bool(self.account_id or self.contact_id or self.customer)

    @property
    def key(self) -> str:
        return "\x1f".join(x or "" for x in (self.account_id, self.contact_id, self.customer))


class TouchpointStore(Protocol):
    """Touches stored with the referee they name, read back when rewards are computed."""

    def record_touchpoints(
        self, touches: Sequence[tuple[StoredTouchpoint, Referee]], now: datetime
    ) -> int:
        """Store touches made elsewhere (a registration as it is made, a backfill).

        Args:
            touches: each touch with the referee it names (unknown referees are skipped).
            now: when they are stored.

        Returns:
            How many were new (those already stored are left as they are).
        """
        ...

    def record_conversion_touches(
        self, placed: Sequence[tuple[Conversion, str | None]], now: datetime
    ) -> int:
        """Store the touches new conversions bring: their code, the clicks on asks and
        on the referrer's link before them, the partner registrations holding at them.

        Args:
            placed: each new conversion with the Stripe customer it came from, if any.
            now: when they are stored.

        Returns:
            How many touches were new.
        """
        ...

    def conversion_customers(self, conversion_ids: Iterable[str]) -> dict[str, set[str]]:
        """Conversion id -> the Stripe customers its payments came from."""
        ...

    def touchpoints_for(
        self, conversions: Sequence[Conversion]
    ) -> dict[str, list[StoredTouchpoint]]:
        """Conversion id -> the stored touches of its referee at or before it (found by
        its CRM account, CRM contact or any Stripe customer of its payments)."""
        ...
