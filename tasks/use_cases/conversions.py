"""Recording conversions: each batch one unit of work, placed by the domain's rules.

Three sources record conversions, all by :mod:`domain.placement` (one conversion per
referee and milestone), each batch in one transaction under the conversions lock:
Stripe payments and trials (:func:`record_stripe_conversions`), CRM events carrying a
code (:func:`record_crm_conversions`) and CRM events credited through a partner's
registration (:func:`record_registered_conversions`). A crash keeps all of a batch or
none of it, and its events are read again.

Plain functions: no Prefect, no SQL; typed by the ports of :mod:`domain.stores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from domain.models import Conversion, Milestone, Rejected
from domain.placement import (
    ConversionTally,
    EarlierConversion,
    Placement,
    PlacementBook,
    placement,
    refusal,
)
from domain.registration import Registration
from domain.stores.conversions import ConversionsRecorded, ConversionStore
from domain.stores.partners import PartnerStore, RegisteredConversions, RegisteredCredit
from domain.stores.provider_events import ProviderEventStore
from domain.stores.touchpoints import TouchpointStore
from domain.stripe_conversions import StripeConversion


class ConversionsUnit(Protocol):
    """The stores a conversion batch writes to, in one unit of work (read-only here, so
    any ledger's stores that follow these ports will do)."""

    @property
    def conversions(self) -> ConversionStore: ...

    @property
    def touchpoints(self) -> TouchpointStore: ...

    @property
    def provider_events(self) -> ProviderEventStore: ...

    @property
    def partners(self) -> PartnerStore: ...


class ConversionsLedger(Protocol):
    """A ledger that opens units of work over those stores (:class:`domain.stores.Ledger`
    narrowed to what these use cases touch)."""

    def transaction(self) -> AbstractContextManager[ConversionsUnit]:
        """Open one transaction; the stores it yields all run in it."""
        ...


def record_stripe_conversions(
    ledger: ConversionsLedger,
    event_ids: Sequence[str],
    conversions: Sequence[StripeConversion],
    rejected: Sequence[Rejected],
    notices: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> ConversionsRecorded:
    """Record what a batch of Stripe events stands for, and mark them processed.

    One unit of work: the conversions placed with their payment ids, the quarantine,
    the notices of the new conversions, and ``processed_at`` on ``event_ids`` (every
    event examined: converted, refused or standing for nothing).

    Args:
        ledger: the ledger.
        event_ids: the Stripe event ids examined.
        conversions: the conversions read from them, oldest event first.
        rejected: events refused, to quarantine.
        notices: conversion id -> its notification row (``notification_id``,
            ``contact_id``, ``kind``, ``data``), queued only if it is new.
        now: when this is recorded, timezone-aware.

    Returns:
        What was recorded.
    """
    with ledger.transaction() as uow:
        tally, quarantined, queued = _place_batch(
            uow, [(s.conversion, s) for s in conversions], rejected, notices, now
        )
        marked = uow.provider_events.mark_stripe_events_processed(event_ids, now)
    return ConversionsRecorded(
        tuple(tally.new), tally.joined, tally.duplicates, quarantined, queued, marked
    )


def record_crm_conversions(
    ledger: ConversionsLedger,
    event_ids: Sequence[int],
    conversions: Sequence[Conversion],
    rejected: Sequence[Rejected],
    notices: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> ConversionsRecorded:
    """Record CRM conversions by the same rules as Stripe's, and mark their events.

    One unit of work: the conversions placed (a referee and milestone already
    converted is not converted again), the quarantine, the notices of the new
    conversions, and ``converted_at`` on ``event_ids``.

    Args:
        ledger: the ledger.
        event_ids: ``source_events.id`` of every event examined.
        conversions: the conversions read from them.
        rejected: events refused, to quarantine.
        notices: conversion id -> its notification row, queued only if it is new.
        now: when this is recorded, timezone-aware.

    Returns:
        What was recorded.
    """
    with ledger.transaction() as uow:
        tally, quarantined, queued = _place_batch(
            uow, [(c, None) for c in conversions], rejected, notices, now
        )
        marked = uow.conversions.mark_events_converted(event_ids, now)
    return ConversionsRecorded(
        tuple(tally.new), tally.joined, tally.duplicates, quarantined, queued, marked
    )


def record_registered_conversions(
    ledger: ConversionsLedger,
    event_ids: Sequence[int],
    credits: Sequence[RegisteredCredit],
    extended: Sequence[Registration],
    rejected: Sequence[Rejected],
    notices: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> RegisteredConversions:
    """Record conversions credited through registrations, in one unit of work with
    everything they change.

    Each conversion is placed by the rule coded conversions follow; a new customer
    conversion converts its registration (also one that expired after the deal
    happened inside its window). Registrations a qualified deal extended get their
    new expiry. Every examined event is marked, so it is never examined again.

    Args:
        ledger: the ledger.
        event_ids: ``source_events.id`` of every event examined.
        credits: the conversions, each with its registration.
        extended: registrations after their extension.
        rejected: events refused, to quarantine.
        notices: conversion id -> its notification row, queued only if it is new.
        now: when this is recorded, timezone-aware.

    Returns:
        What was recorded.
    """
    with ledger.transaction() as uow:
        tally, quarantined, queued = _place_batch(
            uow, [(c.conversion, None) for c in credits], rejected, notices, now
        )
        # Extend before converting: a deal qualified then won in one batch keeps the
        # record of its extension.
        extensions = sum(uow.partners.extend(r, now) for r in extended)
        new = set(tally.new)
        converted = sum(
            uow.partners.convert(credit.registration_id, credit.conversion.conversion_id, now)
            for credit in credits
            if credit.conversion.milestone is Milestone.CUSTOMER
            and credit.conversion.conversion_id in new
        )
        marked = uow.conversions.mark_events_converted(event_ids, now)
    return RegisteredConversions(
        new=tuple(tally.new),
        duplicates=tally.duplicates,
        quarantined=quarantined,
        notices=queued,
        extended=extensions,
        converted=converted,
        events_marked=marked,
    )


def _place_batch(
    uow: ConversionsUnit,
    items: Sequence[tuple[Conversion, StripeConversion | None]],
    rejected: Sequence[Rejected],
    notices: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> tuple[ConversionTally, int, int]:
    """Place a batch under the conversions lock, in order (each sees the ones before
    it), store the new conversions' touches, quarantine the refused and queue the new
    conversions' notices. Returns the tally, how many were quarantined and queued.

    The batch is placed in memory on a :class:`~domain.placement.PlacementBook` over
    what the ledger knows of its referees and payments (read once, under the lock),
    then written at once: the same decisions as placing each conversion on the ledger
    in turn, in a few statements instead of a few per conversion."""
    uow.conversions.lock()
    book = PlacementBook(uow.conversions.placement_facts(items))
    tally = ConversionTally(rejected=list(rejected))
    for conversion, stripe in items:
        place_conversion(book, conversion, stripe, tally, now)
    inserted, linked = uow.conversions.record_placed(book.inserted, book.linked, now)
    if inserted != set(tally.new) or linked != len(book.linked):
        # Only a writer outside the lock could make the ledger disagree with the book:
        # roll the batch back rather than record a placement nobody decided.
        raise RuntimeError("conversions changed while a batch was placed under the lock")
    # Right after the batch, in its transaction, before anything else changes.
    uow.touchpoints.record_conversion_touches(tally.touching, now)
    tally.touching.clear()
    quarantined = uow.conversions.quarantine_rejected(tally.rejected, now)
    queued = uow.conversions.queue_notices([notices[c] for c in tally.new if c in notices], now)
    return tally, quarantined, queued


class PlacementSteps(Protocol):
    """The steps of placing one conversion: a :class:`~domain.placement.PlacementBook`,
    or a :class:`~domain.stores.conversions.ConversionStore` one step at a time."""

    def payment_owner(self, refs: Sequence[str], milestone: Milestone) -> str | None: ...

    def earliest_of_referee(
        self, conversion: Conversion, customer: str | None
    ) -> EarlierConversion | None: ...

    def insert(self, conversion: Conversion, now: datetime) -> bool: ...

    def add_payments(self, conversion_id: str, stripe: StripeConversion, now: datetime) -> int: ...


def place_conversion(
    store: PlacementSteps,
    conversion: Conversion,
    stripe: StripeConversion | None,
    tally: ConversionTally,
    now: datetime,
) -> None:
    """Insert ``conversion``, or join or refuse it, by :mod:`domain.placement`'s rules."""
    customer = stripe.customer if stripe else None
    if stripe is not None and stripe.payment_refs:
        # Rule 1: the same payment already converted joins it, whatever the referee.
        owner = store.payment_owner(stripe.payment_refs, conversion.milestone)
        if owner is not None:
            if store.add_payments(owner, stripe, now):
                tally.joined += 1
            else:
                tally.duplicates += 1
            return
    earlier = store.earliest_of_referee(conversion, customer)
    decision = placement(conversion, stripe, earlier)
    if decision is Placement.REFUSE:
        assert earlier is not None
        tally.rejected.append(refusal(conversion, earlier))
        return
    if decision is Placement.JOIN:
        assert earlier is not None
        assert stripe is not None
        if store.add_payments(earlier.conversion_id, stripe, now):
            tally.joined += 1
        else:
            tally.duplicates += 1
        return
    if decision is Placement.DUPLICATE or not store.insert(conversion, now):
        tally.duplicates += 1
        return
    tally.new.append(conversion.conversion_id)
    if stripe is not None:
        store.add_payments(conversion.conversion_id, stripe, now)
    tally.touching.append((conversion, customer))
