"""The ``fraud`` store in memory: a given history, and conversions awaiting their card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from domain.fraud import FraudHistory
from domain.models import Contact, Conversion
from domain.program import Fraud
from domain.stores.fraud import CardLookup


class InMemoryFraudStore:
    """A :class:`domain.stores.fraud.FraudStore` over plain dicts, recording its calls.

    Args:
        history: what :meth:`fraud_history` answers for a non-empty batch.
        lookups: the Stripe-paid conversions whose card is unknown, as the ledger has them.
    """

    def __init__(
        self, history: FraudHistory | None = None, lookups: Sequence[CardLookup] = ()
    ) -> None:
        self.history = history or FraudHistory()
        self.lookups = {lookup.conversion_id: lookup for lookup in lookups}
        self.cards: dict[str, str] = {}
        self.rewarded: set[str] = set()
        self.calls: list[tuple[str, Any]] = []

    def fraud_history(
        self,
        conversions: Sequence[Conversion],
        referrers: Mapping[str, Contact],
        rules: Fraud,
    ) -> FraudHistory:
        self.calls.append(("fraud_history", [c.conversion_id for c in conversions]))
        return replace(self.history) if conversions else FraudHistory()

    def conversions_without_card(self, after: str, limit: int) -> list[CardLookup]:
        self.calls.append(("conversions_without_card", (after, limit)))
        waiting = sorted(
            cid
            for cid in self.lookups
            if cid > after and cid not in self.cards and cid not in self.rewarded
        )
        return [self.lookups[cid] for cid in waiting[:limit]]

    def record_card_fingerprints(self, found: Mapping[str, str]) -> int:
        self.calls.append(("record_card_fingerprints", dict(found)))
        learned = 0
        for conversion_id, fingerprint in sorted(found.items()):
            known = conversion_id in self.lookups and conversion_id not in self.cards
            if known and conversion_id not in self.rewarded:
                self.cards[conversion_id] = fingerprint[:64]
                learned += 1
        return learned
