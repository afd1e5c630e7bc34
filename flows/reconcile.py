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
from tasks import clawbacks as clawback_tasks
from tasks import reconcile as reconcile_tasks


def payment_records(app: bootstrap.App) -> PaymentRecords | None:
    """What the reconciliation reads Stripe with; ``None`` without a Stripe key.

    Tests replace this function to point it at a fake Stripe.
    """
    return app.payment_records


@flow(name="apply-clawbacks")
@bootstrap.one_line_failure
def apply_clawbacks() -> dict[str, Any]:
    """Take rewards back for the referees' refunds, chargebacks and churn, exactly once.

    Returns:
        Counts of events applied and waiting, rewards cancelled and clawed back, and
        reversal results.
    """
    app = bootstrap.app()
    report = clawback_tasks.apply_clawbacks(
        app.ledger,
        app.rails,
        app.program,
        datetime.now(UTC),
        app.approvals,
        app.settings.batch_size,
    )
    return asdict(report)


@flow(name="reconcile-payouts")
@bootstrap.one_line_failure
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
    mismatches = reconcile_tasks.reconcile_payouts(app.ledger, records, datetime.now(UTC))
    reconcile_tasks.publish_payout_mismatches(mismatches)
    if mismatches:
        raise PayoutsOutOfBalance(mismatches)
    return {"mismatches": 0}
