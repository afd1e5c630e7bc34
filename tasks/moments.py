"""Turning stored events into referral-worthy moments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.moments import detect
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger


@dataclass(frozen=True)
class DetectionReport:
    examined: int
    moments: int
    detractors: int
    without_contact: int


@task(name="detect-new-moments", cache_policy=NO_CACHE)
def detect_new_moments(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int = 5000
) -> DetectionReport:
    """Examine every event not yet examined, batch by batch, and store its moments.

    Args:
        ledger: where events are read and moments stored.
        program: the moment rules.
        now: when the events are marked examined.
        batch_size: events per batch (one transaction each).

    Returns:
        Counts of events examined, moments found, detractors listed for follow-up.
    """
    examined = moments = detractors = without_contact = 0
    after = 0
    while batch := ledger.undetected_events(after, batch_size):
        found = detect((event for _, event in batch), program)
        moments += ledger.record_detection(
            [i for i, _ in batch], found.moments, found.detractors, now
        )
        examined += found.examined
        detractors += len(found.detractors)
        without_contact += found.without_contact
        after = batch[-1][0]
    run_logger().info(
        "examined %d events: %d new moments, %d detractors to follow up, %d without contact",
        examined,
        moments,
        detractors,
        without_contact,
    )
    return DetectionReport(examined, moments, detractors, without_contact)
