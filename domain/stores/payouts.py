"""The payouts' port: payout rows with their idempotency keys, claims and results.

Exactly once, in three steps: :meth:`PayoutsStore.prepare` commits each payout with its
idempotency key (:meth:`domain.models.PayoutInstruction.key_for`) before any money
moves; a worker leases payouts (:meth:`PayoutsStore.claim`) and calls the rail with
their keys; :meth:`PayoutsStore.record_results` books each outcome once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from domain.models import PayoutInstruction, PayoutRailKind, PayoutResult


class PayoutsStore(Protocol):
    """Payouts: written before the rail is called, claimed, settled once."""

    def prepare(
        self, plans: Sequence[tuple[str, PayoutRailKind, str | None]], now: datetime
    ) -> list[PayoutInstruction]:
        """Write the payout rows, with their idempotency keys, before any money moves.

        A reward gets a payout only while payable or approved, still owed money, under
        the attempts allowed, and without a live payout; the referrer's debts are netted
        from it first (a reward whose whole balance settles debts is marked paid).

        Args:
            plans: (reward id, rail, destination) per reward to pay.
            now: when the rows are written.

        Returns:
            Every pending payout of those rewards, those a crashed run left included.
        """
        ...

    def pending(
        self, reward_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[PayoutInstruction]:
        """Payouts stored but not settled, oldest key first.

        Args:
            reward_ids: only these rewards' payouts; None for all.
            limit: at most this many.

        Returns:
            The pending payouts.
        """
        ...

    def claim(
        self,
        worker: str,
        now: datetime,
        lease: timedelta,
        reward_ids: Sequence[str] | None = None,
        limit: int = 1000,
        stale_before: datetime | None = None,
    ) -> list[PayoutInstruction]:
        """Lease pending payouts nobody else holds to ``worker`` until ``now + lease``.

        Args:
            worker: who claims them.
            now: when; leases that ran out before it are free again.
            lease: how long the claim holds.
            reward_ids: only these rewards' payouts; None for any.
            limit: at most this many.
            stale_before: only payouts written before it (taking over a crash's).

        Returns:
            The payouts claimed, oldest key first.
        """
        ...

    def release(self, payout_ids: Sequence[str], worker: str) -> int:
        """Give back the leases ``worker`` holds on these still pending payouts.

        Returns:
            How many were released.
        """
        ...

    def record_results(self, results: Sequence[PayoutResult], now: datetime) -> int:
        """Settle payouts still pending: a success books ``paid`` and marks the reward
        paid; a failure fails it; a retryable outcome leaves it pending, unclaimed.

        Returns:
            How many payouts were settled paid.
        """
        ...
