"""The ``conversions`` store: coded events to convert, and the facts placement needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.models import Contact, Conversion, Milestone, Rejected, SourceEvent
from domain.placement import EarlierConversion, NewPayment, PlacementFacts
from domain.stripe_conversions import StripeConversion


@dataclass(frozen=True, slots=True)
class ConversionsRecorded:
    """What one batch of conversions did to the ledger.

    Attributes:
        new: conversion ids inserted by this batch.
        joined: conversions already recorded that gained Stripe payment ids (the same
            payment delivered again, or the Stripe payment of a CRM conversion).
        duplicates: candidates for a referee and milestone already converted with the
            same code, or the same payment already complete: nothing added.
        quarantined: rejects written, including referees converted under another code.
        notices: notifications queued for the new conversions.
        events_marked: events marked processed (a rerun marks none).
    """

    new: tuple[str, ...] = ()
    joined: int = 0
    duplicates: int = 0
    quarantined: int = 0
    notices: int = 0
    events_marked: int = 0

    def counts(self) -> dict[str, int]:
        """The numbers only: safe to log."""
        return {
            "conversions": len(self.new),
            "joined": self.joined,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "notices": self.notices,
        }


class ConversionStore(Protocol):
    """Conversions: the coded events to read, and one step of placing each conversion
    (the rules are :mod:`domain.placement`'s, applied by the use case)."""

    def events_to_convert(self, after_id: int, limit: int) -> list[tuple[int, SourceEvent]]:
        """CRM events with a referral code not examined yet, by id after ``after_id``."""
        ...

    def code_owners(self, codes: Iterable[str]) -> dict[str, Contact]:
        """Referral code -> the contact owning it (unknown codes are left out)."""
        ...

    def record_conversions(
        self,
        event_ids: Sequence[int],
        conversions: Sequence[Conversion],
        rejected: Sequence[Rejected],
        now: datetime,
    ) -> int:
        """Insert conversions as they are (no placement rule: a seed or a replay), with
        their touches and the quarantine, and mark ``event_ids`` examined.

        Returns:
            How many conversions were new.
        """
        ...

    def lock(self) -> None:
        """Serialize every writer of conversions until the unit of work ends."""
        ...

    def payment_owner(self, refs: Sequence[str], milestone: Milestone) -> str | None:
        """The conversion at ``milestone`` owning any of the Stripe ids ``refs``."""
        ...

    def earliest_of_referee(
        self, conversion: Conversion, customer: str | None
    ) -> EarlierConversion | None:
        """The earliest conversion of the same referee (CRM account, CRM contact or
        Stripe customer) at the same milestone, or None."""
        ...

    def insert(self, conversion: Conversion, now: datetime) -> bool:
        """Insert ``conversion``; False when its id was already recorded."""
        ...

    def placement_facts(
        self, items: Sequence[tuple[Conversion, StripeConversion | None]]
    ) -> PlacementFacts:
        """What placing this batch can depend on (see
        :class:`domain.placement.PlacementFacts`): a few reads keyed by the batch's
        referees, Stripe ids, conversion ids and source events."""
        ...

    def record_placed(
        self, conversions: Sequence[Conversion], payments: Sequence[NewPayment], now: datetime
    ) -> tuple[set[str], int]:
        """Insert a placed batch's new conversions, then link its new Stripe ids, a
        statement or two each, not one per row (rows already recorded are skipped).

        Returns:
            The ids of the conversions inserted, and how many Stripe ids were linked.
        """
        ...

    def add_payments(self, conversion_id: str, stripe: StripeConversion, now: datetime) -> int:
        """Link the payment's Stripe ids to ``conversion_id``; how many were new."""
        ...

    def mark_events_converted(self, event_ids: Sequence[int], now: datetime) -> int:
        """Mark CRM events examined; how many were not already."""
        ...

    def quarantine_rejected(self, rejected: Sequence[Rejected], now: datetime) -> int:
        """Quarantine refused conversions (stage ``conversion``); returns how many
        were handed in."""
        ...

    def queue_notices(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Queue the notifications of new conversions; how many were new."""
        ...
