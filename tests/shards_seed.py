"""Queued asks written into a ledger the way the send-asks stage leaves them, for the
tests of sharded sending (issue 17)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.eligibility import decide
from domain.models import Moment, MomentType, derived_id
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.moments_seed import record_detection


def queue_asks(
    ledger: SqlLedger, program: Program, contact_ids: Sequence[str], now: datetime
) -> None:
    """One promoter moment per contact (a day before ``now``), decided: an ask queued each."""
    ledger.sources.record_batch(people_batch(*[contact(c, f"A{c}") for c in contact_ids]), now)
    moments = [
        Moment(
            moment_id=derived_id("moment", c),
            type=MomentType.NPS_PROMOTER,
            contact_id=c,
            account_id=f"A{c}",
            occurred_at=now - timedelta(days=1),
            source_event=f"test:{c}",
            detail="NPS 10",
        )
        for c in contact_ids
    ]
    record_detection(ledger.engine, [], moments, [], now)
    decisions = decide(
        moments,
        ledger.asks.contacts(contact_ids),
        ledger.asks.histories(contact_ids, now, ()),
        program,
        now,
    )
    # A code per contact, the same on every run and distinct between contacts.
    codes = {c: "R" + hashlib.sha256(c.encode()).hexdigest()[:20].upper() for c in contact_ids}
    record_ask_decisions(ledger, decisions, codes, now, now)
