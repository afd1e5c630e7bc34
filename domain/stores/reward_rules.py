"""The reward rules' port: what caps and tiers read, and rewards recorded under a lock.

Used by the use case :func:`tasks.use_cases.rewards.accrue`, in one unit of work: lock,
read, apply :mod:`domain.rewards`, record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from domain.models import Conversion, Milestone, Rejected, Reward
from domain.money import Money
from domain.ports import RewardHistory
from domain.rewards import Invoice, RewardTerms


class RewardRulesStore(Protocol):
    """What the reward rules read, and the rewards they compute, recorded."""

    def lock(self, referrer_ids: Iterable[str], program_budget: bool) -> None:
        """Serialize, until the unit of work ends, every write that reads these
        referrers' earnings, debts or payouts (and the program's budget, if asked).

        Args:
            referrer_ids: the referrers whose rewards may be computed.
            program_budget: also lock the program-wide cap's room.
        """
        ...

    def unrewarded(self, conversion_ids: Iterable[str]) -> set[str]:
        """Those of ``conversion_ids`` not yet marked rewarded."""
        ...

    def recorded(self, conversion_ids: Iterable[str]) -> set[str]:
        """The ids of the rewards already recorded for ``conversion_ids``."""
        ...

    def history(self, currency: str) -> RewardHistory:
        """The successful referrals and earned totals caps and tiers read.

        Args:
            currency: the program's currency (what caps count in).
        """
        ...

    def record_accrued(
        self,
        rewards: Sequence[Reward],
        terms: Mapping[str, RewardTerms],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> tuple[set[str], int]:
        """Record rewards with their accrual entries, terms, own payments (recurring
        rewards) and "earned" notices; quarantine ``rejected``. A reward capped to
        nothing is recorded cancelled, without entry or notice.

        Returns:
            The ids of the rewards that were new, and how many rejects were new.
        """
        ...

    def mark_rewarded(self, conversion_ids: Iterable[str], now: datetime) -> None:
        """Mark rewarded those of ``conversion_ids`` not marked yet."""
        ...

    def first_payments(self, conversion_ids: Iterable[str]) -> dict[str, Money]:
        """Conversion id -> the first payment recorded with it."""
        ...

    def recurring_conversions(
        self,
        milestones: Sequence[Milestone],
        since: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Conversion]:
        """Rewarded conversions at ``milestones`` made at or after ``since``, by
        (occurred at, id) after ``after``: those whose referee's invoices may still
        earn a recurring reward."""
        ...

    def referee_invoices(
        self, conversions: Sequence[Conversion], until: datetime
    ) -> tuple[dict[str, list[Invoice]], list[Rejected]]:
        """Conversion id -> the invoices its referee paid until ``until``, and the
        invoice events that cannot be read (to quarantine)."""
        ...

    def terms(self, reward_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        """Reward id -> its stored terms (earned at, tier count, uncapped amount, cap)."""
        ...
