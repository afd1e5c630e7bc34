"""Reconciling the ledger's payouts and reversals with what Stripe actually moved."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from domain.clawbacks import Mismatch, PaymentRecords, compare_movements
from domain.errors import ConfigError
from domain.stores.reconcile import LedgerWithReconcile
from tasks._support import run_logger

ARTIFACT_KEY = "payout-mismatches"


@task(name="reconcile-payouts", cache_policy=NO_CACHE)
def reconcile_payouts(
    ledger: LedgerWithReconcile, records: PaymentRecords | None, now: datetime
) -> list[Mismatch]:
    """Compare the ledger's Stripe payouts and reversals with Stripe's, both ways.

    Stripe's side is every transfer (with its reversals) and every balance transaction
    of the customers the ledger knows, carrying a ``reward_id`` in its metadata. Per
    reward: a payout or reversal the ledger settled must be at Stripe with the same
    amount (else ``missing_at_stripe`` / ``amount_mismatch``); whatever Stripe holds
    must be settled in the ledger (else ``missing_in_ledger``, or
    ``duplicate_at_stripe`` for a second payout of a reward paid once).

    Args:
        ledger: the ledger's payouts and reversals.
        records: what Stripe moved; ``None`` when no Stripe key is configured.
        now: when the comparison runs (logged only).

    Returns:
        Every mismatch, ordered by reward.

    Raises:
        ConfigError: the ledger holds Stripe payouts but Stripe cannot be read.
    """
    ours = ledger.reconcile.stripe_movements()
    if records is None:
        if ours:
            raise ConfigError(
                f"the ledger holds {len(ours)} Stripe payouts and reversals, but no Stripe "
                "key is configured to reconcile them (REFERRALS_STRIPE_API_KEY)"
            )
        theirs = []
    else:
        theirs = records.movements(ledger.reconcile.stripe_customer_ids())
    mismatches = compare_movements(ours, theirs)
    run_logger().info(
        "reconciled %d ledger movements with %d at Stripe at %s: %d mismatches",
        len(ours),
        len(theirs),
        now.isoformat(timespec="seconds"),
        len(mismatches),
    )
    return mismatches


@task(name="publish-payout-mismatches", cache_policy=NO_CACHE)
def publish_payout_mismatches(mismatches: Sequence[Mismatch]) -> None:
    """Publish every mismatch as the ``payout-mismatches`` table artifact.

    Rows carry ids, amounts and what disagrees; never a name or an address. An empty
    table says the last reconciliation found the ledger and Stripe in agreement.

    Args:
        mismatches: as returned by :func:`reconcile_payouts`.
    """
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=[m.row() for m in mismatches],
        description=(
            f"{len(mismatches)} disagreements between the ledger and Stripe, by reward"
            if mismatches
            else "The ledger and Stripe agree on every payout and reversal"
        ),
    )
