"""Moments and follow-ups written straight into a ledger, for tests and benchmarks.

Production finds moments with ``ledger.moments.detect_in_database`` only; these two
helpers are what the row-by-row stage did before it, kept for the tests that seed
moments or detractors without running detection, and for the tests of a ledger that
stage marked (``detected_at``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from domain.models import Moment, SourceEvent
from integrations.ledger.base import chunks, event_from_row
from integrations.ledger.tables import T_MOMENTS, T_SOURCE_EVENTS, FollowUpRow


def undetected_events(engine: Engine, after_id: int, limit: int) -> list[tuple[int, SourceEvent]]:
    """Stored events the row-by-row stage did not mark, by id after ``after_id``."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_SOURCE_EVENTS)
            .where(T_SOURCE_EVENTS.c.detected_at.is_(None), T_SOURCE_EVENTS.c.id > after_id)
            .order_by(T_SOURCE_EVENTS.c.id)
            .limit(limit)
        ).mappings()
        return [(row["id"], event_from_row(row)) for row in rows]


def record_detection(
    engine: Engine,
    event_ids: Sequence[int],
    moments: Sequence[Moment],
    detractors: Sequence[SourceEvent],
    now: datetime,
) -> int:
    """Store ``moments`` and detractor follow-ups (ignoring those already stored) and
    mark ``event_ids`` examined, as the row-by-row stage did; the new moments' count."""
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    with engine.begin() as conn:
        new = 0
        if moments:
            new = len(
                conn.execute(
                    insert(T_MOMENTS).on_conflict_do_nothing().returning(T_MOMENTS.c.moment_id),
                    [
                        {
                            "moment_id": m.moment_id,
                            "type": m.type.value,
                            "contact_id": m.contact_id,
                            "account_id": m.account_id,
                            "occurred_at": m.occurred_at,
                            "source_event": m.source_event,
                            "detail": m.detail,
                            "status": "new",
                        }
                        for m in moments
                    ],
                ).all()
            )
        if detractors:
            conn.execute(
                insert(FollowUpRow).on_conflict_do_nothing(),
                [
                    {
                        "source_event": e.key,
                        "contact_id": e.contact_id,
                        "account_id": e.account_id,
                        "score": e.score,
                        "occurred_at": e.occurred_at,
                    }
                    for e in detractors
                ],
            )
        for ids in chunks(event_ids):
            conn.execute(
                update(T_SOURCE_EVENTS).where(T_SOURCE_EVENTS.c.id.in_(ids)).values(detected_at=now)
            )
    return new
