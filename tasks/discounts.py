"""Publishing the referee's discount (two-sided rewards): the coupon, then the codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
)
from domain.ports import RefereeDiscounts
from domain.program import Program
from domain.stores.discounts import DiscountStore
from tasks._support import run_logger


@dataclass(frozen=True)
class DiscountReport:
    """What one publishing run did.

    Attributes:
        rail: ``stripe``, or ``ledger_only`` (nothing exists at any provider).
        coupon: the coupon's status (``succeeded``, ``pending``, ``failed``), or
            ``none`` when the program has no referee discount.
        queued: codes stored with their keys by this run.
        published: promotion codes created (or found created) by this run.
        retry_later: codes whose outcome is unknown or transient; the same key next run.
        failed: codes refused for good, for a person to look at.
        error: why the coupon is not usable, if it is not.
    """

    rail: str
    coupon: str = "none"
    queued: int = 0
    published: int = 0
    retry_later: int = 0
    failed: int = 0
    error: str | None = None


@task(name="publish-referee-discounts", cache_policy=NO_CACHE)
def publish_referee_discounts(
    ledger: DiscountStore,
    discounts: RefereeDiscounts,
    program: Program,
    now: datetime,
    batch_size: int = 1000,
) -> DiscountReport:
    """Create the program's coupon once, then a promotion code for every referral code
    that has none yet (and any a crash or a transient failure left pending).

    Order matters for exactly-once, as for payouts: (1) the row with its fixed
    idempotency key is committed; (2) the provider is called with that key; (3) the
    result is committed. A crash after (1) or (2) leaves the row pending, and the next
    run sends the same key, so nothing is created twice. Codes wait for the coupon:
    while it is not created, none is published.

    Args:
        ledger: the discount outbox (``ledger.discounts``).
        discounts: the provider (Stripe, or ledger-only without a key).
        program: the ``referee_discount`` rules; without them nothing is done.
        now: when rows are recorded, timezone-aware.
        batch_size: codes sent per batch.

    Returns:
        What was published, to retry and refused.
    """
    log = run_logger()
    rail = discounts.rail
    wanted = CouponInstruction.from_program(program, rail)
    if wanted is None:
        return DiscountReport(rail.value)
    state = ledger.prepare_coupon(wanted, now)
    if state.terms != wanted.terms:
        error = (
            f"coupon '{wanted.coupon_id}' was created as '{state.terms}', the rules now say "
            f"'{wanted.terms}': coupon terms never change, give the new discount a new "
            "coupon_id"
        )
        log.error("referee discount: %s", error)
        return DiscountReport(rail.value, coupon="failed", error=error)
    status = state.status
    if status == "pending":
        result = discounts.create_coupon(state.instruction)
        ledger.record_coupon_result(state.instruction, result, now)
        status = {
            DiscountOutcome.SUCCEEDED: "succeeded",
            DiscountOutcome.RETRYABLE: "pending",
            DiscountOutcome.FAILED: "failed",
        }[result.outcome]
        if status != "succeeded":
            log.warning("referee discount coupon not created (%s): %s", status, result.error)
            return DiscountReport(rail.value, coupon=status, error=result.error)
    elif status == "failed":
        return DiscountReport(rail.value, coupon=status, error=state.error)

    queued = ledger.queue_promotion_codes(wanted.coupon_id, rail, now)
    published = retry = failed = 0
    after = ""
    while pending := ledger.pending_promotion_codes(rail, after, batch_size):
        after = pending[-1].code
        results = discounts.create_promotion_codes(pending)
        ledger.record_promotion_code_results(rail, results, now)
        published += sum(r.outcome is DiscountOutcome.SUCCEEDED for r in results)
        retry += sum(r.outcome is DiscountOutcome.RETRYABLE for r in results)
        failed += sum(r.outcome is DiscountOutcome.FAILED for r in results)
    report = DiscountReport(rail.value, "succeeded", queued, published, retry, failed)
    log.info(
        "referee discounts (%s): %d codes queued, %d published, %d to retry, %d refused",
        rail.value,
        queued,
        published,
        retry,
        failed,
    )
    return report
