"""The payouts' store in memory, over the rewards' :class:`MoneyBook` (no debt netting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from domain.models import (
    MAX_PAYOUT_ATTEMPTS,
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    RewardStatus,
    derived_id,
)
from integrations.ledger.memory.rewards import Calls, MoneyBook


class InMemoryPayoutsStore:
    """:class:`domain.stores.PayoutsStore` over a :class:`MoneyBook` (no debt netting)."""

    def __init__(self, book: MoneyBook) -> None:
        self.book = book
        self.calls: Calls = []

    def prepare(
        self, plans: Sequence[tuple[str, PayoutRailKind, str | None]], now: datetime
    ) -> list[PayoutInstruction]:
        self.calls.append(("prepare", (list(plans), now)))
        rows = self.book.payouts.values()
        for reward_id, rail, destination in plans:
            if reward_id not in self.book.rewards:
                continue
            view = self.book.view(reward_id)
            if view.status not in (RewardStatus.PAYABLE, RewardStatus.APPROVED):
                continue
            if view.balance.amount_minor <= 0:
                continue
            ours = [p for p in rows if p["reward_id"] == reward_id]
            attempt = sum(p["status"] == "failed" for p in ours) + 1
            if attempt > MAX_PAYOUT_ATTEMPTS:
                continue
            if any(p["status"] in ("pending", "succeeded") for p in ours):
                continue
            payout_id = derived_id("payout", reward_id, str(attempt))
            self.book.payouts[payout_id] = {
                "payout_id": payout_id,
                "reward_id": reward_id,
                "attempt": attempt,
                "rail": rail,
                "destination": destination,
                "amount": view.balance,
                "idempotency_key": PayoutInstruction.key_for(reward_id, rail, attempt),
                "status": "pending",
                "created_at": now,
                "claimed_by": None,
                "claimed_until": None,
                "provider_ref": None,
                "error": None,
            }
            rows = self.book.payouts.values()
        return self._pending({p[0] for p in plans})

    def pending(
        self, reward_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[PayoutInstruction]:
        self.calls.append(("pending", (reward_ids, limit)))
        found = self._pending(None if reward_ids is None else set(reward_ids))
        return found if limit is None else found[:limit]

    def claim(
        self,
        worker: str,
        now: datetime,
        lease: timedelta,
        reward_ids: Sequence[str] | None = None,
        limit: int = 1000,
        stale_before: datetime | None = None,
    ) -> list[PayoutInstruction]:
        self.calls.append(("claim", (worker, now, lease, reward_ids, limit, stale_before)))
        if reward_ids is not None and not reward_ids:
            return []
        wanted = None if reward_ids is None else set(reward_ids)
        free = [
            p
            for p in self._rows()
            if p["status"] == "pending"
            and (wanted is None or p["reward_id"] in wanted)
            and (
                p["claimed_until"] is None or p["claimed_until"] <= now or p["claimed_by"] == worker
            )
            and (stale_before is None or p["created_at"] <= stale_before)
        ][:limit]
        for p in free:
            p["claimed_by"], p["claimed_until"] = worker, now + lease
        return [_instruction(p) for p in free]

    def release(self, payout_ids: Sequence[str], worker: str) -> int:
        self.calls.append(("release", (list(payout_ids), worker)))
        released = 0
        for payout_id in dict.fromkeys(payout_ids):
            p = self.book.payouts.get(payout_id)
            if p and p["claimed_by"] == worker and p["status"] == "pending":
                p["claimed_by"] = p["claimed_until"] = None
                released += 1
        return released

    def record_results(self, results: Sequence[PayoutResult], now: datetime) -> int:
        self.calls.append(("record_results", (list(results), now)))
        succeeded = {r.payout_id: r for r in results if r.outcome is PayoutOutcome.SUCCEEDED}
        paid = 0
        for result in results:
            p = self.book.payouts.get(result.payout_id)
            if p is None or p["status"] != "pending":
                continue
            if result.payout_id in succeeded:
                result = succeeded[result.payout_id]  # a success wins: the money moved
                p.update(status="succeeded", provider_ref=result.provider_ref, error=None)
                self.book.entry(p["reward_id"], "paid", -p["amount"], p["payout_id"])
                self.book.set_status(p["reward_id"], RewardStatus.PAID)
                paid += 1
            else:
                failed = result.outcome is PayoutOutcome.FAILED
                p.update(
                    status="failed" if failed else "pending",
                    error=(result.error or "")[:512] or None,
                    claimed_by=None,
                    claimed_until=None,
                )
        return paid

    def _rows(self) -> list[dict[str, Any]]:
        return sorted(self.book.payouts.values(), key=lambda p: (p["created_at"], p["payout_id"]))

    def _pending(self, reward_ids: set[str] | None) -> list[PayoutInstruction]:
        return [
            _instruction(p)
            for p in self._rows()
            if p["status"] == "pending" and (reward_ids is None or p["reward_id"] in reward_ids)
        ]


def _instruction(p: Mapping[str, Any]) -> PayoutInstruction:
    return PayoutInstruction(
        payout_id=p["payout_id"],
        reward_id=p["reward_id"],
        amount=p["amount"],
        rail=p["rail"],
        idempotency_key=p["idempotency_key"],
        destination=p["destination"],
        key_created_at=p["created_at"],
        attempt=p["attempt"],
    )
