"""The metrics store in memory: records a test seeds, filtered as the SQL store filters.

:class:`InMemoryMetricsStore` follows :class:`domain.stores.metrics.MetricsStore`. The
SQL store derives its records from the ledger's rows; here a test seeds the records
themselves (``leads``, ``conversion_records``...) and the fake applies the same
windows: ``[since, until)`` on each record's own time, costs by period and currency.
Every call is recorded in ``calls`` with its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.metrics import (
    ConversionRecord,
    CostRecord,
    LeadRecord,
    PaidRewardRecord,
    Period,
    ReferralRecord,
)
from domain.models import ReferrerType


class InMemoryMetricsStore:
    """Seeded metric records, read back through the store's methods (see the module)."""

    def __init__(self) -> None:
        self.contacts: dict[ReferrerType, int] = {}
        self.lead_records: list[LeadRecord] = []
        self.conversion_records: list[ConversionRecord] = []
        self.referral_records: list[ReferralRecord] = []
        self.paid_records: list[PaidRewardRecord] = []
        self.cost_records: list[CostRecord] = []
        self.totals: dict[str, Any] = {}
        self.calls: list[tuple[Any, ...]] = []

    def contact_counts(self) -> dict[ReferrerType, int]:
        self.calls.append(("contact_counts",))
        return dict(self.contacts)

    def leads(self, since: datetime, until: datetime) -> list[LeadRecord]:
        self.calls.append(("leads", since, until))
        return [
            r
            for r in self.lead_records
            if since <= r.signed_up_at < until
            or (r.won_at is not None and since <= r.won_at < until)
        ]

    def conversions(self, since: datetime, until: datetime) -> list[ConversionRecord]:
        self.calls.append(("conversions", since, until))
        return sorted(
            (r for r in self.conversion_records if since <= r.occurred_at < until),
            key=lambda r: r.occurred_at,
        )

    def referrals(self, since: datetime, until: datetime) -> list[ReferralRecord]:
        self.calls.append(("referrals", since, until))
        return sorted(
            (r for r in self.referral_records if since <= r.first_at < until),
            key=lambda r: (r.first_at, r.referrer_id, r.referee),
        )

    def paid_rewards(self, since: datetime, until: datetime) -> list[PaidRewardRecord]:
        self.calls.append(("paid_rewards", since, until))
        return sorted(
            (r for r in self.paid_records if since <= r.paid_at < until),
            key=lambda r: (r.paid_at, r.reward_id),
        )

    def costs(self, periods: Sequence[Period], until: datetime, currency: str) -> list[CostRecord]:
        self.calls.append(("costs", tuple(p.start for p in periods), until, currency))
        starts = {p.start for p in periods}
        return [
            r for r in self.cost_records if r.paid.currency == currency and r.period_start in starts
        ]

    def summary(self) -> dict[str, Any]:
        self.calls.append(("summary",))
        return dict(self.totals)
