"""The approvals store: approval requests, the runs that wait on them, and decisions.

:class:`SqlApprovalsStore` is ``ledger.approvals`` (typed by
:class:`domain.stores.approvals.ApprovalsStore`). It reads and writes rows only: what a
decision must satisfy, which stage is final and what a fully approved reward pays are
rules of :mod:`domain.approvals`, applied by the use case in
:mod:`tasks.use_cases.approvals`, which calls the decision methods here inside one unit
of work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from domain.approvals import CheckedDecision
from domain.errors import DecisionConflict
from domain.models import (
    ApprovalView,
    Decision,
    DecisionRecord,
    RewardStatus,
    RewardView,
    WaitingApproval,
    derived_id,
)
from domain.money import Money
from integrations.ledger.base import LedgerBase, chunks, contact_from_row, pairs
from integrations.ledger.tables import (
    T_APPROVAL_DECISIONS,
    T_CONTACTS,
    T_CONVERSIONS,
    T_LEDGER_ENTRIES,
    T_REWARDS,
    AccountRow,
    ApprovalDecisionRow,
    ApprovalRequestRow,
    ContactRow,
    ConversionRow,
)


class SqlApprovalsStore(LedgerBase):
    """Approval requests and decisions in the ledger database (``ledger.approvals``)."""

    # -- requests and the runs that wait on them -----------------------------------------

    def open_requests(
        self, reward_ids: Sequence[str], now: datetime
    ) -> dict[str, tuple[str, str | None]]:
        """One waiting request per reward: reward id -> (request id, flow run id or None).

        Rewards already waiting keep their request (and run); others get a new one.
        A few statements per chunk of rewards, whatever its size: the waiting requests
        in one query, the attempts so far of the others in a second, their new
        requests in one insert.
        """
        out: dict[str, tuple[str, str | None]] = {}
        with self._begin() as conn:
            for chunk in chunks(list(dict.fromkeys(reward_ids))):
                waiting = {
                    r.reward_id: (r.request_id, r.flow_run_id)
                    for r in conn.execute(
                        select(
                            ApprovalRequestRow.reward_id,
                            ApprovalRequestRow.request_id,
                            ApprovalRequestRow.flow_run_id,
                        ).where(
                            ApprovalRequestRow.reward_id.in_(chunk),
                            ApprovalRequestRow.status == "waiting",
                        )
                    )
                }
                missing = [reward_id for reward_id in chunk if reward_id not in waiting]
                tried = (
                    pairs(
                        conn,
                        select(ApprovalRequestRow.reward_id, func.count())
                        .where(ApprovalRequestRow.reward_id.in_(missing))
                        .group_by(ApprovalRequestRow.reward_id),
                    )
                    if missing
                    else {}
                )
                rows = []
                for reward_id in missing:
                    attempt = 1 + int(tried.get(reward_id, 0))
                    request_id = derived_id("approval", reward_id, str(attempt))
                    rows.append(
                        {
                            "request_id": request_id,
                            "reward_id": reward_id,
                            "attempt": attempt,
                            "status": "waiting",
                            "created_at": now,
                        }
                    )
                    waiting[reward_id] = (request_id, None)
                # A request written concurrently by another run is kept, as before.
                self._insert_ignore(conn, ApprovalRequestRow, rows, ApprovalRequestRow.request_id)
                out.update((reward_id, waiting[reward_id]) for reward_id in chunk)
        return out

    def attach_flow_runs(self, runs: Mapping[str, str]) -> None:
        """Remember which flow run waits for each approval request (one executemany)."""
        if not runs:
            return
        with self._begin() as conn:
            conn.execute(
                update(ApprovalRequestRow)
                .where(ApprovalRequestRow.request_id == bindparam("request"))
                .values(flow_run_id=bindparam("run")),
                [{"request": request, "run": run} for request, run in runs.items()],
            )

    def view(self, reward_id: str) -> ApprovalView:
        """The reward, its people, its decisions so far and the referrer's history."""
        with self._connect() as conn:
            views = self._reward_views(conn, T_REWARDS.c.reward_id == reward_id, None)
            if not views:
                raise KeyError(f"no reward {reward_id}")
            view = views[0]
            referrer = contact_from_row(
                conn.execute(
                    select(T_CONTACTS).where(ContactRow.contact_id == view.reward.referrer_id)
                )
                .mappings()
                .one()
            )
            conversion = (
                conn.execute(
                    select(T_CONVERSIONS).where(
                        ConversionRow.conversion_id == view.reward.conversion_id
                    )
                )
                .mappings()
                .one()
            )
            referee_account = None
            if conversion["referee_account_id"]:
                referee_account = (
                    conn.execute(
                        select(AccountRow.name).where(
                            AccountRow.account_id == conversion["referee_account_id"]
                        )
                    ).scalar_one_or_none()
                    or conversion["referee_account_id"]
                )
            decisions = _decisions(conn, reward_id)
            history = conn.execute(
                select(
                    func.count(),
                    func.sum(case((T_REWARDS.c.status == "paid", 1), else_=0)),
                ).where(T_REWARDS.c.referrer_id == referrer.contact_id)
            ).one()
            paid_total = conn.execute(
                select(func.coalesce(func.sum(-T_LEDGER_ENTRIES.c.amount_minor), 0))
                .select_from(T_LEDGER_ENTRIES.join(T_REWARDS))
                .where(
                    T_REWARDS.c.referrer_id == referrer.contact_id,
                    T_LEDGER_ENTRIES.c.kind == "paid",
                )
            ).scalar_one()
        amount = conversion["amount_minor"]
        return ApprovalView(
            reward=view,
            referrer=referrer,
            referee_account=referee_account,
            referee_contact=conversion["referee_contact_id"],
            conversion_amount=Money(amount, conversion["currency"]) if amount is not None else None,
            decisions=decisions,
            referrer_paid_count=int(history[1] or 0),
            referrer_paid_total=Money(int(paid_total), view.reward.amount.currency),
            referrer_rewards_count=int(history[0]),
            referee_account_id=conversion["referee_account_id"],
        )

    # -- decisions (one unit of work: tasks.use_cases.approvals.record_decision) -------

    def reward(self, reward_id: str) -> RewardView | None:
        """The reward as it stands (status and balance), or None if there is none."""
        with self._connect() as conn:
            views = self._reward_views(conn, T_REWARDS.c.reward_id == reward_id, None)
        return views[0] if views else None

    def decisions(self, reward_id: str) -> tuple[DecisionRecord, ...]:
        """The decisions recorded on the reward so far, stage by stage."""
        with self._connect() as conn:
            return _decisions(conn, reward_id)

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
            DecisionConflict: this stage was already decided (e.g. a racing resume). In
                a unit of work the transaction is then unusable (PostgreSQL aborts it):
                let the exception end the block, which rolls it back.
        """
        decision_id = derived_id("decision", reward_id, str(stage))
        try:
            with self._begin() as conn:
                conn.execute(
                    self._insert(ApprovalDecisionRow),
                    {
                        "decision_id": decision_id,
                        "reward_id": reward_id,
                        "stage": stage,
                        "decision": checked.decision.value,
                        "approver": checked.approver,
                        "approver_id": checked.approver_id,
                        "reason": checked.reason,
                        "amount_minor": checked.amount.amount_minor,
                        "currency": checked.amount.currency,
                        "flow_run_id": flow_run_id,
                        "decided_at": now,
                    },
                )
        except IntegrityError as exc:
            raise DecisionConflict(
                f"stage {stage} of reward {reward_id} was already decided"
            ) from exc
        return decision_id

    def book(self, reward_id: str, kind: str, amount: Money, ref: str, now: datetime) -> None:
        """Append one ledger entry of ``kind`` to the reward (nothing for a zero amount)."""
        with self._begin() as conn:
            self._entry(conn, reward_id, kind, amount.amount_minor, amount.currency, ref, now)

    def close(self, reward_id: str, status: RewardStatus, now: datetime) -> None:
        """Move the reward from awaiting approval to ``status`` and close its request.

        Raises:
            DecisionConflict: the reward no longer awaits approval (decided concurrently).
        """
        with self._begin() as conn:
            moved = conn.execute(
                update(T_REWARDS)
                .where(
                    T_REWARDS.c.reward_id == reward_id,
                    T_REWARDS.c.status == RewardStatus.AWAITING_APPROVAL.value,
                )
                .values(status=status.value, updated_at=now)
            ).rowcount
            if moved != 1:
                raise DecisionConflict(f"reward {reward_id} was decided concurrently")
            conn.execute(
                update(ApprovalRequestRow)
                .where(
                    ApprovalRequestRow.reward_id == reward_id,
                    ApprovalRequestRow.status == "waiting",
                )
                .values(status="decided", closed_at=now)
            )

    def queue_rejection_notice(self, reward: RewardView, reason: str, now: datetime) -> None:
        """Queue the ``reward_rejected`` email to the referrer (once per reward)."""
        reward_id = reward.reward.reward_id
        with self._begin() as conn:
            self._queue_notifications(
                conn,
                [
                    {
                        "notification_id": derived_id("notice", reward_id, "rejected"),
                        "contact_id": reward.reward.referrer_id,
                        "kind": "reward_rejected",
                        "reward_id": reward_id,
                        "data": {"amount": reward.reward.amount.format(), "reason": reason},
                    }
                ],
                now,
            )

    def waiting(self) -> list[WaitingApproval]:
        """Rewards waiting on a person, oldest request first."""
        stages = (
            select(func.count())
            .where(ApprovalDecisionRow.reward_id == T_REWARDS.c.reward_id)
            .scalar_subquery()
        )
        balance = (
            select(func.coalesce(func.sum(T_LEDGER_ENTRIES.c.amount_minor), 0))
            .where(T_LEDGER_ENTRIES.c.reward_id == T_REWARDS.c.reward_id)
            .scalar_subquery()
        )
        with self._connect() as conn:
            rows = conn.execute(
                select(
                    T_REWARDS.c.reward_id,
                    T_REWARDS.c.referrer_id,
                    T_REWARDS.c.currency,
                    T_REWARDS.c.flags,
                    ContactRow.name,
                    ApprovalRequestRow.flow_run_id,
                    ApprovalRequestRow.created_at,
                    balance.label("balance"),
                    stages.label("stages"),
                )
                .join(ApprovalRequestRow, ApprovalRequestRow.reward_id == T_REWARDS.c.reward_id)
                .join(ContactRow, ContactRow.contact_id == T_REWARDS.c.referrer_id)
                .where(
                    ApprovalRequestRow.status == "waiting",
                    T_REWARDS.c.status == RewardStatus.AWAITING_APPROVAL.value,
                )
                .order_by(ApprovalRequestRow.created_at, T_REWARDS.c.reward_id)
            ).mappings()
            return [
                WaitingApproval(
                    reward_id=r["reward_id"],
                    referrer_id=r["referrer_id"],
                    referrer_name=r["name"],
                    amount=Money(int(r["balance"]), r["currency"]),
                    flags=tuple(f for f in r["flags"].split(",") if f),
                    flow_run_id=r["flow_run_id"],
                    waiting_since=r["created_at"],
                    stages_done=int(r["stages"]),
                )
                for r in rows
            ]

    def overdue(
        self, waiting_since: datetime, reminded_before: datetime | None = None
    ) -> list[tuple[str, str, str | None]]:
        """Waiting requests created before ``waiting_since``: (request, reward, run).

        With ``reminded_before``, only those never reminded or last reminded before it.
        """
        stmt = select(
            ApprovalRequestRow.request_id,
            ApprovalRequestRow.reward_id,
            ApprovalRequestRow.flow_run_id,
        ).where(
            ApprovalRequestRow.status == "waiting", ApprovalRequestRow.created_at < waiting_since
        )
        if reminded_before is not None:
            stmt = stmt.where(
                or_(
                    ApprovalRequestRow.reminded_at.is_(None),
                    ApprovalRequestRow.reminded_at < reminded_before,
                )
            )
        with self._connect() as conn:
            return [
                (r.request_id, r.reward_id, r.flow_run_id)
                for r in conn.execute(stmt.order_by(ApprovalRequestRow.created_at))
            ]

    def mark_reminded(self, request_ids: Sequence[str], now: datetime) -> None:
        with self._begin() as conn:
            for chunk in chunks(request_ids):
                conn.execute(
                    update(ApprovalRequestRow)
                    .where(ApprovalRequestRow.request_id.in_(chunk))
                    .values(reminded_at=now)
                )

    def expire_requests(self, request_ids: Sequence[str], now: datetime) -> list[str]:
        """Close waiting requests whose time ran out; their rewards keep awaiting approval
        and get a new request from the next routing. Returns the requests expired."""
        expired: list[str] = []
        with self._begin() as conn:
            for chunk in chunks(request_ids):
                expired += (
                    conn.execute(
                        update(ApprovalRequestRow)
                        .where(
                            ApprovalRequestRow.request_id.in_(chunk),
                            ApprovalRequestRow.status == "waiting",
                        )
                        .values(status="expired", closed_at=now)
                        .returning(ApprovalRequestRow.request_id)
                    )
                    .scalars()
                    .all()
                )
        return expired

    def awaiting_without_request(self, limit: int) -> list[str]:
        """Rewards awaiting approval that no run waits for (their request expired, or a
        crash came between routing and starting the run)."""
        waiting = select(ApprovalRequestRow.reward_id).where(
            ApprovalRequestRow.reward_id == T_REWARDS.c.reward_id,
            ApprovalRequestRow.status == "waiting",
        )
        with self._connect() as conn:
            return list(
                conn.execute(
                    select(T_REWARDS.c.reward_id)
                    .where(
                        T_REWARDS.c.status == RewardStatus.AWAITING_APPROVAL.value,
                        ~exists(waiting),
                    )
                    .order_by(T_REWARDS.c.reward_id)
                    .limit(limit)
                ).scalars()
            )

    def reward_of_run(self, flow_run_id: str) -> str | None:
        with self._connect() as conn:
            return conn.execute(
                select(ApprovalRequestRow.reward_id).where(
                    ApprovalRequestRow.flow_run_id == flow_run_id
                )
            ).scalar_one_or_none()


def _decisions(conn: Connection, reward_id: str) -> tuple[DecisionRecord, ...]:
    return tuple(
        DecisionRecord(
            stage=d["stage"],
            decision=Decision(d["decision"]),
            approver=d["approver"],
            reason=d["reason"],
            amount=Money(d["amount_minor"], d["currency"]),
            decided_at=d["decided_at"],
            approver_id=d["approver_id"],
        )
        for d in conn.execute(
            select(T_APPROVAL_DECISIONS)
            .where(ApprovalDecisionRow.reward_id == reward_id)
            .order_by(ApprovalDecisionRow.stage)
        ).mappings()
    )
