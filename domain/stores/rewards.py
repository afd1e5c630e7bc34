"""The rewards' port: rewards recorded, read with their balances, routed and flagged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from domain.models import Conversion, Rejected, Reward, RewardStatus, RewardView
from domain.stores.reward_rules import RewardRulesStore


class RewardsStore(Protocol):
    """Rewards and their statuses. Rewards under caps and tiers are accrued by the use
    case :func:`tasks.use_cases.rewards.accrue` through :class:`RewardRulesStore`."""

    def conversions_to_reward(self, limit: int) -> list[Conversion]:
        """Conversions not yet rewarded, oldest first.

        Args:
            limit: at most this many.

        Returns:
            The conversions.
        """
        ...

    def record(
        self,
        conversion_ids: Sequence[str],
        rewards: Sequence[Reward],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        """Store new rewards (holding) with their accrual entries and "earned" notices,
        quarantine ``rejected``, and mark the conversions rewarded.

        Returns:
            How many rewards were new (recording one again adds nothing).
        """
        ...

    def of(self, reward_ids: Iterable[str]) -> dict[str, RewardView]:
        """Reward id -> the reward with its status and balance, for those that exist."""
        ...

    def to_route(self, as_of: datetime, after: str, limit: int) -> list[RewardView]:
        """Rewards past their holding period and not yet on their way, by id after
        ``after``; a referrer's whose payout destination changed since a person last
        approved it carry ``payout_destination_changed``.

        Args:
            as_of: the moment of decision.
            after: the last reward id of the previous page ("" for the first).
            limit: at most this many.

        Returns:
            The rewards, by id.
        """
        ...

    def move(
        self,
        reward_ids: Sequence[str],
        from_statuses: Sequence[RewardStatus],
        to: RewardStatus,
        now: datetime,
    ) -> list[str]:
        """Move the rewards still in one of ``from_statuses`` to ``to``.

        Returns:
            The ids moved.
        """
        ...

    def add_flag(self, reward_ids: Sequence[str], flag: str, now: datetime) -> int:
        """Add ``flag`` to the stored flags of the rewards not yet carrying it.

        Returns:
            How many rewards got it.
        """
        ...


class RewardStores(Protocol):
    """The stores the rewards' use cases use (read-only: any ``Stores`` is one)."""

    @property
    def rewards(self) -> RewardsStore: ...

    @property
    def reward_rules(self) -> RewardRulesStore: ...


class LedgerWithRewards(Protocol):
    """What the rewards' use cases need of the ledger: a unit of work with their stores.

    Narrower than :class:`domain.stores.Ledger`, so the in-memory ledger, which fakes
    only some areas, is one too.
    """

    def transaction(self) -> AbstractContextManager[RewardStores]:
        """Open one transaction; the stores it yields all run in it."""
        ...
