"""The approvals store in memory: requests, decisions and what a decision writes.

:class:`InMemoryApprovalsStore` follows :class:`domain.stores.approvals.ApprovalsStore`
for the requests' lifecycle and for recording decisions; a test seeds the rewards it
decides on with :meth:`InMemoryApprovalsStore.add_reward` (and, for :meth:`view`, the
approver's view with :meth:`InMemoryApprovalsStore.add_view`). Every call is recorded
in ``calls`` as (method, reward or request ids...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain.approvals import CheckedDecision
from domain.errors import DecisionConflict
from domain.models import (
    ApprovalView,
    DecisionRecord,
    RewardStatus,
    RewardView,
    WaitingApproval,
    derived_id,
)
from domain.money import Money


@dataclass
class _Request:
    request_id: str
    reward_id: str
    created_at: datetime
    status: str = "waiting"
    flow_run_id: str | None = None
    reminded_at: datetime | None = None
    closed_at: datetime | None = None


class InMemoryApprovalsStore:
    """Approval requests and decisions in plain dicts and lists (see the module)."""

    def __init__(self) -> None:
        self.rewards: dict[str, RewardView] = {}
        self.views: dict[str, ApprovalView] = {}
        self.requests: dict[str, _Request] = {}
        self.decided: dict[str, list[DecisionRecord]] = {}
        # (reward id, kind, signed amount, ref): what the SQL store appends to the ledger.
        self.entries: list[tuple[str, str, Money, str]] = []
        self.notices: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []

    # -- seeding -------------------------------------------------------------------------

    def add_reward(self, view: RewardView) -> None:
        """A reward as routing left it (usually awaiting approval)."""
        self.rewards[view.reward.reward_id] = view

    def add_view(self, view: ApprovalView) -> None:
        """What :meth:`view` shows of a reward besides its live status and decisions."""
        self.views[view.reward.reward.reward_id] = view
        self.add_reward(view.reward)

    # -- requests and the runs that wait on them ----------------------------------------

    def open_requests(
        self, reward_ids: Sequence[str], now: datetime
    ) -> dict[str, tuple[str, str | None]]:
        self.calls.append(("open_requests", *reward_ids))
        out: dict[str, tuple[str, str | None]] = {}
        for reward_id in reward_ids:
            waiting = self._waiting_request(reward_id)
            if waiting is None:
                attempt = 1 + sum(r.reward_id == reward_id for r in self.requests.values())
                request_id = derived_id("approval", reward_id, str(attempt))
                self.requests[request_id] = _Request(request_id, reward_id, now)
                out[reward_id] = (request_id, None)
            else:
                out[reward_id] = (waiting.request_id, waiting.flow_run_id)
        return out

    def attach_flow_runs(self, runs: Mapping[str, str]) -> None:
        self.calls.append(("attach_flow_runs", *runs))
        for request_id, flow_run_id in runs.items():
            if request_id in self.requests:
                self.requests[request_id].flow_run_id = flow_run_id

    def view(self, reward_id: str) -> ApprovalView:
        self.calls.append(("view", reward_id))
        if reward_id not in self.views:
            raise KeyError(f"no reward {reward_id}")
        return replace(
            self.views[reward_id],
            reward=self.rewards[reward_id],
            decisions=self.decisions(reward_id),
        )

    def waiting(self) -> list[WaitingApproval]:
        self.calls.append(("waiting",))
        out = []
        for request in sorted(self.requests.values(), key=lambda r: (r.created_at, r.reward_id)):
            reward = self.rewards.get(request.reward_id)
            if (
                request.status != "waiting"
                or reward is None
                or reward.status is not RewardStatus.AWAITING_APPROVAL
            ):
                continue
            seeded = self.views.get(request.reward_id)
            out.append(
                WaitingApproval(
                    reward_id=request.reward_id,
                    referrer_id=reward.reward.referrer_id,
                    referrer_name=seeded.referrer.name if seeded else reward.reward.referrer_id,
                    amount=reward.balance,
                    flags=tuple(reward.reward.flags),
                    flow_run_id=request.flow_run_id,
                    waiting_since=request.created_at,
                    stages_done=len(self.decided.get(request.reward_id, [])),
                )
            )
        return out

    def overdue(
        self, waiting_since: datetime, reminded_before: datetime | None = None
    ) -> list[tuple[str, str, str | None]]:
        self.calls.append(("overdue",))
        return [
            (r.request_id, r.reward_id, r.flow_run_id)
            for r in sorted(self.requests.values(), key=lambda r: r.created_at)
            if r.status == "waiting"
            and r.created_at < waiting_since
            and (
                reminded_before is None or r.reminded_at is None or r.reminded_at < reminded_before
            )
        ]

    def mark_reminded(self, request_ids: Sequence[str], now: datetime) -> None:
        self.calls.append(("mark_reminded", *request_ids))
        for request_id in request_ids:
            self.requests[request_id].reminded_at = now

    def expire_requests(self, request_ids: Sequence[str], now: datetime) -> list[str]:
        self.calls.append(("expire_requests", *request_ids))
        expired = []
        for request_id in request_ids:
            request = self.requests.get(request_id)
            if request is not None and request.status == "waiting":
                request.status, request.closed_at = "expired", now
                expired.append(request_id)
        return expired

    def awaiting_without_request(self, limit: int) -> list[str]:
        self.calls.append(("awaiting_without_request",))
        return sorted(
            reward_id
            for reward_id, view in self.rewards.items()
            if view.status is RewardStatus.AWAITING_APPROVAL
            and self._waiting_request(reward_id) is None
        )[:limit]

    def reward_of_run(self, flow_run_id: str) -> str | None:
        self.calls.append(("reward_of_run", flow_run_id))
        return next(
            (r.reward_id for r in self.requests.values() if r.flow_run_id == flow_run_id), None
        )

    # -- decisions -----------------------------------------------------------------------

    def reward(self, reward_id: str) -> RewardView | None:
        self.calls.append(("reward", reward_id))
        return self.rewards.get(reward_id)

    def decisions(self, reward_id: str) -> tuple[DecisionRecord, ...]:
        return tuple(sorted(self.decided.get(reward_id, []), key=lambda d: d.stage))

    def record(
        self,
        reward_id: str,
        stage: int,
        checked: CheckedDecision,
        flow_run_id: str | None,
        now: datetime,
    ) -> str:
        self.calls.append(("record", reward_id, stage))
        if any(d.stage == stage for d in self.decided.get(reward_id, [])):
            raise DecisionConflict(f"stage {stage} of reward {reward_id} was already decided")
        self.decided.setdefault(reward_id, []).append(
            DecisionRecord(
                stage=stage,
                decision=checked.decision,
                approver=checked.approver,
                reason=checked.reason,
                amount=checked.amount,
                decided_at=now,
                approver_id=checked.approver_id,
            )
        )
        return derived_id("decision", reward_id, str(stage))

    def book(self, reward_id: str, kind: str, amount: Money, ref: str, now: datetime) -> None:
        self.calls.append(("book", reward_id, kind))
        if amount.is_zero:
            return
        self.entries.append((reward_id, kind, amount, ref))
        view = self.rewards[reward_id]
        self.rewards[reward_id] = replace(view, balance=view.balance + amount)

    def close(self, reward_id: str, status: RewardStatus, now: datetime) -> None:
        self.calls.append(("close", reward_id, status))
        view = self.rewards.get(reward_id)
        if view is None or view.status is not RewardStatus.AWAITING_APPROVAL:
            raise DecisionConflict(f"reward {reward_id} was decided concurrently")
        self.rewards[reward_id] = replace(view, status=status)
        request = self._waiting_request(reward_id)
        if request is not None:
            request.status, request.closed_at = "decided", now

    def queue_rejection_notice(self, reward: RewardView, reason: str, now: datetime) -> None:
        reward_id = reward.reward.reward_id
        self.calls.append(("queue_rejection_notice", reward_id))
        notice_id = derived_id("notice", reward_id, "rejected")
        if all(n["notification_id"] != notice_id for n in self.notices):
            self.notices.append(
                {
                    "notification_id": notice_id,
                    "contact_id": reward.reward.referrer_id,
                    "kind": "reward_rejected",
                    "reward_id": reward_id,
                    "data": {"amount": reward.reward.amount.format(), "reason": reason},
                }
            )

    def _waiting_request(self, reward_id: str) -> _Request | None:
        return next(
            (
                r
                for r in self.requests.values()
                if r.reward_id == reward_id and r.status == "waiting"
            ),
            None,
        )
