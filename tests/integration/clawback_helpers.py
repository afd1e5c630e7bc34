"""Shared set-up for the clawback, reconciliation and state-machine tests.

``Ledger`` is SqlLedger with the reconciliation area; the clawback area is its
``clawbacks`` and ``reversals`` stores. Conversions get their Stripe payment through a raw insert
into ``conversion_payments`` (the conversion stage owns writing it); Stripe events are
stored through the webhook inbox, as the receiver stores them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from domain.models import RewardStatus
from integrations.ledger.reconcile import ReconcileLedger
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    ClawbackRow,
    ConversionPaymentRow,
    LedgerEntryRow,
    ReversalRow,
    RewardRow,
)


class Ledger(SqlLedger, ReconcileLedger):
    """SqlLedger with the reconciliation area (the clawback area is its stores)."""


def link_payment(
    ledger: SqlLedger,
    reward_id: str,
    payment_ref: str,
    now: datetime,
    *,
    amount_minor: int = 120_000,
    customer: str | None = "cus_referee",
) -> None:
    """Record ``payment_ref`` as a Stripe payment behind the reward's conversion."""
    with ledger.engine.begin() as conn:
        conversion_id = conn.execute(
            select(RewardRow.conversion_id).where(RewardRow.reward_id == reward_id)
        ).scalar_one()
        conn.execute(
            insert(ConversionPaymentRow),
            {
                "provider": "stripe",
                "payment_ref": payment_ref,
                "conversion_id": conversion_id,
                "customer_ref": customer,
                "amount_minor": amount_minor,
                "currency": "EUR",
                "created_at": now,
            },
        )


def _event(event_id: str, type_: str, created: datetime, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": int(created.timestamp()),
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def refund_event(
    event_id: str,
    charge: str,
    created: datetime,
    *,
    refunded: int,
    amount: int = 120_000,
    payment_intent: str | None = None,
) -> dict[str, Any]:
    """A ``charge.refunded`` event; ``refunded`` is the charge's cumulative refunds."""
    return _event(
        event_id,
        "charge.refunded",
        created,
        {
            "id": charge,
            "object": "charge",
            "amount": amount,
            "amount_refunded": refunded,
            "currency": "eur",
            "customer": "cus_referee",
            "payment_intent": payment_intent,
            "refunded": refunded >= amount,
        },
    )


def dispute_event(
    event_id: str, charge: str, created: datetime, *, amount: int = 120_000
) -> dict[str, Any]:
    return _event(
        event_id,
        "charge.dispute.created",
        created,
        {
            "id": f"dp_{event_id}",
            "object": "dispute",
            "amount": amount,
            "charge": charge,
            "currency": "eur",
            "created": int(created.timestamp()),
            "reason": "fraudulent",
            "status": "needs_response",
        },
    )


def churn_event(
    event_id: str, subscription: str, customer: str, created: datetime
) -> dict[str, Any]:
    return _event(
        event_id,
        "customer.subscription.deleted",
        created,
        {
            "id": subscription,
            "object": "subscription",
            "customer": customer,
            "status": "canceled",
            "canceled_at": int(created.timestamp()),
            "ended_at": int(created.timestamp()),
        },
    )


def entries(ledger: SqlLedger, reward_id: str) -> list[tuple[str, int]]:
    with ledger.engine.connect() as conn:
        return [
            (kind, int(amount))
            for kind, amount in conn.execute(
                select(LedgerEntryRow.kind, LedgerEntryRow.amount_minor)
                .where(LedgerEntryRow.reward_id == reward_id)
                .order_by(LedgerEntryRow.entry_id)
            )
        ]


def reversal_rows(ledger: SqlLedger, reward_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(ReversalRow.__table__).order_by(ReversalRow.created_at, ReversalRow.reversal_id)
    if reward_id is not None:
        stmt = stmt.where(ReversalRow.reward_id == reward_id)
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def clawback_rows(ledger: SqlLedger) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(ClawbackRow.__table__).order_by(ClawbackRow.created_at)
            ).mappings()
        ]


def balance(ledger: SqlLedger, reward_id: str) -> int:
    return ledger.rewards([reward_id])[reward_id].balance.amount_minor


def status(ledger: SqlLedger, reward_id: str) -> RewardStatus:
    return ledger.rewards([reward_id])[reward_id].status
