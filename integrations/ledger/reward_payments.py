"""The payments that earned a reward by themselves (``reward_payments``): written with
a recurring rule's reward, completed by payment links, read by clawbacks.

Functions on a connection, so that each runs inside the transaction of the write it
belongs to: :func:`record_reward_payments` in the one that records the rewards
(:meth:`~integrations.ledger.reward_rules.RewardRulesLedger.accrue_rewards`),
:func:`link_reward_payments` in the one that applies payment links
(:meth:`~integrations.ledger.stripe_conversions.StripeConversionLedger.link_stripe_payments`),
the reads in the one that applies a loss
(``tasks.use_cases.clawbacks.apply_payment_loss``).

Only ids, amounts and times leave the inbox for this table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from domain.stripe_conversions import (
    INVOICE_PAID,
    INVOICE_PAYMENT_PAID,
    SOURCE,
    event_object,
    invoice_payment_refs,
)
from integrations.ledger.base import (
    LedgerBase,
    chunks,
)
from integrations.ledger.tables import (
    T_REWARD_PAYMENTS,
    T_REWARDS,
    T_STRIPE_EVENTS,
)

_REF_CHARS = 128


@dataclass(frozen=True, slots=True)
class OwnPayment:
    """The payment that earned one reward by itself, as a loss finds it.

    Attributes:
        reward_id: the reward.
        referrer_id: its referrer (locked before the clawback is booked).
        conversion_id: its conversion.
        amount_minor: the invoice's amount paid.
        paid_at: when it was paid (the clawback window starts there).
    """

    reward_id: str
    referrer_id: str
    conversion_id: str
    amount_minor: int
    paid_at: datetime


def record_reward_payments(
    ledger: LedgerBase,
    conn: Connection,
    earned: Sequence[tuple[str, str, datetime]],
    now: datetime,
) -> int:
    """Name the payment each reward was earned by: its invoice, and the payment intent
    and charge its invoice's events name (processed or not: a payment link read and
    closed before the reward existed still counts).

    Args:
        ledger: for its idempotent insert.
        conn: the transaction recording the rewards.
        earned: (reward id, invoice id, when the invoice was paid) of rewards that an
            invoice earned by itself.
        now: when this is recorded.

    Returns:
        How many ids were new.
    """
    wanted = sorted({invoice for _, invoice, _ in earned if 0 < len(invoice) <= _REF_CHARS})
    if not wanted:
        return 0
    amounts: dict[str, tuple[int, str]] = {}
    refs: dict[str, list[str]] = {invoice: [invoice] for invoice in wanted}
    invoice_of = func.coalesce(
        T_STRIPE_EVENTS.c.payload[("data", "object", "invoice", "id")].as_string(),
        T_STRIPE_EVENTS.c.payload[("data", "object", "invoice")].as_string(),
    )
    for chunk in chunks(wanted):
        by_invoice = select(T_STRIPE_EVENTS.c.payload).where(
            T_STRIPE_EVENTS.c.type == INVOICE_PAID, T_STRIPE_EVENTS.c.object_id.in_(chunk)
        )
        by_link = select(T_STRIPE_EVENTS.c.payload).where(
            T_STRIPE_EVENTS.c.type == INVOICE_PAYMENT_PAID, invoice_of.in_(chunk)
        )
        for stmt in (by_invoice, by_link):
            for payload in conn.execute(stmt.order_by(T_STRIPE_EVENTS.c.event_id)).scalars():
                named = invoice_payment_refs(payload)
                if not named or named[0] not in refs:
                    continue
                refs[named[0]] += named[1:]
                if payload.get("type") == INVOICE_PAID:
                    amount = _paid(event_object(payload))
                    if amount is not None:
                        amounts.setdefault(named[0], amount)
    rows = [
        {
            "provider": SOURCE,
            "payment_ref": ref,
            "reward_id": reward_id,
            "amount_minor": amounts[invoice][0],
            "currency": amounts[invoice][1],
            "paid_at": paid_at,
            "created_at": now,
        }
        for reward_id, invoice, paid_at in earned
        # The reward was computed from this very event: it is in the inbox.
        if invoice in amounts
        for ref in dict.fromkeys(refs[invoice])
    ]
    return len(
        ledger._insert_ignore(conn, T_REWARD_PAYMENTS, rows, T_REWARD_PAYMENTS.c.payment_ref)
    )


def link_reward_payments(
    ledger: LedgerBase, conn: Connection, refs: Sequence[str], now: datetime
) -> int:
    """Give the rewards an invoice earned the payment ids a link names for it.

    Args:
        ledger: for its idempotent insert.
        conn: the transaction applying the link.
        refs: the link's ids, the invoice first.
        now: when this is recorded.

    Returns:
        How many rewards the invoice earned (0: the link is not theirs).
    """
    if not refs:
        return 0
    owners = (
        conn.execute(
            select(T_REWARD_PAYMENTS).where(
                T_REWARD_PAYMENTS.c.provider == SOURCE,
                T_REWARD_PAYMENTS.c.payment_ref == refs[0],
            )
        )
        .mappings()
        .all()
    )
    ledger._insert_ignore(
        conn,
        T_REWARD_PAYMENTS,
        [
            {
                "provider": SOURCE,
                "payment_ref": ref,
                "reward_id": owner["reward_id"],
                "amount_minor": owner["amount_minor"],
                "currency": owner["currency"],
                "paid_at": owner["paid_at"],
                "created_at": now,
            }
            for owner in owners
            for ref in refs[1:]
            if len(ref) <= _REF_CHARS
        ],
        T_REWARD_PAYMENTS.c.payment_ref,
    )
    return len(owners)


def rewards_paid_by(conn: Connection, refs: Sequence[str]) -> dict[str, OwnPayment]:
    """Reward id -> its own payment, for the rewards a payment named by ``refs`` earned."""
    found: dict[str, OwnPayment] = {}
    for chunk in chunks(sorted(set(refs))):
        for row in conn.execute(
            select(
                T_REWARD_PAYMENTS.c.reward_id,
                T_REWARD_PAYMENTS.c.amount_minor,
                T_REWARD_PAYMENTS.c.paid_at,
                T_REWARDS.c.referrer_id,
                T_REWARDS.c.conversion_id,
            )
            .join(T_REWARDS, T_REWARDS.c.reward_id == T_REWARD_PAYMENTS.c.reward_id)
            .where(
                T_REWARD_PAYMENTS.c.provider == SOURCE,
                T_REWARD_PAYMENTS.c.payment_ref.in_(chunk),
            )
        ):
            found[row.reward_id] = OwnPayment(
                row.reward_id,
                row.referrer_id,
                row.conversion_id,
                int(row.amount_minor),
                row.paid_at,
            )
    return found


def earned_alone(conn: Connection, reward_ids: Sequence[str]) -> set[str]:
    """Those of ``reward_ids`` that a payment of their own earned."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(reward_ids))):
        found.update(
            conn.execute(
                select(T_REWARD_PAYMENTS.c.reward_id)
                .where(T_REWARD_PAYMENTS.c.reward_id.in_(chunk))
                .distinct()
            ).scalars()
        )
    return found


def _paid(obj: Mapping[str, Any]) -> tuple[int, str] | None:
    amount, currency = obj.get("amount_paid"), obj.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        return None
    if not isinstance(currency, str) or len(currency) != 3:
        return None
    return amount, currency.upper()
