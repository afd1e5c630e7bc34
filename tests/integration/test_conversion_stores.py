"""The conversion group's stores, SQL and in memory: the same scenario, the same answers.

Each contract test runs once on the SQL store (SQLite and PostgreSQL, through the
``ledger`` fixture) and once on the recording fake, so a use case tested on the fake
is tested against the behaviour the ledger has.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from domain.fraud import FraudHistory
from domain.program import Program
from domain.stores.fraud import CardLookup, FraudStore
from integrations.ledger.memory.fraud import InMemoryFraudStore
from integrations.ledger.sql import SqlLedger
from tests.tasks.test_learn_card_fingerprints import (
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with,
)

Kind = str
KINDS = ["sql", "memory"]


# -- fraud ----------------------------------------------------------------------------------


def _fraud_store(kind: Kind, ledger: SqlLedger, program: Program, now: datetime) -> FraudStore:
    """Two Stripe-paid conversions whose card is unknown, in the store of ``kind``."""
    given_a_referrer_who_paid_with_the_card_a_friend_pays_with(ledger, program, now)
    if kind == "sql":
        return ledger.fraud
    # The fake starts from what the ledger holds, so both answer from the same facts.
    return InMemoryFraudStore(lookups=ledger.fraud.conversions_without_card("", 100))


@pytest.mark.parametrize("kind", KINDS)
def test_a_conversion_learns_its_card_once_and_then_stops_waiting_for_it(
    kind: Kind, ledger: SqlLedger, program: Program, now: datetime
) -> None:
    store = _fraud_store(kind, ledger, program, now)
    waiting = store.conversions_without_card("", 100)
    assert len(waiting) == 2
    assert all(isinstance(w, CardLookup) and w.payment_refs for w in waiting)
    first, second = (w.conversion_id for w in waiting)

    assert store.record_card_fingerprints({first: "fpOne"}) == 1
    assert store.record_card_fingerprints({first: "fpOther"}) == 0
    assert [w.conversion_id for w in store.conversions_without_card("", 100)] == [second]
    assert [w.conversion_id for w in store.conversions_without_card(first, 1)] == [second]
    assert store.conversions_without_card(second, 100) == []


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_batch_has_an_empty_fraud_history(
    kind: Kind, ledger: SqlLedger, program: Program
) -> None:
    store: FraudStore = ledger.fraud if kind == "sql" else InMemoryFraudStore()
    assert store.fraud_history([], {}, program.fraud) == FraudHistory()
