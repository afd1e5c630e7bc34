"""Turning stored events into referral-worthy moments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.moments import detection_spec
from domain.program import Program
from integrations.ledger.detection import DEFAULT_CHUNK
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
    ledger: SqlLedger,
    program: Program,
    now: datetime,
    chunk_size: int = DEFAULT_CHUNK,
) -> DetectionReport:
    """Examine every event not yet examined, inside the database, and store its moments.

    The program's rules become a ``DetectionSpec`` (domain), which the ledger runs as
    SQL, chunk by chunk. No event is carried through Python.

    Args:
        ledger: where events are read and moments stored.
        program: the moment rules.
        now: when the detection watermark moved.
        chunk_size: event ids per transaction. Much smaller chunks are much slower on
            SQLite, which pays a WAL write and checkpoint at every commit.

    Returns:
        Counts of events examined, new moments, detractors listed for follow-up, and
        moments without a contact.
    """
    counts = ledger.moments.detect_in_database(detection_spec(program), now, chunk_size)
    run_logger().info(
        "examined %d events: %d new moments, %d detractors to follow up, %d without contact",
        counts.examined,
        counts.moments,
        counts.detractors,
        counts.without_contact,
    )
    return DetectionReport(
        counts.examined, counts.moments, counts.detractors, counts.without_contact
    )
