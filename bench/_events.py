"""Realistic canonical CRM and NPS events, generated fast and reproducibly.

One generator feeds both the ledger (row tuples in ``source_events`` column order,
inserted with ``executemany``) and the in-memory benchmark (:class:`SourceEvent`
objects), so both see exactly the same events for the same seed.

The mix, per 100 events: 30 NPS responses (about a fifth of them detractors, 0-6), 8
won deals (one in ten in USD, one in twenty through a referral code), 4 qualified
deals, 8 renewals, 18 opened and 17 resolved tickets (CSAT 1-5, or none), 10 usage
milestones and 5 sign-ups; 4 in 100 name no contact.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.models import EventType, SourceEvent
from domain.money import Money

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SPAN = timedelta(days=30)
CONTACTS = 50_000
CONTACTS_PER_ACCOUNT = 5
CHUNK = 50_000

# source_events columns the generator fills, in this order (id, detected_at and
# converted_at are left to the database).
COLUMNS = (
    "source",
    "event_id",
    "type",
    "occurred_at",
    "account_id",
    "contact_id",
    "amount_minor",
    "currency",
    "score",
    "csat",
    "priority",
    "milestone",
    "referral_code",
    "deal_id",
    "ticket_id",
    "referee_email_domain",
    "ingested_at",
)

_MIX: tuple[tuple[EventType, int], ...] = (
    (EventType.NPS_RESPONSE, 30),
    (EventType.DEAL_WON, 8),
    (EventType.DEAL_QUALIFIED, 4),
    (EventType.RENEWAL, 8),
    (EventType.TICKET_OPENED, 18),
    (EventType.TICKET_RESOLVED, 17),
    (EventType.USAGE_MILESTONE, 10),
    (EventType.SIGNUP, 5),
)
_TYPES = [t for t, _ in _MIX]
_CUM = [sum(w for _, w in _MIX[: i + 1]) for i in range(len(_MIX))]
# NPS answers as they tend to come: many 8-10s, a long tail of detractors.
_NPS_WEIGHTS = (3, 1, 1, 2, 2, 4, 6, 10, 18, 22, 31)
_NPS_CUM = [sum(_NPS_WEIGHTS[: i + 1]) for i in range(11)]
_CSAT = (None, 1, 2, 3, 4, 5)
_CSAT_CUM = (25, 30, 35, 45, 65, 100)
_PRIORITIES = ("low", "normal", "normal", "high", "urgent")
_MILESTONES = ("first_export", "ten_users", "api_live", "sso_enabled", "thousand_projects")
_DB_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DATETIME in SQLite


def db_time(moment: datetime) -> str:
    """``moment`` as the ledger stores it in SQLite (naive UTC text)."""
    return moment.astimezone(UTC).strftime(_DB_TIME)


def generate(n: int, seed: int = 20261102, chunk: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    """``n`` events in chunks, as tuples of :data:`COLUMNS` (datetimes aware, UTC).

    Events come in time order over the 30 days before :data:`NOW`, as a CRM export
    would; ``ingested_at`` is :data:`NOW`.
    """
    rng = random.Random(seed)
    start = NOW - SPAN
    step = SPAN / max(n, 1)
    contact_range = range(CONTACTS)
    for first in range(0, n, chunk):
        size = min(chunk, n - first)
        # Drawn a chunk at a time: one random.choices over a chunk is far cheaper than
        # one call per event.
        types = rng.choices(_TYPES, cum_weights=_CUM, k=size)
        contacts = rng.choices(contact_range, k=size)
        draws = [rng.random() for _ in range(size)]
        scores = rng.choices(range(11), cum_weights=_NPS_CUM, k=size)
        csats = rng.choices(_CSAT, cum_weights=_CSAT_CUM, k=size)
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        for offset, kind in enumerate(types):
            i = first + offset
            contact_no = contacts[offset]
            draw = draws[offset]
            account_id = f"A{contact_no // CONTACTS_PER_ACCOUNT:05d}"
            contact_id = None if draw < 0.04 else f"C{contact_no:06d}"
            source = "crm"
            amount = currency = score = csat = priority = milestone = None
            code = deal = ticket = domain = None
            if kind is EventType.NPS_RESPONSE:
                source = "nps"
                score = scores[offset]
            elif kind is EventType.DEAL_WON or kind is EventType.DEAL_QUALIFIED:
                deal = f"D{i:07d}"
                amount = 100_00 + int(draw * 59_900_00)
                currency = "USD" if draw > 0.9 else "EUR"
                if 0.5 < draw < 0.55:
                    code = f"REF-{i:08X}"
                    domain = "referee.example"
            elif kind is EventType.RENEWAL:
                amount = 1_000_00 + int(draw * 99_000_00)
                currency = "EUR"
            elif kind is EventType.TICKET_OPENED:
                ticket = f"T{i:07d}"
                priority = _PRIORITIES[int(draw * len(_PRIORITIES))]
            elif kind is EventType.TICKET_RESOLVED:
                ticket = f"T{max(i - 1 - int(draw * 500), 0):07d}"
                csat = csats[offset]
            elif kind is EventType.USAGE_MILESTONE:
                milestone = _MILESTONES[int(draw * len(_MILESTONES))]
            append(
                (
                    source,
                    f"{source}-{i:08d}",
                    kind.value,
                    start + step * i,
                    account_id,
                    contact_id,
                    amount,
                    currency,
                    score,
                    csat,
                    priority,
                    milestone,
                    code,
                    deal,
                    ticket,
                    domain,
                    NOW,
                )
            )
        yield rows


def db_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with their datetimes as the ledger stores them."""
    ingested = db_time(NOW)
    # Generated times are UTC already: format them without converting.
    return [(*r[:3], r[3].strftime(_DB_TIME), *r[4:16], ingested) for r in rows]


def source_events(rows: list[tuple[Any, ...]]) -> list[SourceEvent]:
    """``rows`` as the domain's events (what ``event_from_row`` would build)."""
    return [
        SourceEvent(
            source=r[0],
            event_id=r[1],
            type=EventType(r[2]),
            occurred_at=r[3],
            account_id=r[4],
            contact_id=r[5],
            amount=Money(r[6], r[7]) if r[6] is not None else None,
            score=r[8],
            csat=r[9],
            priority=r[10],
            milestone=r[11],
            referral_code=r[12],
            deal_id=r[13],
            ticket_id=r[14],
            referee_email_domain=r[15],
        )
        for r in rows
    ]
