"""The ledger side of the reward rules: recording rewards held to caps and tiers, and
what rules read (first payments, the invoices recurring rules pay on).

:class:`SqlRewardRulesStore` is the ``reward_rules`` store of
:class:`~integrations.ledger.uow.SqlStores`.

**Caps under a lock.** The use case :func:`tasks.use_cases.rewards.accrue` reads what
the caps and tiers depend on (what each referrer, and the program, earned in a period;
each referrer's successful referrals) and writes the rewards in *one* unit of work,
holding (:meth:`SqlRewardRulesStore.lock`) the per-referrer advisory locks the clawback
and payout writes already take (:func:`~integrations.ledger.locks.lock_referrers`),
plus one more for the program when the program has a program-wide cap. So two runs at
once are serialized exactly where they could use the same room under a cap: the second
reads the first's rewards once it has committed. All keys are taken in one sorted
order, with the other lockers' keys, so no two transactions wait on each other in a
cycle. SQLite needs no lock: its writers are serialized (``BEGIN IMMEDIATE``), and the
reads happen inside the write transaction. Inside the lock the conversions still
unrewarded and the rewards already recorded are read again
(:meth:`SqlRewardRulesStore.unrewarded`, :meth:`SqlRewardRulesStore.recorded`), so a
run that lost the race computes nothing twice and does not count a reward against a
cap twice.

**What a cap counts.** The rewards earned in the period: ``accrued`` less ``adjusted``,
``cancelled`` and ``clawed_back`` (payment, reversal and netting entries move money,
they do not change what was earned), in the program currency. A reward is earned at
its ``reward_terms.earned_at`` (the invoice's time for a recurring reward), or, for a
reward recorded before revision 0012, at its conversion.

**Earned by an invoice.** A recurring rule's reward names the payment that earned it
(``reward_payments``: the invoice, its payment intent and charge), in the transaction
that records it, so a refund or dispute of that invoice finds it
(:mod:`integrations.ledger.reward_payments`).

**Capped to nothing.** A reward a cap took down to zero is recorded all the same, with
its explanation, status ``cancelled``, no ledger entry and no "reward earned" notice:
the referral stays visible, it only pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, distinct, func, or_, select, update

from domain.errors import InvalidAmount
from domain.models import Conversion, Milestone, Rejected, Reward, RewardStatus, derived_id
from domain.money import Money
from domain.ports import RewardHistory
from domain.program import RewardKind
from domain.rewards import Invoice, RewardTerms
from domain.stripe_conversions import INVOICE_PAID, SOURCE
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    conversion_from_row,
    not_indexed,
    reward_row,
)
from integrations.ledger.locks import lock_referrers
from integrations.ledger.reward_payments import record_reward_payments
from integrations.ledger.tables import (
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_LEDGER_ENTRIES,
    T_REWARD_TERMS,
    T_REWARDS,
    T_STRIPE_EVENTS,
    ContactRow,
    LedgerEntryRow,
    QuarantineRow,
    RewardRow,
)

# Locked beside the referrers when a program-wide cap exists (lock_referrers hashes it
# into the same key space, so it is taken in the same global order).
PROGRAM_BUDGET_LOCK = "\x00program-budget"
# Entry kinds that change what a reward earned (the rest move money).
EARNED_KINDS = ("accrued", "adjusted", "cancelled", "clawed_back")
# An invoice paid this long before its conversion's event may still be the payment the
# conversion is (a Checkout Session completes a moment after its invoice is paid).
_FIRST_INVOICE_SLACK = timedelta(days=1)


class LedgerRewardHistory:
    """:class:`~domain.ports.RewardHistory` read through a store: inside a unit of work,
    on its connection (the one holding the locks)."""

    def __init__(self, store: LedgerBase, currency: str) -> None:
        self._store = store
        self._currency = currency

    def referrals(
        self, referrer_id: str, milestone: Milestone, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, str]]:
        r, c = T_REWARDS, T_CONVERSIONS
        stmt = (
            select(distinct(c.c.conversion_id), c.c.occurred_at)
            .join(r, r.c.conversion_id == c.c.conversion_id)
            .where(
                r.c.referrer_id == referrer_id,
                c.c.milestone == milestone.value,
                c.c.occurred_at >= start,
                c.c.occurred_at < end,
                r.c.status != RewardStatus.REJECTED.value,
                # Cancelled with an amount: taken back (a refund). Capped to nothing:
                # still a successful referral.
                or_(r.c.status != RewardStatus.CANCELLED.value, r.c.amount_minor == 0),
            )
        )
        with self._store._connect() as conn:
            return [(at, conversion_id) for conversion_id, at in conn.execute(stmt)]

    def earned(self, referrer_id: str | None, start: datetime, end: datetime) -> Money:
        r, e, c, t = T_REWARDS, T_LEDGER_ENTRIES, T_CONVERSIONS, T_REWARD_TERMS
        earned_at = func.coalesce(t.c.earned_at, c.c.occurred_at)
        stmt = (
            select(func.coalesce(func.sum(e.c.amount_minor), 0))
            .select_from(e)
            .join(r, r.c.reward_id == e.c.reward_id)
            .join(c, c.c.conversion_id == r.c.conversion_id)
            .outerjoin(t, t.c.reward_id == r.c.reward_id)
            .where(
                e.c.kind.in_(EARNED_KINDS),
                r.c.currency == self._currency,
                earned_at >= start,
                earned_at < end,
            )
        )
        if referrer_id is not None:
            stmt = stmt.where(r.c.referrer_id == referrer_id)
        with self._store._connect() as conn:
            return Money(int(conn.execute(stmt).scalar_one()), self._currency)


class SqlRewardRulesStore(LedgerBase):
    """What the reward rules read, and rewards recorded under their locks
    (:class:`domain.stores.RewardRulesStore`)."""

    # -- reads ---------------------------------------------------------------------------

    def first_payments(self, conversion_ids: Iterable[str]) -> dict[str, Money]:
        """Conversion id -> the payment recorded with it (its first Stripe payment; the
        rows of one conversion are aliases of that payment, each with its amount)."""
        found: dict[str, Money] = {}
        with self._connect() as conn:
            for chunk in chunks(sorted(set(conversion_ids))):
                for conversion_id, amount, currency in conn.execute(
                    select(
                        T_CONVERSION_PAYMENTS.c.conversion_id,
                        T_CONVERSION_PAYMENTS.c.amount_minor,
                        T_CONVERSION_PAYMENTS.c.currency,
                    )
                    .where(T_CONVERSION_PAYMENTS.c.conversion_id.in_(chunk))
                    .order_by(
                        T_CONVERSION_PAYMENTS.c.created_at, T_CONVERSION_PAYMENTS.c.payment_ref
                    )
                ):
                    found.setdefault(conversion_id, Money(amount, currency))
        return found

    def recurring_conversions(
        self,
        milestones: Sequence[Milestone],
        since: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Conversion]:
        """Rewarded conversions at ``milestones`` made at or after ``since``, by
        (occurred at, id) after ``after``: those whose referee's invoices may still earn
        a recurring reward."""
        c = T_CONVERSIONS
        stmt = select(c).where(
            c.c.rewarded_at.is_not(None),
            c.c.milestone.in_([m.value for m in milestones]),
            c.c.occurred_at >= since,
        )
        if after is not None:
            stmt = stmt.where(
                or_(
                    c.c.occurred_at > after[0],
                    and_(c.c.occurred_at == after[0], c.c.conversion_id > after[1]),
                )
            )
        stmt = stmt.order_by(c.c.occurred_at, c.c.conversion_id).limit(limit)
        with self._connect() as conn:
            return [conversion_from_row(r) for r in conn.execute(stmt).mappings()]

    def referee_invoices(
        self, conversions: Sequence[Conversion], until: datetime
    ) -> tuple[dict[str, list[Invoice]], list[Rejected]]:
        """Conversion id -> the invoices its referee paid (``invoice.paid`` events in the
        Stripe inbox, processed or not) from a day before the conversion until
        ``until``, and the invoice events that cannot be read (to quarantine).

        The referee's Stripe customers are those of the conversion's payments and
        those a CRM contact of its account names. An invoice among the conversion's
        own payment ids is marked ``of_conversion``.
        """
        if not conversions:
            return {}, []
        ids = [c.conversion_id for c in conversions]
        customers: dict[str, set[str]] = {}
        own: dict[str, set[str]] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                for conversion_id, ref, customer in conn.execute(
                    select(
                        T_CONVERSION_PAYMENTS.c.conversion_id,
                        T_CONVERSION_PAYMENTS.c.payment_ref,
                        T_CONVERSION_PAYMENTS.c.customer_ref,
                    ).where(
                        T_CONVERSION_PAYMENTS.c.conversion_id.in_(chunk),
                        T_CONVERSION_PAYMENTS.c.provider == SOURCE,
                    )
                ):
                    own.setdefault(conversion_id, set()).add(ref)
                    if customer:
                        customers.setdefault(conversion_id, set()).add(customer)
            accounts = {c.referee_account_id for c in conversions if c.referee_account_id}
            by_account: dict[str, set[str]] = {}
            for chunk in chunks(sorted(accounts)):
                for account_id, customer in conn.execute(
                    select(ContactRow.account_id, ContactRow.stripe_customer_id).where(
                        ContactRow.account_id.in_(chunk),
                        ContactRow.stripe_customer_id.is_not(None),
                    )
                ):
                    by_account.setdefault(account_id, set()).add(customer)
            for c in conversions:
                if c.referee_account_id:
                    customers.setdefault(c.conversion_id, set()).update(
                        by_account.get(c.referee_account_id, set())
                    )
            wanted = sorted(set().union(*customers.values())) if customers else []
            earliest = min(c.occurred_at for c in conversions) - _FIRST_INVOICE_SLACK
            payload = T_STRIPE_EVENTS.c.payload
            customer_of = func.coalesce(
                payload[("data", "object", "customer", "id")].as_string(),
                payload[("data", "object", "customer")].as_string(),
            )
            events: dict[str, list[dict[str, Any]]] = {}
            for chunk in chunks(wanted):
                for event_id, created_at, customer, body in conn.execute(
                    select(
                        T_STRIPE_EVENTS.c.event_id,
                        T_STRIPE_EVENTS.c.created_at,
                        customer_of,
                        payload,
                    )
                    .where(
                        T_STRIPE_EVENTS.c.type == INVOICE_PAID,
                        T_STRIPE_EVENTS.c.created_at >= earliest,
                        T_STRIPE_EVENTS.c.created_at < until,
                        customer_of.in_(chunk),
                    )
                    .order_by(T_STRIPE_EVENTS.c.created_at, T_STRIPE_EVENTS.c.event_id)
                ):
                    events.setdefault(customer, []).append(
                        {"id": event_id, "created_at": created_at, "payload": body}
                    )
        invoices: dict[str, list[Invoice]] = {}
        rejected: dict[str, Rejected] = {}
        for c in conversions:
            seen: dict[str, Invoice] = {}
            for customer in sorted(customers.get(c.conversion_id, set())):
                for event in events.get(customer, []):
                    invoice = _invoice(event, own.get(c.conversion_id, set()), rejected)
                    if invoice is not None and invoice.paid_at >= c.occurred_at - (
                        _FIRST_INVOICE_SLACK
                    ):
                        seen.setdefault(invoice.ref, invoice)
            invoices[c.conversion_id] = sorted(seen.values(), key=lambda i: (i.paid_at, i.ref))
        return invoices, list(rejected.values())

    # -- writes --------------------------------------------------------------------------

    def lock(self, referrer_ids: Iterable[str], program_budget: bool) -> None:
        """Hold the referrers' locks (and the program budget's) until the unit of work
        ends: see the module. Outside a unit of work the lock ends with the call."""
        locks = set(referrer_ids)
        if program_budget:
            locks.add(PROGRAM_BUDGET_LOCK)
        with self._begin() as conn:
            lock_referrers(conn, locks)

    def unrewarded(self, conversion_ids: Iterable[str]) -> set[str]:
        """Those of ``conversion_ids`` not yet marked rewarded."""
        found: set[str] = set()
        with self._connect() as conn:
            for chunk in chunks(sorted(set(conversion_ids))):
                found.update(
                    conn.execute(
                        select(T_CONVERSIONS.c.conversion_id).where(
                            T_CONVERSIONS.c.conversion_id.in_(chunk),
                            not_indexed(T_CONVERSIONS.c.rewarded_at).is_(None),
                        )
                    ).scalars()
                )
        return found

    def recorded(self, conversion_ids: Iterable[str]) -> set[str]:
        """The ids of the rewards already recorded for ``conversion_ids``."""
        found: set[str] = set()
        with self._connect() as conn:
            for chunk in chunks(sorted(set(conversion_ids))):
                found.update(
                    conn.execute(
                        select(T_REWARDS.c.reward_id).where(T_REWARDS.c.conversion_id.in_(chunk))
                    ).scalars()
                )
        return found

    def history(self, currency: str) -> RewardHistory:
        """The referrals and earnings the caps and tiers read, in ``currency``."""
        return LedgerRewardHistory(self, currency)

    def record_accrued(
        self,
        rewards: Sequence[Reward],
        terms: Mapping[str, RewardTerms],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> tuple[set[str], int]:
        """Insert rewards with their accrual entries, terms, own payments and "earned"
        notices, and quarantine ``rejected``.

        A reward capped to nothing is recorded cancelled, without entry or notice.

        Returns:
            The ids of the rewards that were new, and how many rejects were new.
        """
        with self._begin() as conn:
            inserted = self._write_rewards(conn, rewards, terms, now)
            quarantined = self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(rejected, "reward", now),
                QuarantineRow.id,
            )
        return inserted, len(quarantined)

    def mark_rewarded(self, conversion_ids: Iterable[str], now: datetime) -> None:
        """Set ``rewarded_at`` on those of ``conversion_ids`` not rewarded yet."""
        with self._begin() as conn:
            for chunk in chunks(sorted(set(conversion_ids))):
                conn.execute(
                    update(T_CONVERSIONS)
                    .where(
                        T_CONVERSIONS.c.conversion_id.in_(chunk),
                        not_indexed(T_CONVERSIONS.c.rewarded_at).is_(None),
                    )
                    .values(rewarded_at=now)
                )

    def _write_rewards(
        self,
        conn: Connection,
        rewards: Sequence[Reward],
        terms: Mapping[str, RewardTerms],
        now: datetime,
    ) -> set[str]:
        """Insert rewards, their accrual entries, terms and "earned" notices; the ids new."""
        inserted = set(
            self._insert_ignore(
                conn,
                RewardRow,
                [
                    reward_row(
                        r,
                        RewardStatus.CANCELLED if r.amount.is_zero else RewardStatus.HOLDING,
                        now,
                    )
                    for r in rewards
                ],
                RewardRow.reward_id,
            )
        )
        new = [r for r in rewards if r.reward_id in inserted]
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
                for r in new
                if not r.amount.is_zero
            ],
            LedgerEntryRow.entry_id,
        )
        self._insert_ignore(
            conn,
            T_REWARD_TERMS,
            [_terms_row(terms[r.reward_id], r, now) for r in new if r.reward_id in terms],
            T_REWARD_TERMS.c.reward_id,
        )
        # A recurring reward is earned by its invoice alone: name that payment, so its
        # refund or dispute takes back this reward (and a first payment's does not).
        record_reward_payments(
            self,
            conn,
            [
                (r.reward_id, t.period, t.earned_at)
                for r in new
                if (t := terms.get(r.reward_id)) is not None
                and t.kind is RewardKind.RECURRING
                and t.period
            ],
            now,
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
                for r in new
                if not r.amount.is_zero
            ],
            now,
        )
        return inserted

    def terms(self, reward_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        """Reward id -> its terms row (earned at, tier count, uncapped amount, cap)."""
        found: dict[str, Mapping[str, Any]] = {}
        with self._connect() as conn:
            for chunk in chunks(sorted(set(reward_ids))):
                for row in conn.execute(
                    select(T_REWARD_TERMS).where(T_REWARD_TERMS.c.reward_id.in_(chunk))
                ).mappings():
                    found[row["reward_id"]] = dict(row)
        return found


def _terms_row(terms: RewardTerms, reward: Reward, now: datetime) -> dict[str, Any]:
    return {
        "reward_id": reward.reward_id,
        "kind": terms.kind.value,
        "earned_at": terms.earned_at,
        "period": terms.period[:128] if terms.period else None,
        "referral_number": terms.referral_number,
        "uncapped_minor": terms.uncapped.amount_minor,
        "capped_by": terms.capped_by[:64] if terms.capped_by else None,
        "created_at": now,
    }


def _invoice(
    event: Mapping[str, Any], own_refs: set[str], rejected: dict[str, Rejected]
) -> Invoice | None:
    """The invoice an ``invoice.paid`` event pays, or None (nothing paid, or refused:
    then added to ``rejected``)."""
    record = f"{SOURCE}:{event['id']}"
    data = event["payload"].get("data") if isinstance(event["payload"], Mapping) else None
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        rejected[record] = Rejected(SOURCE, record, "data.object", "event has no invoice")
        return None
    ref, paid, currency = obj.get("id"), obj.get("amount_paid"), obj.get("currency")
    if not isinstance(ref, str) or not ref:
        rejected[record] = Rejected(SOURCE, record, "id", "invoice has no id")
        return None
    if isinstance(paid, bool) or not isinstance(paid, int) or paid < 0:
        rejected[record] = Rejected(
            SOURCE, record, "amount_paid", "amount is not a non-negative integer of minor units"
        )
        return None
    if paid == 0:
        return None  # the zero invoice opening a trial: no payment
    try:
        amount = Money(paid, str(currency).upper())
    except InvalidAmount:
        rejected[record] = Rejected(SOURCE, record, "currency", "unknown currency")
        return None
    return Invoice(
        ref=ref,
        record=record,
        amount=amount,
        paid_at=event["created_at"],
        of_conversion=ref in own_refs,
    )
