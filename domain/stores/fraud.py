"""The ``fraud`` store: what the fraud checks read beyond a batch, and cards learned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain.fraud import FraudHistory
from domain.models import Contact, Conversion
from domain.program import Fraud


@dataclass(frozen=True, slots=True)
class CardLookup:
    """A conversion paid through Stripe whose card is not known yet.

    Attributes:
        conversion_id: the conversion.
        payment_refs: the ids of its payment (invoice, payment intent, charge...).
        event_object: ``data.object`` of the Stripe event it was read from (``{}`` for
            a CRM conversion that a Stripe payment joined).
    """

    conversion_id: str
    payment_refs: tuple[str, ...]
    event_object: Mapping[str, Any] = field(default_factory=dict)


class FraudStore(Protocol):
    """The fraud checks' history and the card fingerprints of conversions."""

    def fraud_history(
        self,
        conversions: Sequence[Conversion],
        referrers: Mapping[str, Contact],
        rules: Fraud,
    ) -> FraudHistory:
        """Everything :func:`domain.fraud.flags_for_batch` needs about ``conversions``.

        Args:
            conversions: the batch about to be rewarded.
            referrers: their referrers, by contact id.
            rules: the velocity window.

        Returns:
            The history around the batch (see :class:`domain.fraud.FraudHistory`).
        """
        ...

    def conversions_without_card(self, after: str, limit: int) -> list[CardLookup]:
        """Conversions not rewarded yet, paid through Stripe, whose card is unknown.

        Args:
            after: the last conversion id of the previous page (``""`` to start).
            limit: at most this many, by conversion id.

        Returns:
            Each with its payment ids and the object of the event it was read from.
        """
        ...

    def record_card_fingerprints(self, found: Mapping[str, str]) -> int:
        """Keep the fingerprint of the card each conversion was paid with, only on a
        conversion whose card is unknown and whose rewards are not computed yet.

        Args:
            found: conversion id -> fingerprint.

        Returns:
            How many conversions learned their card.
        """
        ...
