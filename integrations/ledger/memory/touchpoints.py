"""The ``touchpoints`` store in memory: touches keyed as the ledger keys them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from domain.models import Conversion, derived_id
from domain.stores.touchpoints import Referee
from domain.touchpoints import StoredTouchpoint, own_touch


class InMemoryTouchpointStore:
    """A :class:`domain.stores.touchpoints.TouchpointStore` over a dict, recording calls.

    A new conversion brings its own code's touch only: the clicks and registrations
    the SQL store finds live in other areas' tables, which this fake does not keep.
    ``customers`` (conversion id -> Stripe customers) stands for the Stripe payments.
    """

    def __init__(self) -> None:
        self.touches: dict[tuple[str, str, str, str], tuple[StoredTouchpoint, Referee]] = {}
        self.customers: dict[str, set[str]] = {}
        self.calls: list[tuple[str, Any]] = []

    def _add(self, touch: StoredTouchpoint, referee: Referee) -> bool:
        if not referee.known:
            return False
        key = (touch.kind.value, touch.ref, touch.referrer_id, referee.key)
        if key in self.touches:
            return False
        self.touches[key] = (touch, referee)
        return True

    def record_touchpoints(
        self, touches: Sequence[tuple[StoredTouchpoint, Referee]], now: datetime
    ) -> int:
        self.calls.append(("record_touchpoints", len(touches)))
        return sum(self._add(t, r) for t, r in touches)

    def record_conversion_touches(
        self, placed: Sequence[tuple[Conversion, str | None]], now: datetime
    ) -> int:
        self.calls.append(("record_conversion_touches", [c.conversion_id for c, _ in placed]))
        return sum(
            self._add(own_touch(c), Referee(c.referee_account_id, c.referee_contact_id, customer))
            for c, customer in placed
        )

    def conversion_customers(self, conversion_ids: Iterable[str]) -> dict[str, set[str]]:
        return {
            cid: set(self.customers[cid]) for cid in set(conversion_ids) if self.customers.get(cid)
        }

    def touchpoints_for(
        self, conversions: Sequence[Conversion]
    ) -> dict[str, list[StoredTouchpoint]]:
        self.calls.append(("touchpoints_for", [c.conversion_id for c in conversions]))
        ordered = sorted(
            self.touches.values(),
            key=lambda tr: (
                tr[0].at,
                derived_id("touchpoint", tr[0].kind.value, tr[0].ref, tr[0].referrer_id, tr[1].key),
            ),
        )
        found: dict[str, list[StoredTouchpoint]] = {}
        for c in conversions:
            mine = self.customers.get(c.conversion_id, set())
            found[c.conversion_id] = [
                t
                for t, r in ordered
                if t.at <= c.occurred_at
                and (
                    (c.referee_account_id and r.account_id == c.referee_account_id)
                    or (c.referee_contact_id and r.contact_id == c.referee_contact_id)
                    or (r.customer is not None and r.customer in mine)
                )
            ]
        return found
