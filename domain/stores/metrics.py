"""The metrics store's port: what the program metrics and the run summary read.

Read only. The records are those of :mod:`domain.metrics`, which computes the metrics
from them; ``until`` is always exclusive and times are UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from domain.metrics import (
    ConversionRecord,
    CostRecord,
    LeadRecord,
    PaidRewardRecord,
    Period,
    ReferralRecord,
)
from domain.models import ReferrerType


class MetricsStore(Protocol):
    """``ledger.metrics``: read-only queries behind the program metrics and the summary."""

    def contact_counts(self) -> dict[ReferrerType, int]:
        """Contacts the ledger holds, per referrer type (as they are now)."""
        ...

    def leads(self, since: datetime, until: datetime) -> list[LeadRecord]:
        """Leads signed up in ``[since, until)`` or won in it, with their first win."""
        ...

    def conversions(self, since: datetime, until: datetime) -> list[ConversionRecord]:
        """Conversions in ``[since, until)`` with their referrer's type, oldest first."""
        ...

    def referrals(self, since: datetime, until: datetime) -> list[ReferralRecord]:
        """Referrals first seen in ``[since, until)``: one per referrer and referred
        party, dated by their first conversion ever."""
        ...

    def paid_rewards(self, since: datetime, until: datetime) -> list[PaidRewardRecord]:
        """Rewards first paid in ``[since, until)``, with their conversion's time."""
        ...

    def costs(self, periods: Sequence[Period], until: datetime, currency: str) -> list[CostRecord]:
        """Reward money paid and reversed per period and referrer type, before ``until``,
        in ``currency`` only."""
        ...

    def summary(self) -> dict[str, Any]:
        """Counts and sums per stage, for the run artifact and the demo's closing table:
        events, moments, skipped, follow_ups, asks, conversions, rewards,
        reward_amounts, payouts, paid, notifications, quarantine, detractors_handed_on."""
        ...


class WithMetrics(Protocol):
    """Anything holding a metrics store (the ledger)."""

    @property
    def metrics(self) -> MetricsStore:
        """The metrics store."""
        ...
