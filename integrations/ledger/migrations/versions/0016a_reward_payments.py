"""reward payments: the ids of the payment that earned a reward by itself (a recurring
rule's invoice, its payment intent and charge), so a refund or dispute of a renewal
invoice takes back that invoice's reward; the recurring rewards recorded before this
revision get theirs from the invoice events in the Stripe inbox

Revision ID: 0016a
Revises: 0015
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016a"
down_revision = "0015"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
GUARDED = (("reward_payments", "DELETE"), ("reward_payments", "UPDATE"))
_CHUNK = 500


def upgrade() -> None:
    op.create_table(
        "reward_payments",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("payment_ref", sa.String(length=128), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("paid_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "amount_minor >= 0", name=op.f("ck_reward_payments_amount_not_negative")
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_reward_payments_currency_iso")),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.reward_id"], name=op.f("fk_reward_payments_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint(
            "provider", "payment_ref", "reward_id", name=op.f("pk_reward_payments")
        ),
    )
    with op.batch_alter_table("reward_payments", schema=None) as batch_op:
        batch_op.create_index("ix_reward_payments_reward_id", ["reward_id"], unique=False)
    _backfill()

    dialect = op.get_bind().dialect.name
    for table, verb in GUARDED:
        if dialect == "sqlite":
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
            )
        else:
            # ledger_refuse() is the function revision 0001 created for every guard.
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, verb in GUARDED:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on}")
    with op.batch_alter_table("reward_payments", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_payments_reward_id")
    op.drop_table("reward_payments")


# -- the recurring rewards recorded before this revision ---------------------------------

_TERMS = sa.table(
    "reward_terms",
    sa.column("reward_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("period", sa.String()),
    sa.column("earned_at", sa.DateTime()),
)
_EVENTS = sa.table(
    "stripe_events",
    sa.column("event_id", sa.String()),
    sa.column("type", sa.String()),
    sa.column("object_id", sa.String()),
    sa.column("payload", sa.JSON()),
)
_ROWS = sa.table(
    "reward_payments",
    sa.column("provider", sa.String()),
    sa.column("payment_ref", sa.String()),
    sa.column("reward_id", sa.String()),
    sa.column("amount_minor", sa.BigInteger()),
    sa.column("currency", sa.String()),
    sa.column("paid_at", sa.DateTime()),
    sa.column("created_at", sa.DateTime()),
)


def _backfill() -> None:
    """Give each recurring reward already recorded the ids of its invoice's payment.

    The invoice is the reward's ``reward_terms.period``; its amount and (before the
    basil API version) its payment intent and charge are in its ``invoice.paid`` event,
    and from basil on its ``invoice_payment.paid`` events name them. A reward whose
    invoice event is not in the inbox (none is known to exist) is left as it was:
    reached through its conversion's first payment.
    """
    bind = op.get_bind()
    invoices: dict[str, list[tuple[str, datetime]]] = {}
    for reward_id, invoice, earned_at in bind.execute(
        sa.select(_TERMS.c.reward_id, _TERMS.c.period, _TERMS.c.earned_at).where(
            _TERMS.c.kind == "recurring", _TERMS.c.period.is_not(None)
        )
    ):
        invoices.setdefault(invoice, []).append((reward_id, earned_at))
    if not invoices:
        return
    paid: dict[str, tuple[int, str, list[str]]] = {}
    wanted = sorted(invoices)
    for start in range(0, len(wanted), _CHUNK):
        for payload in bind.execute(
            sa.select(_EVENTS.c.payload)
            .where(
                _EVENTS.c.type == "invoice.paid",
                _EVENTS.c.object_id.in_(wanted[start : start + _CHUNK]),
            )
            .order_by(_EVENTS.c.event_id)
        ).scalars():
            found = _invoice_paid(payload)
            if found is not None and found[0] in invoices:
                paid.setdefault(found[0], (found[1], found[2], []))[2].extend(found[3])
    for payload in bind.execute(
        sa.select(_EVENTS.c.payload).where(_EVENTS.c.type == "invoice_payment.paid")
    ).scalars():
        invoice, refs = _invoice_payment(payload)
        if invoice in paid:
            paid[invoice][2].extend(refs)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "provider": "stripe",
            "payment_ref": ref,
            "reward_id": reward_id,
            "amount_minor": amount,
            "currency": currency,
            "paid_at": earned_at,
            "created_at": now,
        }
        for invoice, (amount, currency, refs) in sorted(paid.items())
        for reward_id, earned_at in invoices[invoice]
        for ref in dict.fromkeys([invoice, *refs])
    ]
    for start in range(0, len(rows), _CHUNK):
        bind.execute(sa.insert(_ROWS), rows[start : start + _CHUNK])


def _object(payload: Any) -> Mapping[str, Any]:
    data = payload.get("data") if isinstance(payload, Mapping) else None
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def _ids(*values: Any) -> Iterator[str]:
    for value in values:
        if isinstance(value, Mapping):
            value = value.get("id")
        if isinstance(value, str) and value and len(value) <= 128:
            yield value


def _invoice_paid(payload: Any) -> tuple[str, int, str, list[str]] | None:
    """(invoice id, amount paid, currency, payment ids) of an ``invoice.paid`` event."""
    obj = _object(payload)
    invoice, amount, currency = obj.get("id"), obj.get("amount_paid"), obj.get("currency")
    if not isinstance(invoice, str) or not isinstance(currency, str) or len(currency) != 3:
        return None
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        return None
    extra: list[Any] = [obj.get("payment_intent"), obj.get("charge")]
    payments = obj.get("payments")
    listed = payments.get("data") if isinstance(payments, Mapping) else None
    for item in listed if isinstance(listed, list) else []:
        payment = item.get("payment") if isinstance(item, Mapping) else None
        if isinstance(payment, Mapping):
            extra += [payment.get("payment_intent"), payment.get("charge")]
    return invoice, amount, currency.upper(), list(_ids(*extra))


def _invoice_payment(payload: Any) -> tuple[str | None, list[str]]:
    """(invoice id, payment ids) of an ``invoice_payment.paid`` event."""
    obj = _object(payload)
    invoice = next(_ids(obj.get("invoice")), None)
    payment = obj.get("payment")
    named = payment if isinstance(payment, Mapping) else {}
    return invoice, list(_ids(named.get("payment_intent"), named.get("charge")))
