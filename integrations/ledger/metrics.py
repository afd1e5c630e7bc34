"""The metrics store: read-only queries for :mod:`domain.metrics` and the run summary.

:class:`SqlMetricsStore` is ``ledger.metrics`` (typed by
:class:`domain.stores.metrics.MetricsStore`). It never writes.
Each query for ``domain.metrics`` aggregates in SQL what is natural to aggregate there
(first signup and first win per lead, first payout per reward, referrals per referrer
and referee, cost per period and source, contacts per type) and returns the plain
frozen records the domain computes from. Every construct used (CTEs, window
functions, ``CASE``) runs the same on SQLite and PostgreSQL.

Times are compared as stored (UTC); ``until`` is always exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, func, literal, literal_column, or_, select

from domain.metrics import (
    ConversionRecord,
    CostRecord,
    LeadRecord,
    PaidRewardRecord,
    Period,
    ReferralRecord,
)
from domain.models import EventType, Milestone, ReferrerType
from domain.money import Money
from integrations.ledger.base import (
    LedgerBase,
)
from integrations.ledger.tables import (
    T_CONTACTS,
    T_CONVERSIONS,
    T_LEDGER_ENTRIES,
    T_REWARDS,
    T_SOURCE_EVENTS,
    AskRow,
    ContactRow,
    ConversionRow,
    DetractorHandoffRow,
    FollowUpRow,
    MomentRow,
    NotificationRow,
    PayoutRow,
    QuarantineRow,
    RewardRow,
)


def _prefix(text: str) -> ColumnElement[str]:
    """A string constant written into the SQL itself, not bound: PostgreSQL accepts a
    GROUP BY expression only if it is the very same text as in the select list, and
    two bound parameters never are."""
    return literal_column(f"'{text}'", String())


def _lead_key(table: Any) -> ColumnElement[Any]:
    """A lead is its account; an event without an account falls back to its deal id.

    Prefixed so an account id and a deal id that happen to be equal never merge
    (``'a:' || NULL`` is NULL on both backends, so the fallback applies).
    """
    return func.coalesce(_prefix("a:") + table.c.account_id, _prefix("d:") + table.c.deal_id)


def _referee_key() -> ColumnElement[Any]:
    """The referred party of a conversion: its account, else contact, else event."""
    return func.coalesce(
        _prefix("a:") + T_CONVERSIONS.c.referee_account_id,
        _prefix("c:") + T_CONVERSIONS.c.referee_contact_id,
        _prefix("e:") + T_CONVERSIONS.c.source_event,
    )


def _money(amount: int | None, currency: str | None) -> Money | None:
    return None if amount is None or currency is None else Money(int(amount), currency)


class SqlMetricsStore(LedgerBase):
    """Read-only queries behind the program metrics and the run summary."""

    def contact_counts(self) -> dict[ReferrerType, int]:
        """Contacts the ledger holds, per referrer type (as they are now)."""
        with self._connect() as conn:
            rows = conn.execute(
                select(T_CONTACTS.c.referrer_type, func.count()).group_by(
                    T_CONTACTS.c.referrer_type
                )
            ).all()
        return {ReferrerType(kind): int(n) for kind, n in rows}

    def leads(self, since: datetime, until: datetime) -> list[LeadRecord]:
        """Leads signed up in ``[since, until)`` or won in it, with their first win.

        A lead is the first ``signup`` of an account (else of a deal id); it is
        referred when any of its signups carries a referral code, and its source is
        the type of the referrer credited with its earliest attributed signup. Its win
        is the first ``deal_won`` of the same account (or deal) at or after the signup
        and before ``until``.
        """
        e = T_SOURCE_EVENTS
        key = _lead_key(e)
        signups = (
            select(
                key.label("lead"),
                func.min(e.c.occurred_at).label("signed_up_at"),
                func.max(case((e.c.referral_code.is_not(None), 1), else_=0)).label("coded"),
            )
            .where(e.c.type == EventType.SIGNUP.value, e.c.occurred_at < until, key.is_not(None))
            .group_by(key)
            .cte("signups")
        )
        w = T_SOURCE_EVENTS.alias("w")
        w_key = _lead_key(w)
        wins = (
            select(
                signups.c.lead,
                w.c.occurred_at.label("won_at"),
                w.c.amount_minor,
                w.c.currency,
                func.row_number()
                .over(partition_by=signups.c.lead, order_by=(w.c.occurred_at, w.c.id))
                .label("rank"),
            )
            .select_from(
                signups.join(
                    w,
                    and_(w_key == signups.c.lead, w.c.occurred_at >= signups.c.signed_up_at),
                )
            )
            .where(w.c.type == EventType.DEAL_WON.value, w.c.occurred_at < until)
            .cte("wins")
        )
        s = T_SOURCE_EVENTS.alias("s")
        s_key = _lead_key(s)
        credited = (
            select(
                s_key.label("lead"),
                T_CONTACTS.c.referrer_type,
                func.row_number()
                .over(partition_by=s_key, order_by=(s.c.occurred_at, s.c.id))
                .label("rank"),
            )
            .select_from(
                s.join(
                    ConversionRow, T_CONVERSIONS.c.source_event == s.c.source + ":" + s.c.event_id
                ).join(ContactRow, T_CONTACTS.c.contact_id == T_CONVERSIONS.c.referrer_id)
            )
            .where(s.c.type == EventType.SIGNUP.value, s.c.occurred_at < until)
            .cte("credited")
        )
        stmt = (
            select(
                signups.c.lead,
                signups.c.signed_up_at,
                signups.c.coded,
                credited.c.referrer_type,
                wins.c.won_at,
                wins.c.amount_minor,
                wins.c.currency,
            )
            .select_from(
                signups.outerjoin(
                    wins, and_(wins.c.lead == signups.c.lead, wins.c.rank == 1)
                ).outerjoin(credited, and_(credited.c.lead == signups.c.lead, credited.c.rank == 1))
            )
            .where(or_(signups.c.signed_up_at >= since, wins.c.won_at >= since))
            .order_by(signups.c.signed_up_at, signups.c.lead)
        )
        with self._connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            LeadRecord(
                lead_id=r["lead"],
                signed_up_at=r["signed_up_at"],
                referred=bool(r["coded"]),
                source=ReferrerType(r["referrer_type"]) if r["referrer_type"] else None,
                won_at=r["won_at"],
                won_amount=_money(r["amount_minor"], r["currency"]),
            )
            for r in rows
        ]

    def conversions(self, since: datetime, until: datetime) -> list[ConversionRecord]:
        """Conversions in ``[since, until)`` with their referrer's type, oldest first."""
        stmt = (
            select(
                T_CONVERSIONS.c.referrer_id,
                T_CONTACTS.c.referrer_type,
                _referee_key().label("referee"),
                T_CONVERSIONS.c.milestone,
                T_CONVERSIONS.c.occurred_at,
                T_CONVERSIONS.c.amount_minor,
                T_CONVERSIONS.c.currency,
            )
            .select_from(
                T_CONVERSIONS.join(
                    ContactRow, T_CONTACTS.c.contact_id == T_CONVERSIONS.c.referrer_id
                )
            )
            .where(T_CONVERSIONS.c.occurred_at >= since, T_CONVERSIONS.c.occurred_at < until)
            .order_by(T_CONVERSIONS.c.occurred_at, T_CONVERSIONS.c.conversion_id)
        )
        with self._connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            ConversionRecord(
                referrer_id=r["referrer_id"],
                source=ReferrerType(r["referrer_type"]),
                referee=r["referee"],
                milestone=Milestone(r["milestone"]),
                occurred_at=r["occurred_at"],
                amount=_money(r["amount_minor"], r["currency"]),
            )
            for r in rows
        ]

    def referrals(self, since: datetime, until: datetime) -> list[ReferralRecord]:
        """Referrals first seen in ``[since, until)``: one per referrer and referred
        party, dated by their first conversion ever (so a lead referred earlier that
        becomes a customer now is not a new referral)."""
        referee = _referee_key()
        first = func.min(T_CONVERSIONS.c.occurred_at)
        stmt = (
            select(
                T_CONVERSIONS.c.referrer_id,
                T_CONTACTS.c.referrer_type,
                referee.label("referee"),
                first.label("at"),
            )
            .select_from(
                T_CONVERSIONS.join(
                    ContactRow, T_CONTACTS.c.contact_id == T_CONVERSIONS.c.referrer_id
                )
            )
            .where(T_CONVERSIONS.c.occurred_at < until)
            .group_by(T_CONVERSIONS.c.referrer_id, T_CONTACTS.c.referrer_type, referee)
            .having(first >= since)
        )
        with self._connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        records = [
            ReferralRecord(
                referrer_id=r["referrer_id"],
                source=ReferrerType(r["referrer_type"]),
                referee=r["referee"],
                first_at=r["at"],
            )
            for r in rows
        ]
        return sorted(records, key=lambda r: (r.first_at, r.referrer_id, r.referee))

    def paid_rewards(self, since: datetime, until: datetime) -> list[PaidRewardRecord]:
        """Rewards first paid in ``[since, until)``, with their conversion's time."""
        paid_at = func.min(T_LEDGER_ENTRIES.c.created_at)
        stmt = (
            select(
                T_REWARDS.c.reward_id,
                T_CONTACTS.c.referrer_type,
                T_REWARDS.c.milestone,
                T_CONVERSIONS.c.occurred_at,
                paid_at.label("paid_at"),
            )
            .select_from(
                T_LEDGER_ENTRIES.join(
                    T_REWARDS, T_REWARDS.c.reward_id == T_LEDGER_ENTRIES.c.reward_id
                )
                .join(ConversionRow, T_CONVERSIONS.c.conversion_id == T_REWARDS.c.conversion_id)
                .join(ContactRow, T_CONTACTS.c.contact_id == T_REWARDS.c.referrer_id)
            )
            .where(T_LEDGER_ENTRIES.c.kind == "paid", T_LEDGER_ENTRIES.c.created_at < until)
            .group_by(
                T_REWARDS.c.reward_id,
                T_CONTACTS.c.referrer_type,
                T_REWARDS.c.milestone,
                T_CONVERSIONS.c.occurred_at,
            )
            .having(paid_at >= since)
        )
        with self._connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        records = [
            PaidRewardRecord(
                reward_id=r["reward_id"],
                source=ReferrerType(r["referrer_type"]),
                milestone=Milestone(r["milestone"]),
                converted_at=r["occurred_at"],
                paid_at=r["paid_at"],
            )
            for r in rows
        ]
        return sorted(records, key=lambda r: (r.paid_at, r.reward_id))

    def costs(self, periods: Sequence[Period], until: datetime, currency: str) -> list[CostRecord]:
        """Reward money booked per period and referrer type, before ``until``.

        ``paid`` is the sum of the ``paid`` entries negated (money out), ``reversed``
        the sum of the ``reversed`` entries (money recovered at the provider), each by
        the time the entry was booked. Only entries in ``currency`` are summed.
        """
        if not periods:
            return []
        bucket = case(
            *((T_LEDGER_ENTRIES.c.created_at < p.end, literal(i)) for i, p in enumerate(periods))
        )
        entries = (
            select(
                bucket.label("bucket"),
                T_CONTACTS.c.referrer_type,
                case(
                    (T_LEDGER_ENTRIES.c.kind == "paid", -T_LEDGER_ENTRIES.c.amount_minor), else_=0
                ).label("paid"),
                case(
                    (T_LEDGER_ENTRIES.c.kind == "reversed", T_LEDGER_ENTRIES.c.amount_minor),
                    else_=0,
                ).label("reversed"),
            )
            .select_from(
                T_LEDGER_ENTRIES.join(
                    T_REWARDS, T_REWARDS.c.reward_id == T_LEDGER_ENTRIES.c.reward_id
                ).join(ContactRow, T_CONTACTS.c.contact_id == T_REWARDS.c.referrer_id)
            )
            .where(
                T_LEDGER_ENTRIES.c.kind.in_(["paid", "reversed"]),
                T_LEDGER_ENTRIES.c.currency == currency,
                T_LEDGER_ENTRIES.c.created_at >= periods[0].start,
                T_LEDGER_ENTRIES.c.created_at < min(until, periods[-1].end),
            )
            .subquery()
        )
        # Grouping on the subquery's column, not on the CASE itself: PostgreSQL does not
        # see two renderings of one CASE with bound parameters as the same expression.
        stmt = select(
            entries.c.bucket,
            entries.c.referrer_type,
            func.sum(entries.c.paid),
            func.sum(entries.c.reversed),
        ).group_by(entries.c.bucket, entries.c.referrer_type)
        with self._connect() as conn:
            rows = conn.execute(stmt).all()
        records = [
            CostRecord(
                period_start=periods[int(index)].start,
                source=ReferrerType(kind),
                paid=Money(int(paid or 0), currency),
                reversed=Money(int(back or 0), currency),
            )
            for index, kind, paid, back in rows
            if index is not None
        ]
        return sorted(records, key=lambda r: (r.period_start, r.source.value))

    # -- the run summary -----------------------------------------------------------------

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
                # Detractor hand-offs: the owner's emails per status (the handoffs store).
                "detractors_handed_on": grouped(DetractorHandoffRow.email_status),
            }
