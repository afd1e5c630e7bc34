"""The approvals store's port: approval requests, their waiting runs, and decisions.

The rules of a decision (who may decide, how many stages, what a final approval pays)
are in :mod:`domain.approvals`; this store only reads and writes what they need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from domain.approvals import CheckedDecision
from domain.models import ApprovalView, DecisionRecord, RewardStatus, RewardView, WaitingApproval
from domain.money import Money


class ApprovalsStore(Protocol):
    """``ledger.approvals``: approval requests and the decisions recorded on rewards."""

    # -- requests and the runs that wait on them ----------------------------------------

    def open_requests(
        self, reward_ids: Sequence[str], now: datetime
    ) -> dict[str, tuple[str, str | None]]:
        """One waiting request per reward: reward id -> (request id, flow run id or None).

        Rewards already waiting keep their request (and run); others get a new one.
        """
        ...

    def attach_flow_runs(self, runs: Mapping[str, str]) -> None:
        """Remember which flow run waits for each approval request (request id -> run id)."""
        ...

    def view(self, reward_id: str) -> ApprovalView:
        """The reward, its people, its decisions so far and the referrer's history.

        Raises:
            KeyError: there is no such reward.
        """
        ...

    def waiting(self) -> list[WaitingApproval]:
        """Rewards waiting on a person, oldest request first."""
        ...

    def overdue(
        self, waiting_since: datetime, reminded_before: datetime | None = None
    ) -> list[tuple[str, str, str | None]]:
        """Waiting requests created before ``waiting_since``: (request, reward, run).

        With ``reminded_before``, only those never reminded or last reminded before it.
        """
        ...

    def mark_reminded(self, request_ids: Sequence[str], now: datetime) -> None:
        """Note that the approvers were reminded of these requests at ``now``."""
        ...

    def expire_requests(self, request_ids: Sequence[str], now: datetime) -> list[str]:
        """Close waiting requests whose time ran out; returns the requests expired.

        Their rewards keep awaiting approval and get a new request from the next routing.
        """
        ...

    def awaiting_without_request(self, limit: int) -> list[str]:
        """Rewards awaiting approval that no run waits for (request expired, or a crash
        came between routing and starting the run)."""
        ...

    def reward_of_run(self, flow_run_id: str) -> str | None:
        """The reward whose approval request the run waits for, if any."""
        ...

    # -- decisions: called by one unit of work (tasks.use_cases.approvals) ------------

    def reward(self, reward_id: str) -> RewardView | None:
        """The reward as it stands (status and balance), or None if there is none."""
        ...

    def decisions(self, reward_id: str) -> tuple[DecisionRecord, ...]:
        """The decisions recorded on the reward so far, stage by stage."""
        ...

    def record(
        self,
        reward_id: str,
        stage: int,
        checked: CheckedDecision,
        flow_run_id: str | None,
        now: datetime,
    ) -> str:
        """Store one stage's decision; returns its id.

        Raises:
            DecisionConflict: this stage was already decided.
        """
        ...

    def book(self, reward_id: str, kind: str, amount: Money, ref: str, now: datetime) -> None:
        """Append one ledger entry of ``kind`` (signed ``amount``) to the reward."""
        ...

    def close(self, reward_id: str, status: RewardStatus, now: datetime) -> None:
        """Move the reward from awaiting approval to ``status`` and close its request.

        Raises:
            DecisionConflict: the reward no longer awaits approval.
        """
        ...

    def queue_rejection_notice(self, reward: RewardView, reason: str, now: datetime) -> None:
        """Queue the ``reward_rejected`` email to the referrer (once per reward)."""
        ...


class WithApprovals(Protocol):
    """Anything holding an approvals store: a ledger, or one of its units of work."""

    @property
    def approvals(self) -> ApprovalsStore:
        """The approvals store."""
        ...


class ApprovalsLedger(WithApprovals, Protocol):
    """What an approvals use case needs of the ledger: the store, and units of work."""

    def transaction(self) -> AbstractContextManager[WithApprovals]:
        """Open one transaction; the stores it yields all run in it."""
        ...
