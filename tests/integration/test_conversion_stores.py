"""The conversion group's stores, SQL and in memory: the same scenario, the same answers.

Each contract test runs once on the SQL store (SQLite and PostgreSQL, through the
``ledger`` fixture) and once on the recording fake, so a use case tested on the fake
is tested against the behaviour the ledger has.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import pytest

from domain.errors import InputRejected
from domain.fraud import FraudHistory
from domain.models import Conversion, Milestone, derived_id
from domain.money import Money
from domain.placement import ConversionTally, EarlierConversion, PlacementFacts
from domain.program import Program, RegistrationRules
from domain.registration import Claim, RegistrationStatus
from domain.stores.conversions import ConversionsRecorded, ConversionStore
from domain.stores.fraud import CardLookup, FraudStore
from domain.stores.partners import PartnerStore
from domain.stores.provider_events import ProviderEventStore
from domain.stores.stripe import PaymentLink, PaymentsLinked, StripeStore
from domain.stores.touchpoints import Referee, TouchpointStore
from domain.stripe_conversions import StripeConversion
from domain.touchpoints import StoredTouchpoint, TouchpointKind
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.memory.fraud import InMemoryFraudStore
from integrations.ledger.memory.partners import InMemoryPartnerStore
from integrations.ledger.memory.provider_events import InMemoryProviderEventStore
from integrations.ledger.memory.stripe import InMemoryStripeStore
from integrations.ledger.memory.touchpoints import InMemoryTouchpointStore
from integrations.ledger.sql import SqlLedger
from tasks.use_cases.conversions import (
    ConversionsLedger,
    place_conversion,
    record_crm_conversions,
    record_stripe_conversions,
)
from tests.integration.test_ledger_webhooks import stripe_event
from tests.integration.test_partner_registrations import given_partners
from tests.stripe_conversion_events import CODE_A, CODE_B, given_referrers
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


# -- touchpoints ------------------------------------------------------------------------------


def _won(n: int, at: datetime, account: str | None, contact_id: str | None) -> Conversion:
    return Conversion(
        conversion_id=f"conv-{n}",
        source_event=f"crm:evt-{n}",
        referral_code="RABCDEFGHIJKLMNOPQRST",
        referrer_id="R1",
        referee_account_id=account,
        referee_contact_id=contact_id,
        milestone=Milestone.CUSTOMER,
        occurred_at=at,
        amount=Money(100_00, "EUR"),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_conversion_is_credited_with_its_referees_touches_up_to_it_each_once(
    kind: Kind, ledger: SqlLedger, now: datetime
) -> None:
    store: TouchpointStore = ledger.touchpoints if kind == "sql" else InMemoryTouchpointStore()
    early = StoredTouchpoint("P2", now - timedelta(days=40), TouchpointKind.REGISTRATION, "reg-1")
    late = StoredTouchpoint("P3", now + timedelta(days=1), TouchpointKind.REGISTRATION, "reg-2")
    other = StoredTouchpoint("P4", now - timedelta(days=1), TouchpointKind.REGISTRATION, "reg-3")
    assert (
        store.record_touchpoints(
            [
                (early, Referee("ACC-A", None, None)),
                (late, Referee("ACC-A", None, None)),
                (other, Referee("ACC-B", None, None)),
                (other, Referee(None, None, None)),
            ],
            now,
        )
        == 3
    )
    assert store.record_touchpoints([(early, Referee("ACC-A", None, None))], now) == 0
    won = _won(1, now, "ACC-A", "C-A")
    assert store.record_conversion_touches([(won, None)], now) == 1
    assert store.record_conversion_touches([(won, None)], now) == 0

    found = store.touchpoints_for([won, _won(2, now, None, "C-A")])

    assert [(t.referrer_id, t.kind) for t in found["conv-1"]] == [
        ("P2", TouchpointKind.REGISTRATION),
        ("R1", TouchpointKind.CODE),
    ]
    # Found by the CRM contact alone: the code touch names the contact too.
    assert [t.referrer_id for t in found["conv-2"]] == ["R1"]
    assert store.touchpoints_for([]) == {}


# -- provider events --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_stripe_inbox_keeps_each_event_once_and_hands_it_out_oldest_first_until_marked(
    kind: Kind, ledger: SqlLedger, now: datetime
) -> None:
    store: ProviderEventStore = (
        ledger.provider_events if kind == "sql" else InMemoryProviderEventStore()
    )
    t0 = int(now.timestamp())
    assert store.store_stripe_event(stripe_event("evt_b", "charge.refunded", t0 + 1), now)
    assert store.store_stripe_event(stripe_event("evt_a", "invoice.paid", t0 + 1), now)
    assert store.store_stripe_event(stripe_event("evt_0", "charge.refunded", t0), now)
    assert not store.store_stripe_event(stripe_event("evt_a", "invoice.paid", t0 + 1), now)
    with pytest.raises(InputRejected):
        store.store_stripe_event({"id": "evt_x", "type": "invoice.paid"}, now)

    everything = store.unprocessed_stripe_events(None, 10)
    assert [e.event_id for e in everything] == ["evt_0", "evt_a", "evt_b"]
    assert everything[1].object_id == "ch_1"
    assert everything[1].payload["type"] == "invoice.paid"
    refunds = store.unprocessed_stripe_events(["charge.refunded"], 1)
    assert [e.event_id for e in refunds] == ["evt_0"]
    assert store.unprocessed_stripe_events([], 10) == []

    assert store.mark_stripe_events_processed(["evt_0", "evt_a", "evt_missing"], now) == 2
    assert store.mark_stripe_events_processed(["evt_0"], now) == 0
    assert [e.event_id for e in store.unprocessed_stripe_events(None, 10)] == ["evt_b"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_provider_event_counts_once_per_provider_and_event_id(
    kind: Kind, ledger: SqlLedger, now: datetime
) -> None:
    store: ProviderEventStore = (
        ledger.provider_events if kind == "sql" else InMemoryProviderEventStore()
    )
    assert store.record_provider_event("sendgrid", "sg-1", "delivered", now) is True
    assert store.record_provider_event("sendgrid", "sg-1", "delivered", now) is False
    assert store.record_provider_event("stripe", "sg-1", "charge.refunded", now) is True
    # A Stripe event already recorded as a provider event is not stored again.
    assert store.store_stripe_event(stripe_event("sg-1", "charge.refunded", 1), now) is False


# -- conversions, placed by the use cases -----------------------------------------------------


class ScenarioLedger(ConversionsLedger, Protocol):
    """A ledger the scenario runs the use cases on, then reads back."""

    @property
    def conversions(self) -> ConversionStore: ...

    @property
    def touchpoints(self) -> TouchpointStore: ...


def placed(
    n: int, account: str, code: str, milestone: Milestone, at: datetime, source: str = "crm"
) -> Conversion:
    """A conversion of referee ``account`` under ``code`` (R1 owns A, R2 owns B)."""
    return Conversion(
        conversion_id=derived_id("test-conversion", str(n)),
        source_event=f"{source}:evt-{n}",
        referral_code=code,
        referrer_id="R1" if code == CODE_A else "R2",
        referee_account_id=account,
        referee_contact_id=None,
        milestone=milestone,
        occurred_at=at,
        amount=Money(499_00, "EUR"),
    )


def paid(
    n: int, account: str, refs: tuple[str, ...], at: datetime, customer: str = "cus_1"
) -> StripeConversion:
    """A Stripe first payment of ``account`` under code A, naming ``refs``."""
    return StripeConversion(
        f"evt_{n}",
        placed(n, account, CODE_A, Milestone.CUSTOMER, at, source="stripe"),
        customer,
        refs,
        Money(499_00, "EUR"),
        first_payment=True,
    )


def one_referral_scenario(ledger: ScenarioLedger, now: datetime) -> list[Any]:
    """CRM conversions then Stripe payments of the same referees: what each batch did."""
    customer, lead = Milestone.CUSTOMER, Milestone.LEAD
    crm = [
        placed(1, "ACC-1", CODE_A, customer, now),
        placed(2, "ACC-1", CODE_A, customer, now),  # the same referral again
        placed(3, "ACC-1", CODE_B, customer, now),  # another code: a person decides
        placed(4, "ACC-2", CODE_A, lead, now),
    ]
    notice = {
        "notification_id": derived_id("notice", crm[3].conversion_id),
        "contact_id": "R1",
        "kind": "referral_received",
        "reward_id": None,
        "data": {"milestone": "lead"},
    }
    first = record_crm_conversions(ledger, [], crm, [], {crm[3].conversion_id: notice}, now)
    again = record_crm_conversions(ledger, [], crm, [], {crm[3].conversion_id: notice}, now)
    stripe = [
        paid(5, "ACC-1", ("in_1", "pi_1"), now),  # the CRM conversion's payment: joins it
        paid(6, "ACC-1", ("in_1",), now),  # the same payment again: nothing new
        paid(7, "ACC-1", ("in_1", "ch_1"), now),  # the same payment, one more id
        paid(8, "ACC-3", ("in_3",), now, customer="cus_3"),  # a new referee
    ]
    payments = record_stripe_conversions(ledger, [], stripe, [], {}, now)
    return [
        first,
        again,
        payments,
        ledger.conversions.payment_owner(("ch_1",), customer),
        ledger.conversions.earliest_of_referee(placed(9, "ACC-1", CODE_B, customer, now), None),
        [t.ref for t in ledger.touchpoints.touchpoints_for([crm[0]])[crm[0].conversion_id]],
    ]


def test_the_use_cases_place_conversions_alike_on_the_ledger_and_in_memory(
    ledger: SqlLedger, now: datetime
) -> None:
    given_referrers(ledger, now, R1=CODE_A, R2=CODE_B)
    on_sql = one_referral_scenario(ledger, now)
    in_memory = one_referral_scenario(InMemoryLedger(), now)

    assert on_sql == in_memory
    first, again, payments, owner, earliest, touches = on_sql
    one, four = (
        placed(1, "", CODE_A, Milestone.CUSTOMER, now),
        placed(4, "", CODE_A, Milestone.LEAD, now),
    )
    assert first == ConversionsRecorded(
        new=(one.conversion_id, four.conversion_id), duplicates=1, quarantined=1, notices=1
    )
    assert again == ConversionsRecorded(duplicates=3, quarantined=1)
    assert payments.joined == 2
    assert payments.duplicates == 1
    assert len(payments.new) == 1
    assert owner == one.conversion_id
    assert earliest == EarlierConversion(one.conversion_id, CODE_A, has_stripe=True)
    assert touches == [one.conversion_id]


class _RolledBack(Exception):
    """Ends a unit of work without keeping what it wrote."""


def a_mixed_stripe_batch(now: datetime) -> list[StripeConversion]:
    """Payments joining, repeating, refusing and inserting, some only because of a
    conversion placed earlier in the same batch."""
    refused = placed(10, "ACC-3", CODE_B, Milestone.CUSTOMER, now, source="stripe")
    lead = placed(11, "ACC-5", CODE_A, Milestone.LEAD, now, source="stripe")
    return [
        paid(5, "ACC-1", ("in_1", "pi_1"), now),  # the CRM conversion's payment: joins it
        paid(6, "ACC-1", ("in_1",), now),  # the same payment again: nothing new
        paid(7, "ACC-1", ("in_1", "ch_1"), now),  # the same payment, one more id
        paid(8, "ACC-3", ("in_3",), now, customer="cus_3"),  # a new referee
        paid(9, "ACC-4", ("in_9",), now, customer="cus_3"),  # the same Stripe customer
        StripeConversion("evt_10", refused, "cus_3", ("in_10",), Money(499_00, "EUR"), True),
        StripeConversion("evt_11", lead, "cus_5", ("sub_11",), Money(0, "EUR"), False),
        paid(12, "ACC-5", ("in_12",), now, customer="cus_5"),  # the lead's customer step
        paid(8, "ACC-3", ("in_3",), now, customer="cus_3"),  # delivered twice in a batch
    ]


def placed_one_by_one(
    ledger: SqlLedger, items: list[tuple[Conversion, StripeConversion]], now: datetime
) -> tuple[ConversionTally, PlacementFacts]:
    """Place ``items`` one conversion at a time on the ledger, as placement ran before it
    was batched: what it decided and what it left behind, then rolled back."""
    tally = ConversionTally()
    left = PlacementFacts()
    with suppress(_RolledBack), ledger.transaction() as uow:
        for conversion, stripe in items:
            place_conversion(uow.conversions, conversion, stripe, tally, now)
        left = uow.conversions.placement_facts(items)
        raise _RolledBack
    return tally, left


def test_a_batch_placed_at_once_comes_to_what_placing_it_one_by_one_comes_to(
    ledger: SqlLedger, now: datetime
) -> None:
    given_referrers(ledger, now, R1=CODE_A, R2=CODE_B)
    record_crm_conversions(
        ledger, [], [placed(1, "ACC-1", CODE_A, Milestone.CUSTOMER, now)], [], {}, now
    )
    batch = a_mixed_stripe_batch(now)
    items = [(s.conversion, s) for s in batch]
    one_by_one, left_one_by_one = placed_one_by_one(ledger, items, now)

    at_once = record_stripe_conversions(ledger, [], batch, [], {}, now)

    assert at_once == ConversionsRecorded(
        new=tuple(one_by_one.new),
        joined=one_by_one.joined,
        duplicates=one_by_one.duplicates,
        quarantined=len(one_by_one.rejected),
    )
    assert (len(at_once.new), at_once.joined, at_once.duplicates, at_once.quarantined) == (
        3,
        2,
        3,
        1,
    )
    assert ledger.conversions.placement_facts(items) == left_one_by_one


# -- partners ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_partner_holds_a_company_until_it_lapses_and_a_won_deal_converts_it(
    kind: Kind, ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    store: PartnerStore = ledger.partners if kind == "sql" else InMemoryPartnerStore()
    rules = RegistrationRules()

    [won] = store.register([partner_claim("P1", "acme.example")], rules, now)
    [lost] = store.register([partner_claim("P2", "acme.example")], rules, now)
    [other] = store.register([partner_claim("P2", "beta.example")], rules, now - timedelta(days=90))

    assert won.registration is not None
    assert (lost.registration, lost.owner) == (None, "P1")
    assert other.registration is not None
    held = store.active_registration_for_domains(["acme.example", "beta.example"])
    assert sorted(held) == ["acme.example", "beta.example"]
    longer = replace(
        won.registration, expires_at=won.registration.expires_at + timedelta(days=30), extensions=1
    )
    assert store.extend(longer, now) is True
    assert store.extend(longer, now) is False
    expired = store.expire_due(now, "contract")
    assert [(r.domain, r.closed_by) for r in expired] == [("beta.example", "contract")]
    assert store.expire_due(now, "contract") == []
    conversion_id = derived_id("test-conversion", "won")
    if kind == "sql":  # the registration names a recorded conversion
        given_referrers(ledger, now, R1=CODE_A)
        ledger.conversions.insert(placed_won(conversion_id, now), now)
    assert store.convert(won.registration.registration_id, conversion_id, now) == 1
    assert store.convert(won.registration.registration_id, conversion_id, now) == 0
    assert store.registration_counts() == {
        "active": 0,
        "extended": 0,
        "expired": 1,
        "converted": 1,
    }
    [converted] = store.registrations([RegistrationStatus.CONVERTED])
    assert (converted.conversion_id, converted.extensions) == (conversion_id, 1)


def partner_claim(partner: str, domain: str) -> Claim:
    return Claim(partner, domain, f"CRM-{partner}", "Discovery call held, budget owner identified")


def placed_won(conversion_id: str, now: datetime) -> Conversion:
    return replace(placed(0, "ACC-W", CODE_A, Milestone.CUSTOMER, now), conversion_id=conversion_id)


# -- Stripe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_payment_link_joins_its_invoices_conversion_or_waits_for_it_until_too_old(
    kind: Kind, ledger: SqlLedger, now: datetime
) -> None:
    owner = paid(1, "ACC-1", ("in_1",), now)
    store: StripeStore
    if kind == "sql":
        given_referrers(ledger, now, R1=CODE_A)
        record_stripe_conversions(ledger, [], [owner], [], {}, now)
        store = ledger.stripe
    else:
        memory = InMemoryStripeStore()
        memory.invoice_owners["in_1"] = owner.conversion.conversion_id
        store = memory
    old, fresh = now - timedelta(days=2), now - timedelta(hours=1)
    links = [
        PaymentLink("evt_l1", fresh, ("in_1", "pi_1", "ch_1")),  # its conversion exists
        PaymentLink("evt_l2", fresh, ("in_2", "pi_2")),  # its conversion may still come
        PaymentLink("evt_l3", old, ("in_3", "pi_3")),  # no referral is behind it
        PaymentLink("evt_l4", fresh, ()),  # names no invoice
    ]

    assert store.link_stripe_payments(links, now - timedelta(days=1), now) == PaymentsLinked(
        linked=1, closed=2, waiting=1
    )
    assert store.stripe_events_to_link(None, 10) == []
    store.save_cursor("stripe-events", "1700000000", now)
    if kind == "sql":
        assert ledger.conversions.payment_owner(("ch_1",), Milestone.CUSTOMER) == (
            owner.conversion.conversion_id
        )
