"""Clawbacks and reconciliation, as Prefect flows.

* ``apply-clawbacks``: the referee's refunds, chargebacks and churn (from the Stripe
  inbox) take rewards back: unpaid ones are cancelled, paid ones reversed at Stripe or
  netted from the referrer's next payout.
* ``reconcile-payouts``: the ledger's payouts and reversals against Stripe's transfers
  and balance transactions, by reward id, both ways. Every mismatch goes into the
  ``payout-mismatches`` table artifact, and then the run fails, so on-call hears of it.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prefect import flow

from domain.clawbacks import PaymentRecords, PayoutsOutOfBalance
from flows import bootstrap
from integrations.ledger.clawbacks import ClawbackLedger
from integrations.ledger.reconcile import ReconcileLedger
from integrations.payments.stripe_reconcile import StripeRecords
from tasks import clawbacks as clawback_tasks
from tasks import reconcile as reconcile_tasks


def payment_records(app: bootstrap.App) -> PaymentRecords | None:
    """What the reconciliation reads Stripe with; ``None`` without a Stripe key.

    Uses ``app.payment_records`` when the app has one; otherwise builds a reader from
    the Stripe settings. Tests replace this function to point it at a fake Stripe.
    """
    records = getattr(app, "payment_records", None)
    if isinstance(records, PaymentRecords):
        return records
    settings = app.settings
    if settings.stripe_api_key is None:
        return None
    return StripeRecords.connect(
        settings.stripe_api_key.get_secret_value(),
        api_base=settings.stripe_api_base,
        max_network_retries=settings.stripe_max_network_retries,
    )


def _clawback_ledger(app: bootstrap.App) -> ClawbackLedger:
    ledger = app.ledger
    return ledger if isinstance(ledger, ClawbackLedger) else ClawbackLedger(ledger.engine)


def _reconcile_ledger(app: bootstrap.App) -> ReconcileLedger:
    ledger = app.ledger
    return ledger if isinstance(ledger, ReconcileLedger) else ReconcileLedger(ledger.engine)


@flow(name="apply-clawbacks")
def apply_clawbacks() -> dict[str, Any]:
    """Take rewards back for the referees' refunds, chargebacks and churn, exactly once.

    Returns:
        Counts of events applied and waiting, rewards cancelled and clawed back, and
        reversal results.
    """
    app = bootstrap.app()
    report = clawback_tasks.apply_clawbacks(
        _clawback_ledger(app),
        app.rails,
        app.program,
        datetime.now(UTC),
        app.approvals,
        app.settings.batch_size,
    )
    return asdict(report)


@flow(name="reconcile-payouts")
def reconcile_payouts() -> dict[str, Any]:
    """Compare the ledger's payouts and reversals with Stripe's, and publish mismatches.

    Returns:
        ``{"mismatches": 0}`` when the ledger and Stripe agree.

    Raises:
        PayoutsOutOfBalance: after publishing the ``payout-mismatches`` artifact, when
            there is at least one mismatch (the run fails).
    """
    app = bootstrap.app()
    records = payment_records(app)
    try:
        mismatches = reconcile_tasks.reconcile_payouts(
            _reconcile_ledger(app), records, datetime.now(UTC)
        )
    finally:
        if isinstance(records, StripeRecords) and records is not getattr(
            app, "payment_records", None
        ):
            records.close()
    reconcile_tasks.publish_payout_mismatches(mismatches)
    if mismatches:
        raise PayoutsOutOfBalance(mismatches)
    return {"mismatches": 0}
