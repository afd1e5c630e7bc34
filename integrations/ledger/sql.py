"""The ledger on SQLAlchemy: every stage's reads and writes, each write one transaction.

Writes are idempotent: inserts ignore rows that already exist (the unique constraints
in :mod:`integrations.ledger.tables` decide what "already" means), and status changes
are conditional (``... WHERE status IN (expected)``) so two runs racing on the same row
cannot both move it. Money only ever enters through ``ledger_entries`` inserts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from domain.approvals import CheckedDecision, agreed_amount, status_after
from domain.clawbacks import net_against_debts
from domain.errors import InvalidDecision
from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import (
    ApprovalView,
    Contact,
    Conversion,
    Decision,
    DecisionRecord,
    IngestReport,
    Moment,
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    Rejected,
    Reward,
    RewardStatus,
    RewardView,
    SourceEvent,
    WaitingApproval,
    derived_id,
)
from domain.money import Money
from domain.ports import SourceBatch
from integrations.ledger.base import (
    MAX_PAYOUT_ATTEMPTS,
    LedgerBase,
    chunks,
    contact_from_row,
    contact_row,
    conversion_from_row,
    event_from_row,
    event_row,
    pairs,
    reward_row,
)
from integrations.ledger.clawbacks import (
    ClosedRewardApprovalsLedger,
    book_netting,
    live_payouts,
    lock_referrers,
    nettable_debts,
    referrers_of,
    settle_by_netting,
)
from integrations.ledger.destinations import DestinationLedger, record_destination_changes
from integrations.ledger.detection import DetectionLedger
from integrations.ledger.fraud import FraudLedger
from integrations.ledger.handoffs import HandoffLedger
from integrations.ledger.history import HistoryLedger
from integrations.ledger.metrics import MetricsLedger
from integrations.ledger.partners import PartnerLedger
from integrations.ledger.reconcile import ReconcileLedger
from integrations.ledger.reward_rules import RewardRulesLedger
from integrations.ledger.stripe_conversions import StripeConversionLedger
from integrations.ledger.tables import (
    T_LEDGER_ENTRIES,
    T_PAYOUTS,
    T_REWARDS,
    T_SOURCE_EVENTS,
    AccountRow,
    ApprovalDecisionRow,
    ApprovalRequestRow,
    AskRow,
    ContactRow,
    ConversionRow,
    DetractorHandoffRow,
    FollowUpRow,
    LedgerEntryRow,
    MomentRow,
    NotificationRow,
    PayoutRow,
    ProviderEventRow,
    QuarantineRow,
    ReferralCodeRow,
    RewardRow,
    SourceCursorRow,
    SourceEventRow,
)
from integrations.ledger.touchpoints import TouchpointLedger, record_conversions_touches
from integrations.ledger.uow import SqlStores
from integrations.ledger.webhooks import WebhookLedger


class DecisionConflict(InvalidDecision):
    """Another decision on the same approval stage was recorded first."""


class SqlLedger(
    SqlStores,
    PartnerLedger,
    DetectionLedger,
    HistoryLedger,
    WebhookLedger,
    StripeConversionLedger,
    ClosedRewardApprovalsLedger,
    ReconcileLedger,
    MetricsLedger,
    FraudLedger,
    RewardRulesLedger,
    TouchpointLedger,
    DestinationLedger,
    HandoffLedger,
    LedgerBase,
):
    """The ledger database behind SQLAlchemy (SQLite or PostgreSQL).

    The ledger is becoming a factory of area stores (:mod:`domain.stores`): each store
    is an attribute (``ledger.approvers``), each call its own transaction, and
    :meth:`transaction` yields the same stores bound to one transaction. The areas not
    yet moved into stores are still mixins of :class:`LedgerBase` among the bases.
    """

    def __init__(self, engine: Engine) -> None:
        LedgerBase.__init__(self, engine)
        SqlStores.__init__(self, engine)

    @contextmanager
    def transaction(self) -> Iterator[SqlStores]:
        """One unit of work: the stores it yields share one transaction, committed when
        the block ends, rolled back when it raises."""
        with self.engine.begin() as conn:
            yield SqlStores(self.engine, conn)

    # -- ingest ----------------------------------------------------------------------

    def cursor(self, source: str) -> str | None:
        with self._connect() as conn:
            return conn.execute(
                select(SourceCursorRow.cursor).where(SourceCursorRow.source == source)
            ).scalar_one_or_none()

    def record_batch(self, batch: SourceBatch, now: datetime) -> IngestReport:
        """Store one source read atomically: reference rows, events, rejects, cursor.

        The cursor moves in the same transaction as the events it covers, so a crash
        either keeps both or neither: the next run re-reads, and duplicates are ignored.
        A contact stored with another payout destination than before gets its
        ``payout_destination_changes`` rows in the same transaction.
        """
        with self._begin() as conn:
            self._upsert(
                conn,
                AccountRow,
                [
                    {
                        "account_id": a.account_id,
                        "name": a.name,
                        "domain": a.domain,
                        "customer_since": a.customer_since,
                        "updated_at": now,
                    }
                    for a in batch.accounts
                ],
                "account_id",
            )
            record_destination_changes(conn, batch.contacts, batch.source, now)
            self._upsert_contacts(conn, [contact_row(c, now) for c in batch.contacts])
            inserted = self._insert_ignore(
                conn, SourceEventRow, [event_row(e, now) for e in batch.events], SourceEventRow.id
            )
            # A reject delivered again is counted as quarantined all the same.
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(batch.rejected, "ingest", now),
                QuarantineRow.id,
            )
            if batch.cursor is not None:
                self._upsert(
                    conn,
                    SourceCursorRow,
                    [{"source": batch.source, "cursor": batch.cursor, "updated_at": now}],
                    "source",
                )
        return IngestReport(
            source=batch.source,
            records_in=batch.records_in,
            new_events=len(inserted),
            already_seen=len(batch.events) - len(inserted),
            quarantined=len(batch.rejected),
            reference_rows=batch.reference_only,
        )

    def _upsert_contacts(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or refresh contacts. A source that does not know a contact's Stripe
        ids (sends none) keeps the ids another source set, rather than erasing them."""
        if not rows:
            return
        stmt = self._insert(ContactRow)
        keep = ("stripe_customer_id", "stripe_account_id")
        stmt = stmt.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={
                c: (
                    func.coalesce(getattr(stmt.excluded, c), getattr(ContactRow, c))
                    if c in keep
                    else getattr(stmt.excluded, c)
                )
                for c in rows[0]
                if c != "contact_id"
            },
        )
        conn.execute(stmt, list(rows))

    # -- detection -------------------------------------------------------------------

    def undetected_events(self, after_id: int, limit: int) -> list[tuple[int, SourceEvent]]:
        with self._connect() as conn:
            rows = conn.execute(
                select(T_SOURCE_EVENTS)
                .where(T_SOURCE_EVENTS.c.detected_at.is_(None), T_SOURCE_EVENTS.c.id > after_id)
                .order_by(T_SOURCE_EVENTS.c.id)
                .limit(limit)
            ).mappings()
            return [(row["id"], event_from_row(row)) for row in rows]

    def record_detection(
        self,
        event_ids: Sequence[int],
        moments: Sequence[Moment],
        detractors: Sequence[SourceEvent],
        now: datetime,
    ) -> int:
        """Store moments and detractor follow-ups; mark the events examined."""
        with self._begin() as conn:
            new = self._insert_ignore(
                conn,
                MomentRow,
                [
                    {
                        "moment_id": m.moment_id,
                        "type": m.type.value,
                        "contact_id": m.contact_id,
                        "account_id": m.account_id,
                        "occurred_at": m.occurred_at,
                        "source_event": m.source_event,
                        "detail": m.detail,
                        "status": "new",
                    }
                    for m in moments
                ],
                MomentRow.moment_id,
            )
            self._insert_ignore(
                conn,
                FollowUpRow,
                [
                    {
                        "source_event": e.key,
                        "contact_id": e.contact_id,
                        "account_id": e.account_id,
                        "score": e.score,
                        "occurred_at": e.occurred_at,
                    }
                    for e in detractors
                ],
                FollowUpRow.source_event,
            )
            for ids in chunks(event_ids):
                conn.execute(
                    update(T_SOURCE_EVENTS)
                    .where(T_SOURCE_EVENTS.c.id.in_(ids))
                    .values(detected_at=now)
                )
        return len(new)

    # -- conversions -----------------------------------------------------------------

    def events_to_convert(self, after_id: int, limit: int) -> list[tuple[int, SourceEvent]]:
        with self._connect() as conn:
            rows = conn.execute(
                select(T_SOURCE_EVENTS)
                .where(
                    T_SOURCE_EVENTS.c.converted_at.is_(None),
                    T_SOURCE_EVENTS.c.referral_code.is_not(None),
                    T_SOURCE_EVENTS.c.id > after_id,
                )
                .order_by(T_SOURCE_EVENTS.c.id)
                .limit(limit)
            ).mappings()
            return [(row["id"], event_from_row(row)) for row in rows]

    def code_owners(self, codes: Iterable[str]) -> dict[str, Contact]:
        wanted = sorted(set(codes))
        owners: dict[str, Contact] = {}
        with self._connect() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(
                    select(ReferralCodeRow.code, ContactRow.__table__)
                    .join(ContactRow, ContactRow.contact_id == ReferralCodeRow.contact_id)
                    .where(ReferralCodeRow.code.in_(chunk))
                ).mappings():
                    owners[row["code"]] = contact_from_row(row)
        return owners

    def record_conversions(
        self,
        event_ids: Sequence[int],
        conversions: Sequence[Conversion],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        with self._begin() as conn:
            new = self._insert_ignore(
                conn,
                ConversionRow,
                [
                    {
                        "conversion_id": c.conversion_id,
                        "source_event": c.source_event,
                        "referral_code": c.referral_code,
                        "referrer_id": c.referrer_id,
                        "referee_account_id": c.referee_account_id,
                        "referee_contact_id": c.referee_contact_id,
                        "referee_email_domain": c.referee_email_domain,
                        "milestone": c.milestone.value,
                        "occurred_at": c.occurred_at,
                        "amount_minor": c.amount.amount_minor if c.amount else None,
                        "currency": c.amount.currency if c.amount else None,
                        "created_at": now,
                    }
                    for c in conversions
                ],
                ConversionRow.conversion_id,
            )
            inserted = set(new)
            record_conversions_touches(
                self, conn, [(c, None) for c in conversions if c.conversion_id in inserted], now
            )
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(rejected, "conversion", now),
                QuarantineRow.id,
            )
            for ids in chunks(event_ids):
                conn.execute(
                    update(T_SOURCE_EVENTS)
                    .where(T_SOURCE_EVENTS.c.id.in_(ids))
                    .values(converted_at=now)
                )
        return len(new)

    # -- rewards ---------------------------------------------------------------------

    def conversions_to_reward(self, limit: int) -> list[Conversion]:
        with self._connect() as conn:
            rows = conn.execute(
                select(ConversionRow.__table__)
                .where(ConversionRow.rewarded_at.is_(None))
                .order_by(ConversionRow.occurred_at, ConversionRow.conversion_id)
                .limit(limit)
            ).mappings()
            return [conversion_from_row(r) for r in rows]

    def record_rewards(
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

    def rewards(self, reward_ids: Iterable[str]) -> dict[str, RewardView]:
        ids = sorted(set(reward_ids))
        found: dict[str, RewardView] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                for view in self._reward_views(conn, T_REWARDS.c.reward_id.in_(chunk), None):
                    found[view.reward.reward_id] = view
        return found

    def rewards_to_route(self, as_of: datetime, after: str, limit: int) -> list[RewardView]:
        """Rewards whose holding period is over and that are not yet on their way, by id
        after ``after`` (so one pass visits each once, even those that stay payable).

        The reward of a referrer whose payout destination changed since a person last
        approved one of their rewards so flagged carries ``payout_destination_changed``
        (see :meth:`referrers_with_changed_destination`), already payable ones too:
        they would be paid to the new destination."""
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
        changed = self.referrers_with_changed_destination(v.reward.referrer_id for v in views)
        return [
            replace(
                v, reward=replace(v.reward, flags=(*v.reward.flags, PAYOUT_DESTINATION_CHANGED))
            )
            if v.reward.referrer_id in changed and PAYOUT_DESTINATION_CHANGED not in v.reward.flags
            else v
            for v in views
        ]

    def move_rewards(
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

    # -- payouts ---------------------------------------------------------------------

    def prepare_payouts(
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
        return self.pending_payouts(reward_ids=reward_ids)

    def pending_payouts(
        self, reward_ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[PayoutInstruction]:
        """Payouts stored but not settled: new ones and those a crash left behind."""
        stmt = select(PayoutRow.__table__).where(PayoutRow.status == "pending")
        order = (PayoutRow.created_at, PayoutRow.payout_id)
        if reward_ids is None:
            stmt = stmt.order_by(*order).limit(limit)
            with self._connect() as conn:
                return [_instruction(r) for r in conn.execute(stmt).mappings()]
        found: list[PayoutInstruction] = []
        with self._connect() as conn:
            # In chunks: PostgreSQL takes at most 65,535 parameters in one statement.
            for chunk in chunks(list(reward_ids)):
                rows = conn.execute(stmt.where(PayoutRow.reward_id.in_(chunk))).mappings()
                found += [_instruction(r) for r in rows]
        found.sort(key=lambda i: (i.key_created_at, i.payout_id))
        return found if limit is None else found[:limit]

    def claim_payouts(
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
            T_PAYOUTS.c.status == "pending",
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

    def release_payouts(self, payout_ids: Sequence[str], worker: str) -> int:
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

    def record_payout_results(self, results: Sequence[PayoutResult], now: datetime) -> int:
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

    # -- approvals -------------------------------------------------------------------

    def open_approval_requests(
        self, reward_ids: Sequence[str], now: datetime
    ) -> dict[str, tuple[str, str | None]]:
        """One waiting request per reward: reward id -> (request id, flow run id or None).

        Rewards already waiting keep their request (and run); others get a new one.
        """
        out: dict[str, tuple[str, str | None]] = {}
        with self._begin() as conn:
            for reward_id in reward_ids:
                waiting = conn.execute(
                    select(ApprovalRequestRow.request_id, ApprovalRequestRow.flow_run_id).where(
                        ApprovalRequestRow.reward_id == reward_id,
                        ApprovalRequestRow.status == "waiting",
                    )
                ).first()
                if waiting is None:
                    attempt = (
                        1
                        + conn.execute(
                            select(func.count()).where(ApprovalRequestRow.reward_id == reward_id)
                        ).scalar_one()
                    )
                    request_id = derived_id("approval", reward_id, str(attempt))
                    self._insert_ignore(
                        conn,
                        ApprovalRequestRow,
                        [
                            {
                                "request_id": request_id,
                                "reward_id": reward_id,
                                "attempt": attempt,
                                "status": "waiting",
                                "created_at": now,
                            }
                        ],
                        ApprovalRequestRow.request_id,
                    )
                    out[reward_id] = (request_id, None)
                else:
                    out[reward_id] = (waiting.request_id, waiting.flow_run_id)
        return out

    def attach_flow_runs(self, runs: Mapping[str, str]) -> None:
        """Remember which flow run waits for each approval request."""
        with self._begin() as conn:
            for request_id, flow_run_id in runs.items():
                conn.execute(
                    update(ApprovalRequestRow)
                    .where(ApprovalRequestRow.request_id == request_id)
                    .values(flow_run_id=flow_run_id)
                )

    def approval_view(self, reward_id: str) -> ApprovalView:
        """The reward, its people, its decisions so far and the referrer's history."""
        with self._connect() as conn:
            views = self._reward_views(conn, T_REWARDS.c.reward_id == reward_id, None)
            if not views:
                raise KeyError(f"no reward {reward_id}")
            view = views[0]
            referrer = contact_from_row(
                conn.execute(
                    select(ContactRow.__table__).where(
                        ContactRow.contact_id == view.reward.referrer_id
                    )
                )
                .mappings()
                .one()
            )
            conversion = (
                conn.execute(
                    select(ConversionRow.__table__).where(
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
            decisions = tuple(
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
                    select(ApprovalDecisionRow.__table__)
                    .where(ApprovalDecisionRow.reward_id == reward_id)
                    .order_by(ApprovalDecisionRow.stage)
                ).mappings()
            )
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

    def record_decision(
        self,
        reward_id: str,
        stage: int,
        checked: CheckedDecision,
        stages_needed: int,
        flow_run_id: str | None,
        now: datetime,
    ) -> RewardStatus:
        """Record one approver's decision; returns the reward's status after it.

        Raises:
            DecisionConflict: this stage was already decided (e.g. a racing resume).
            InvalidDecision: the reward is no longer awaiting approval.
        """
        try:
            with self._begin() as conn:
                views = self._reward_views(conn, T_REWARDS.c.reward_id == reward_id, None)
                if not views or views[0].status is not RewardStatus.AWAITING_APPROVAL:
                    raise InvalidDecision(
                        f"reward {reward_id} is not awaiting approval"
                        + (f" (it is {views[0].status.value})" if views else "")
                    )
                view = views[0]
                decision_id = derived_id("decision", reward_id, str(stage))
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
                status = status_after(checked.decision, stage, stages_needed)
                final = status is not RewardStatus.AWAITING_APPROVAL
                if status is RewardStatus.REJECTED:
                    self._entry(
                        conn,
                        reward_id,
                        "cancelled",
                        -view.balance.amount_minor,
                        view.balance.currency,
                        decision_id,
                        now,
                    )
                elif status is RewardStatus.APPROVED:
                    approved = conn.execute(
                        select(ApprovalDecisionRow.amount_minor).where(
                            ApprovalDecisionRow.reward_id == reward_id,
                            ApprovalDecisionRow.decision == Decision.APPROVE.value,
                        )
                    ).scalars()
                    agreed = agreed_amount(
                        view.balance, [Money(int(a), view.balance.currency) for a in approved]
                    )
                    reduction = view.balance.amount_minor - agreed.amount_minor
                    if reduction > 0:
                        self._entry(
                            conn,
                            reward_id,
                            "adjusted",
                            -reduction,
                            view.balance.currency,
                            decision_id,
                            now,
                        )
                if final:
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
                    if status is RewardStatus.REJECTED:
                        self._queue_notifications(
                            conn,
                            [
                                {
                                    "notification_id": derived_id("notice", reward_id, "rejected"),
                                    "contact_id": view.reward.referrer_id,
                                    "kind": "reward_rejected",
                                    "reward_id": reward_id,
                                    "data": {
                                        "amount": view.reward.amount.format(),
                                        "reason": checked.reason,
                                    },
                                }
                            ],
                            now,
                        )
                return status
        except IntegrityError as exc:
            raise DecisionConflict(
                f"stage {stage} of reward {reward_id} was already decided"
            ) from exc

    def waiting_approvals(self) -> list[WaitingApproval]:
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

    def overdue_approvals(
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

    def expire_approval_requests(self, request_ids: Sequence[str], now: datetime) -> list[str]:
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

    def approval_request_of_run(self, flow_run_id: str) -> str | None:
        with self._connect() as conn:
            return conn.execute(
                select(ApprovalRequestRow.reward_id).where(
                    ApprovalRequestRow.flow_run_id == flow_run_id
                )
            ).scalar_one_or_none()

    # -- provider events -------------------------------------------------------------

    def record_provider_event(
        self, provider: str, event_id: str, type_: str, now: datetime
    ) -> bool:
        """True the first time ``(provider, event_id)`` is seen, False ever after."""
        with self._begin() as conn:
            return bool(
                self._insert_ignore(
                    conn,
                    ProviderEventRow,
                    [
                        {
                            "provider": provider,
                            "event_id": event_id,
                            "type": type_,
                            "received_at": now,
                        }
                    ],
                    ProviderEventRow.event_id,
                )
            )

    # -- reporting -------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts and sums per stage, for the run artifact and the demo's closing table."""
        with self._connect() as conn:

            def grouped(column: Any, *where: Any) -> dict[str, int]:
                stmt = select(column, func.count()).group_by(column)
                for w in where:
                    stmt = stmt.where(w)
                return {str(k): int(v) for k, v in conn.execute(stmt).all()}

            money: dict[str, dict[str, int]] = {}
            for status, currency, total in conn.execute(
                select(
                    T_REWARDS.c.status,
                    T_REWARDS.c.currency,
                    func.sum(T_LEDGER_ENTRIES.c.amount_minor),
                )
                .select_from(T_LEDGER_ENTRIES.join(T_REWARDS))
                .where(T_LEDGER_ENTRIES.c.kind.in_(["accrued", "adjusted", "cancelled"]))
                .group_by(T_REWARDS.c.status, T_REWARDS.c.currency)
            ).all():
                money.setdefault(str(currency), {})[str(status)] = int(total or 0)
            paid: dict[str, int] = {}
            for currency, total in conn.execute(
                select(T_LEDGER_ENTRIES.c.currency, func.sum(-T_LEDGER_ENTRIES.c.amount_minor))
                .where(T_LEDGER_ENTRIES.c.kind == "paid")
                .group_by(T_LEDGER_ENTRIES.c.currency)
            ).all():
                paid[str(currency)] = int(total or 0)
            return {
                "events": conn.execute(
                    select(func.count()).select_from(T_SOURCE_EVENTS)
                ).scalar_one(),
                "moments": grouped(MomentRow.type),
                "skipped": grouped(MomentRow.skip_reason, MomentRow.status == "skipped"),
                "follow_ups": conn.execute(
                    select(func.count()).select_from(FollowUpRow)
                ).scalar_one(),
                "asks": grouped(AskRow.status),
                "conversions": grouped(ConversionRow.milestone),
                "rewards": grouped(RewardRow.status),
                "reward_amounts": money,
                "payouts": grouped(PayoutRow.rail, PayoutRow.status == "succeeded"),
                "paid": paid,
                "notifications": grouped(NotificationRow.status),
                "quarantine": grouped(QuarantineRow.stage),
                # Detractor hand-offs: the owner's emails per status (HandoffLedger).
                "detractors_handed_on": grouped(DetractorHandoffRow.email_status),
            }

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        """Quarantined input without its raw text (which may hold personal data)."""
        with self._connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(
                        QuarantineRow.stage,
                        QuarantineRow.source,
                        QuarantineRow.record,
                        QuarantineRow.field,
                        QuarantineRow.reason,
                    )
                    .order_by(QuarantineRow.id)
                    .limit(limit)
                ).mappings()
            ]


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
