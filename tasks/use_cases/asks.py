"""Recording the decisions on a batch of moments, in one unit of work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from domain.models import Ask, AskDecision
from domain.stores.asks import LedgerWithAsks


def record_ask_decisions(
    ledger: LedgerWithAsks,
    decisions: Sequence[AskDecision],
    new_codes: Mapping[str, str],
    as_of: datetime,
    now: datetime,
) -> list[Ask]:
    """Mint missing codes, queue asks, and close every decided moment, atomically.

    A code minted concurrently by another run wins (one code per contact): the asks
    carry whatever code the ledger holds after the insert.

    Args:
        ledger: the ledger, whose unit of work this opens.
        decisions: the domain's decision on each moment of the batch.
        new_codes: contact id -> a fresh code, for the contacts asked who have none.
        as_of: the decision's time; the asks are dated by it.
        now: when the decisions are recorded.

    Returns:
        The asks queued by this call (an ask already queued is not repeated).
    """
    with ledger.transaction() as uow:
        uow.asks.add_codes(new_codes, now)
        asking = [d.moment for d in decisions if d.ask]
        codes = uow.asks.codes_for({m.contact_id for m in asking})
        asks = [Ask.for_moment(m, codes[m.contact_id]) for m in asking]
        queued = set(uow.asks.queue_asks(asks, as_of))
        uow.asks.close_moments(decisions, now)
    return [a for a in asks if a.ask_id in queued]
