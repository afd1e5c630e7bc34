"""The payouts area of the ledger: payout rows with their keys, claims, results.

:class:`SqlPayoutsStore` is the ``payouts`` store of
:class:`~integrations.ledger.uow.SqlStores`. Exactly once, in three steps: the payout
row with its idempotency key (made by
:meth:`domain.models.PayoutInstruction.key_for`) is committed before any money moves
(:meth:`SqlPayoutsStore.prepare`); a worker leases it (:meth:`SqlPayoutsStore.claim`)
and calls the rail with that key; the result is booked once
(:meth:`SqlPayoutsStore.record_results`), conditional on the payout still pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, or_, select, text, true, update

from domain.clawbacks import net_against_debts
from domain.models import (
    MAX_PAYOUT_ATTEMPTS,
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    RewardStatus,
    derived_id,
)
from domain.money import Money
from integrations.ledger.base import LedgerBase, chunks, pairs
from integrations.ledger.clawbacks import (
    book_netting,
    live_payouts,
    nettable_debts,
    referrers_of,
    settle_by_netting,
)
from integrations.ledger.locks import lock_referrers
from integrations.ledger.tables import (
    PENDING_PAYOUTS_WHERE,
    T_LEDGER_ENTRIES,
    T_PAYOUTS,
    T_REWARDS,
    PayoutRow,
)


class SqlPayoutsStore(LedgerBase):
    """Payouts in the ledger database (:class:`domain.stores.PayoutsStore`)."""

    def prepare(
        self,
        plans: Sequence[tuple[str, PayoutRailKind, str | None]],
        now: datetime,
    ) -> list[PayoutInstruction]:
        """Write the payout rows, with their idempotency keys, before any money moves.

        ``plans`` is (reward id, rail, destination). A reward gets a payout only while
        it is payable or approved and still owed money; the live-payout unique index
        makes a second live payout for the same reward impossible, so racing callers
        end up sharing one row. Returns every pending payout of those rewards, which
        includes any left pending by a run that crashed.

        A referrer's debt (clawed back after payout and not recovered at the provider)
        is netted here, in the transaction that writes the payout row: the payout is
        the reward's balance minus the debt, never below zero, with a ``netted`` entry
        on the reward paid (-) and on each reward in debt (+), all with the payout id
        as ref. A reward whose whole balance settles debts gets no payout row and is
        marked paid. Per referrer these writes are serialized (``lock_referrers``), so
        a debt is netted once and no payout starts for a reward being clawed back.
        """
        reward_ids = [p[0] for p in plans]
        with self._begin() as conn:
            referrers = referrers_of(conn, reward_ids)
            lock_referrers(conn, referrers.values())
            views = {
                v.reward.reward_id: v
                for chunk in chunks(reward_ids)
                for v in self._reward_views(conn, T_REWARDS.c.reward_id.in_(chunk), None)
            }
            # In chunks: PostgreSQL takes at most 65,535 parameters in one statement.
            attempts: dict[Any, Any] = {}
            for chunk in chunks(reward_ids):
                attempts |= pairs(
                    conn,
                    select(PayoutRow.reward_id, func.count())
                    .where(PayoutRow.reward_id.in_(chunk), PayoutRow.status == "failed")
                    .group_by(PayoutRow.reward_id),
                )
            live = live_payouts(conn, reward_ids)
            debts = nettable_debts(conn, referrers.values())
            rows = []
            for reward_id, rail, destination in plans:
                view = views.get(reward_id)
                if view is None or view.status not in (
                    RewardStatus.PAYABLE,
                    RewardStatus.APPROVED,
                ):
                    continue
                if view.balance.amount_minor <= 0:
                    continue
                attempt = attempts.get(reward_id, 0) + 1
                if attempt > MAX_PAYOUT_ATTEMPTS:
                    continue
                if reward_id in live:
                    continue  # its live payout is returned below; nothing to net again
                live.add(reward_id)
                payout_id = derived_id("payout", reward_id, str(attempt))
                owed = debts.get(view.reward.referrer_id, [])
                amount, settled = net_against_debts(view.balance, owed)
                if settled:
                    book_netting(self, conn, reward_id, payout_id, settled, now)
                    taken = dict(settled)
                    debts[view.reward.referrer_id] = [
                        (debtor, debt - taken[debtor]) if debtor in taken else (debtor, debt)
                        for debtor, debt in owed
                    ]
                if amount.is_zero:
                    settle_by_netting(conn, reward_id, now)
                    continue
                rows.append(
                    {
                        "payout_id": payout_id,
                        "reward_id": reward_id,
                        "attempt": attempt,
                        "rail": rail.value,
                        "destination": destination,
                        "amount_minor": amount.amount_minor,
                        "currency": amount.currency,
                        "idempotency_key": PayoutInstruction.key_for(reward_id, rail, attempt),
                        "status": "pending",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            self._insert_ignore(conn, PayoutRow, rows, PayoutRow.payout_id)
        return self.pending(reward_ids=reward_ids)

    def pending(
        self, reward_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[PayoutInstruction]:
        """Payouts stored but not settled: new ones and those a crash left behind."""
        if reward_ids is None:
            stmt = (
                select(T_PAYOUTS)
                .where(_PENDING)
                .order_by(PayoutRow.created_at, PayoutRow.payout_id)
                .limit(limit)
            )
            with self._connect() as conn:
                return [_instruction(r) for r in conn.execute(stmt).mappings()]
        stmt = select(T_PAYOUTS).where(PayoutRow.status == "pending")
        found: list[PayoutInstruction] = []
        with self._connect() as conn:
            # In chunks: PostgreSQL takes at most 65,535 parameters in one statement.
            for chunk in chunks(list(reward_ids)):
                rows = conn.execute(stmt.where(PayoutRow.reward_id.in_(chunk))).mappings()
                found += [_instruction(r) for r in rows]
        found.sort(key=lambda i: (i.key_created_at, i.payout_id))
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
        """Lease up to ``limit`` pending payouts to ``worker`` until ``now + lease``.

        ``stale_before`` keeps to payouts written before it: for taking over what
        crashed calls left, not what a live worker has just written and will claim.

        Only payouts nobody holds are taken: never claimed, released, a lease that ran
        out (its worker crashed or gave up), or already this worker's. Several workers
        calling at once split the pending payouts between them: on Postgres the rows
        are picked ``FOR UPDATE SKIP LOCKED``, so a worker passes over the rows another
        is claiming instead of waiting for them; SQLite serializes writers. The update
        re-checks the claim, so a row is never held by two workers at once.

        A lease is an efficiency, not the safety: a payout sent twice carries the same
        idempotency key, and the provider pays once.
        """
        if reward_ids is not None and not reward_ids:
            return []
        free = and_(
            # All of them: by the pending payouts' index. Some: by their ids (see
            # _PENDING; with the literal SQLite could still choose that index).
            _PENDING if reward_ids is None else T_PAYOUTS.c.status == "pending",
            or_(
                T_PAYOUTS.c.claimed_until.is_(None),
                T_PAYOUTS.c.claimed_until <= now,
                T_PAYOUTS.c.claimed_by == worker,
            ),
            T_PAYOUTS.c.created_at <= stale_before if stale_before is not None else true(),
        )
        taken: list[PayoutInstruction] = []
        with self._begin() as conn:
            for chunk in chunks(list(reward_ids)) if reward_ids is not None else [None]:
                if len(taken) >= limit:
                    break
                pick = select(T_PAYOUTS.c.payout_id).where(free)
                if chunk is not None:
                    pick = pick.where(T_PAYOUTS.c.reward_id.in_(chunk))
                pick = (
                    pick.order_by(T_PAYOUTS.c.created_at, T_PAYOUTS.c.payout_id)
                    .limit(limit - len(taken))
                    .with_for_update(skip_locked=True)
                )
                ids = list(conn.execute(pick).scalars())
                if not ids:
                    continue
                rows = conn.execute(
                    update(T_PAYOUTS)
                    .where(T_PAYOUTS.c.payout_id.in_(ids), free)
                    .values(claimed_by=worker, claimed_until=now + lease)
                    .returning(*T_PAYOUTS.c)
                ).mappings()
                taken += [_instruction(r) for r in rows]
        return sorted(taken, key=lambda i: (i.key_created_at, i.payout_id))

    def release(self, payout_ids: Sequence[str], worker: str) -> int:
        """Give back the leases ``worker`` holds on ``payout_ids`` (still pending ones)."""
        released = 0
        with self._begin() as conn:
            for chunk in chunks(list(payout_ids)):
                released += conn.execute(
                    update(T_PAYOUTS)
                    .where(
                        T_PAYOUTS.c.payout_id.in_(chunk),
                        T_PAYOUTS.c.claimed_by == worker,
                        T_PAYOUTS.c.status == "pending",
                    )
                    .values(claimed_by=None, claimed_until=None)
                ).rowcount
        return released

    def record_results(self, results: Sequence[PayoutResult], now: datetime) -> int:
        """Settle payouts: a success books the ``paid`` entry and marks the reward paid.

        Conditional on the payout still being pending, so settling twice (a retry, a
        second worker) books nothing twice. Returns how many payouts were settled paid.

        One transaction, a few statements per chunk of payouts whatever its size: the
        successes move with one ``UPDATE ... RETURNING`` (only the rows still pending come
        back, and only those get their entry, their reward's status and their notice),
        the others with one ``UPDATE`` per status they go to. Should a payout have more
        than one result, a success wins: the money moved.
        """
        succeeded: dict[str, PayoutResult] = {}
        others: dict[str, PayoutResult] = {}
        for result in results:
            if result.outcome is PayoutOutcome.SUCCEEDED:
                succeeded.setdefault(result.payout_id, result)
            else:
                others.setdefault(result.payout_id, result)
        unsettled: dict[str, list[PayoutResult]] = {}
        for payout_id, result in others.items():
            if payout_id not in succeeded:
                status = "failed" if result.outcome is PayoutOutcome.FAILED else "pending"
                unsettled.setdefault(status, []).append(result)
        paid = 0
        with self._begin() as conn:
            for chunk in chunks(list(succeeded.values())):
                paid += self._book_paid_payouts(conn, chunk, now)
            for status, group in unsettled.items():
                for chunk in chunks(group):
                    errors = {r.payout_id: (r.error or "")[:512] or None for r in chunk}
                    conn.execute(
                        update(T_PAYOUTS)
                        .where(
                            T_PAYOUTS.c.payout_id.in_(list(errors)),
                            T_PAYOUTS.c.status == "pending",
                        )
                        .values(
                            status=status,
                            error=_by_payout(errors, T_PAYOUTS.c.error),
                            tries=T_PAYOUTS.c.tries + 1,
                            # A payout to retry goes back to whoever comes next.
                            claimed_by=None,
                            claimed_until=None,
                            updated_at=now,
                        )
                    )
        return paid

    def _book_paid_payouts(
        self, conn: Connection, results: Sequence[PayoutResult], now: datetime
    ) -> int:
        """Mark ``results`` (successes) succeeded if still pending; book what moved."""
        refs = {r.payout_id: r.provider_ref for r in results}
        moved = conn.execute(
            update(T_PAYOUTS)
            .where(T_PAYOUTS.c.payout_id.in_(list(refs)), T_PAYOUTS.c.status == "pending")
            .values(
                status="succeeded",
                provider_ref=_by_payout(refs, T_PAYOUTS.c.provider_ref),
                error=None,
                tries=T_PAYOUTS.c.tries + 1,
                updated_at=now,
            )
            .returning(
                T_PAYOUTS.c.payout_id,
                T_PAYOUTS.c.reward_id,
                T_PAYOUTS.c.amount_minor,
                T_PAYOUTS.c.currency,
                T_PAYOUTS.c.rail,
            )
        ).all()
        if not moved:
            return 0
        conn.execute(
            self._insert(T_LEDGER_ENTRIES)
            .values(
                [
                    {
                        "reward_id": row.reward_id,
                        "kind": "paid",
                        "amount_minor": -row.amount_minor,
                        "currency": row.currency,
                        "ref": row.payout_id,
                        "created_at": now,
                    }
                    for row in moved
                ]
            )
            .on_conflict_do_nothing()
        )
        referrers = pairs(
            conn,
            update(T_REWARDS)
            .where(T_REWARDS.c.reward_id.in_([row.reward_id for row in moved]))
            .values(status=RewardStatus.PAID.value, updated_at=now)
            .returning(T_REWARDS.c.reward_id, T_REWARDS.c.referrer_id),
        )
        self._queue_notifications(
            conn,
            [
                {
                    "notification_id": derived_id("notice", row.reward_id, "paid"),
                    "contact_id": referrers[row.reward_id],
                    "kind": "reward_paid",
                    "reward_id": row.reward_id,
                    "data": {
                        "amount": Money(row.amount_minor, row.currency).format(),
                        "rail": row.rail,
                    },
                }
                for row in moved
            ],
            now,
        )
        return len(moved)


# The pending payouts' partial index serves a query only if it names the status as a
# literal: a bound parameter does not match the index's condition.
_PENDING = text(PENDING_PAYOUTS_WHERE)


def _by_payout(values: Mapping[str, str | None], column: Any) -> Any:
    """``CASE payout_id WHEN ... THEN ...``: one value per payout in a single UPDATE."""
    return case(
        {payout_id: literal(value, column.type) for payout_id, value in values.items()},
        value=T_PAYOUTS.c.payout_id,
    )


def _instruction(r: Mapping[Any, Any]) -> PayoutInstruction:
    return PayoutInstruction(
        payout_id=r["payout_id"],
        reward_id=r["reward_id"],
        amount=Money(r["amount_minor"], r["currency"]),
        rail=PayoutRailKind(r["rail"]),
        idempotency_key=r["idempotency_key"],
        destination=r["destination"],
        key_created_at=r["created_at"],
        attempt=r["attempt"],
    )
