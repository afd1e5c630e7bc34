"""Turning events that carry referral codes into attributed conversions."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.attribution import conversion_from_event
from domain.codes import normalize_code
from domain.errors import InputRejected
from domain.models import Conversion, Rejected
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger


@task(name="record-conversions", cache_policy=NO_CACHE)
def record_new_conversions(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int = 1000
) -> dict[str, int]:
    """Attribute every new event carrying a referral code to the code's owner.

    Unknown or malformed codes and amounts in another currency are quarantined with
    the event and field; the same event delivered again never converts twice.

    Args:
        ledger: where coded events are read and conversions stored.
        program: for the program currency.
        now: when conversions are recorded.
        batch_size: events per batch.

    Returns:
        Counts of events examined, conversions recorded and events quarantined.
    """
    examined = recorded = quarantined = 0
    after = 0
    while batch := ledger.events_to_convert(after, batch_size):
        after = batch[-1][0]
        codes = {normalize_code(e.referral_code or "") for _, e in batch}
        owners = ledger.code_owners(c for c in codes if c)
        conversions: list[Conversion] = []
        rejected: list[Rejected] = []
        for _, event in batch:
            try:
                conversion = conversion_from_event(event, owners, program.currency)
            except InputRejected as exc:
                rejected.append(Rejected(event.source, exc.record, exc.field, exc.reason))
                continue
            if conversion is not None:
                conversions.append(conversion)
        recorded += ledger.record_conversions([i for i, _ in batch], conversions, rejected, now)
        examined += len(batch)
        quarantined += len(rejected)
    run_logger().info(
        "examined %d coded events: %d conversions, %d quarantined", examined, recorded, quarantined
    )
    return {"examined": examined, "conversions": recorded, "quarantined": quarantined}
