"""The rewards area of the ledger: rewards recorded, read, routed and flagged.

:class:`SqlRewardsStore` is the ``rewards`` store of
:class:`~integrations.ledger.uow.SqlStores`. Rewards under the program's caps and tiers
are accrued by :mod:`tasks.use_cases.rewards` through the ``reward_rules`` store
(:mod:`integrations.ledger.reward_rules`); this store records rewards computed without
them, reads them with their balances, and moves them along their statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import and_, case, select, update

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import Conversion, Rejected, Reward, RewardStatus, RewardView, derived_id
from integrations.ledger.base import LedgerBase, chunks, conversion_from_row, reward_row
from integrations.ledger.destinations import changed_destination_referrers
from integrations.ledger.tables import (
    T_CONVERSIONS,
    T_REWARDS,
    ConversionRow,
    LedgerEntryRow,
    QuarantineRow,
    RewardRow,
)


class SqlRewardsStore(LedgerBase):
    """Rewards in the ledger database (:class:`domain.stores.RewardsStore`)."""

    def conversions_to_reward(self, limit: int) -> list[Conversion]:
        with self._connect() as conn:
            rows = conn.execute(
                select(T_CONVERSIONS)
                .where(ConversionRow.rewarded_at.is_(None))
                .order_by(ConversionRow.occurred_at, ConversionRow.conversion_id)
                .limit(limit)
            ).mappings()
            return [conversion_from_row(r) for r in rows]

    def record(
        self,
        conversion_ids: Sequence[str],
        rewards: Sequence[Reward],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        """Store new rewards with their accrual entries; mark the conversions rewarded."""
        with self._begin() as conn:
            inserted = set(
                self._insert_ignore(
                    conn,
                    RewardRow,
                    [reward_row(r, RewardStatus.HOLDING, now) for r in rewards],
                    RewardRow.reward_id,
                )
            )
            self._insert_ignore(
                conn,
                LedgerEntryRow,
                [
                    {
                        "reward_id": r.reward_id,
                        "kind": "accrued",
                        "amount_minor": r.amount.amount_minor,
                        "currency": r.amount.currency,
                        "ref": r.reward_id,
                        "created_at": now,
                    }
                    for r in rewards
                    if r.reward_id in inserted
                ],
                LedgerEntryRow.entry_id,
            )
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(rejected, "reward", now),
                QuarantineRow.id,
            )
            for ids in chunks(conversion_ids):
                conn.execute(
                    update(ConversionRow)
                    .where(ConversionRow.conversion_id.in_(ids))
                    .values(rewarded_at=now)
                )
            self._queue_notifications(
                conn,
                [
                    {
                        "notification_id": derived_id("notice", r.reward_id, "earned"),
                        "contact_id": r.referrer_id,
                        "kind": "reward_earned",
                        "reward_id": r.reward_id,
                        "data": {
                            "amount": r.amount.format(),
                            "milestone": r.milestone.value,
                            "payable_on": r.payable_at.date().isoformat(),
                        },
                    }
                    for r in rewards
                    if r.reward_id in inserted
                ],
                now,
            )
        return len(inserted)

    def of(self, reward_ids: Iterable[str]) -> dict[str, RewardView]:
        ids = sorted(set(reward_ids))
        found: dict[str, RewardView] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                for view in self._reward_views(conn, T_REWARDS.c.reward_id.in_(chunk), None):
                    found[view.reward.reward_id] = view
        return found

    def to_route(self, as_of: datetime, after: str, limit: int) -> list[RewardView]:
        """Rewards whose holding period is over and that are not yet on their way, by id
        after ``after`` (so one pass visits each once, even those that stay payable).

        The reward of a referrer whose payout destination changed since a person last
        approved one of their rewards so flagged carries ``payout_destination_changed``,
        already payable ones too: they would be paid to the new destination (see
        :func:`~integrations.ledger.destinations.changed_destination_referrers`)."""
        with self._connect() as conn:
            views = self._reward_views(
                conn,
                and_(
                    T_REWARDS.c.status.in_(
                        [RewardStatus.HOLDING.value, RewardStatus.PAYABLE.value]
                    ),
                    T_REWARDS.c.payable_at <= as_of,
                    T_REWARDS.c.reward_id > after,
                ),
                limit,
                order_by_id=True,
            )
            changed = changed_destination_referrers(conn, [v.reward.referrer_id for v in views])
        return [
            replace(
                v, reward=replace(v.reward, flags=(*v.reward.flags, PAYOUT_DESTINATION_CHANGED))
            )
            if v.reward.referrer_id in changed and PAYOUT_DESTINATION_CHANGED not in v.reward.flags
            else v
            for v in views
        ]

    def move(
        self,
        reward_ids: Sequence[str],
        from_statuses: Sequence[RewardStatus],
        to: RewardStatus,
        now: datetime,
    ) -> list[str]:
        """Move rewards that are still in one of ``from_statuses``; returns those moved."""
        moved: list[str] = []
        with self._begin() as conn:
            for chunk in chunks(reward_ids):
                moved += (
                    conn.execute(
                        update(T_REWARDS)
                        .where(
                            T_REWARDS.c.reward_id.in_(chunk),
                            T_REWARDS.c.status.in_([s.value for s in from_statuses]),
                        )
                        .values(status=to.value, updated_at=now)
                        .returning(T_REWARDS.c.reward_id)
                    )
                    .scalars()
                    .all()
                )
        return moved

    def add_flag(self, reward_ids: Sequence[str], flag: str, now: datetime) -> int:
        """Add ``flag`` to the stored flags of ``reward_ids`` not yet carrying it, so
        the approver, the reports and the audit trail show why a reward waited."""
        flagged = 0
        with self._begin() as conn:
            for chunk in chunks(reward_ids):
                flagged += conn.execute(
                    update(T_REWARDS)
                    .where(
                        and_(
                            T_REWARDS.c.reward_id.in_(chunk),
                            ~T_REWARDS.c.flags.contains(flag, autoescape=True),
                        )
                    )
                    .values(
                        flags=case(
                            (T_REWARDS.c.flags == "", flag),
                            else_=T_REWARDS.c.flags + "," + flag,
                        ),
                        updated_at=now,
                    )
                ).rowcount
        return flagged
