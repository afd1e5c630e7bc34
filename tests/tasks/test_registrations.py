"""The registration tasks: a batch of partner claims is accepted, rejected with the
owner and expiry, or quarantined with its field; lapsed registrations expire; and a
deal that carries no code on a registered company is credited to its partner, while
a coded deal goes to its code's owner exactly as before."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from domain.models import EventType, Milestone, ReferrerType, SourceEvent, derived_id
from domain.money import Money
from domain.program import Program
from domain.registration import RegistrationStatus, email_reference
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ConversionRow, QuarantineRow, RewardRow
from tasks.conversions import record_new_conversions
from tasks.registrations import (
    expire_registrations,
    record_registered_conversions,
    register_leads,
)
from tasks.rewards import compute_new_rewards
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.integration.test_ledger_flow import events_batch

CUSTOMER_CODE = "R" + "C" * 20
KEY = SecretStr("test-contact-key-" + "0" * 32)
EVIDENCE = "Discovery call on Oct 28, budget owner in the room"


def lead(partner: str, domain: str, **changes: Any) -> dict[str, Any]:
    return {"partner_id": partner, "domain": domain, "contact": "CRM-9", "evidence": EVIDENCE} | (
        changes
    )


@pytest.fixture
def people(ledger: SqlLedger, now: datetime) -> SqlLedger:
    """Partners P1 and P2, customer C1 holding a code, and the referred companies' people
    (account X has domain x.example: see ``people_batch``)."""
    ledger.sources.record_batch(
        people_batch(
            contact("P1", "P1-FIRM", kind=ReferrerType.PARTNER),
            contact("P2", "P2-FIRM", kind=ReferrerType.PARTNER),
            contact("C1", "C1-CO"),
            contact("ACME-1", "ACME"),
            contact("BETA-1", "BETA"),
            contact("GAMMA-1", "GAMMA"),
        ),
        now,
    )
    record_ask_decisions(ledger, [], {"C1": CUSTOMER_CODE}, now, now)
    return ledger


def crm(
    n: int, type_: EventType, account: str, at: datetime, code: str | None = None, **extra: Any
) -> SourceEvent:
    return SourceEvent(
        source="crm",
        event_id=f"e{n}",
        type=type_,
        occurred_at=at,
        account_id=account,
        contact_id=f"{account}-1",
        referral_code=code,
        **extra,
    )


def conversions(ledger: SqlLedger) -> list[tuple[str, str, str, str]]:
    with ledger.engine.connect() as conn:
        return [
            (r["source_event"], r["referrer_id"], r["milestone"], r["referral_code"])
            for r in conn.execute(
                select(ConversionRow.__table__).order_by(ConversionRow.source_event)
            ).mappings()
        ]


def quarantined(ledger: SqlLedger, stage: str) -> list[tuple[str, str | None, str, str]]:
    with ledger.engine.connect() as conn:
        return [
            (r["record"], r["field"], r["reason"], r["raw"])
            for r in conn.execute(
                select(QuarantineRow.__table__)
                .where(QuarantineRow.stage == stage)
                .order_by(QuarantineRow.id)
            ).mappings()
        ]


# -- register-leads ------------------------------------------------------------------------


def test_a_batch_of_claims_is_accepted_rejected_with_the_owner_or_quarantined_by_field(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    claims = [
        lead("P1", "https://www.acme.example/", record="claims.csv:2"),
        lead("P2", "ACME.example", record="claims.csv:3"),
        lead("P2", "beta.example", record="claims.csv:4"),
        lead("P2", "gmail.com", record="claims.csv:5"),
        lead("P2", "not a domain", record="claims.csv:6"),
        lead("P2", "gamma.example", evidence="", record="claims.csv:7"),
        lead("NOBODY", "delta.example", record="claims.csv:8"),
        lead("C1", "delta.example", record="claims.csv:9"),
    ]

    batch = register_leads.fn(people, program, claims, now)

    assert [d.message() for d in batch.accepted] == [
        f"accepted: acme.example is registered by P1 until 2027-01-01 "
        f"({batch.accepted[0].registration.registration_id})",  # type: ignore[union-attr]
        f"accepted: beta.example is registered by P2 until 2027-01-01 "
        f"({batch.accepted[1].registration.registration_id})",  # type: ignore[union-attr]
    ]
    assert [d.message() for d in batch.rejected] == [
        "rejected: acme.example is registered by P1 until 2027-01-01"
    ]
    assert [(r.record, r.field) for r in batch.quarantined] == [
        ("claims.csv:5", "domain"),
        ("claims.csv:6", "domain"),
        ("claims.csv:7", "evidence"),
        ("claims.csv:8", "partner_id"),
        ("claims.csv:9", "partner_id"),
    ]
    stored = quarantined(people, "registration")
    assert [(record, field) for record, field, _, _ in stored] == [
        (r.record, r.field) for r in batch.quarantined
    ]
    assert "C1 is a customer, not a partner" in stored[-1][2]
    # Partners get a code with their first registration: credits carry it.
    assert set(people.asks.codes_for(["P1", "P2"])) == {"P1", "P2"}


def test_a_contact_given_as_an_email_is_stored_only_as_its_keyed_hash(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    address = "jane.doe@acme.example"
    batch = register_leads.fn(
        people,
        program,
        [lead("P1", "acme.example", contact=address, evidence=f"Met {address}, budget set")],
        now,
        contact_key=KEY,
    )

    [accepted] = batch.accepted
    assert accepted.registration is not None
    assert accepted.registration.contact_ref == email_reference(
        address, KEY.get_secret_value().encode()
    )
    with people.engine.connect() as conn:
        dump = " ".join(
            str(v)
            for row in conn.execute(text("SELECT * FROM partner_registrations")).all()
            for v in row
        )
    assert "jane.doe" not in dump


def test_an_email_contact_without_a_configured_key_is_quarantined_naming_the_field(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    claim = lead("P1", "acme.example", contact="jane.doe@acme.example", record="cli 1")

    batch = register_leads.fn(people, program, [claim], now)

    assert batch.accepted == batch.rejected == []
    [(record, field, reason, raw)] = quarantined(people, "registration")
    assert (record, field, raw) == ("cli 1", "contact", "")
    assert "CRM contact id" in reason
    assert "jane" not in reason


def test_a_malformed_contact_is_quarantined_without_its_raw_text(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    batch = register_leads.fn(people, program, [lead("P1", "acme.example", contact="jane@")], now)

    assert batch.accepted == batch.rejected == []
    [(record, field, _, raw)] = quarantined(people, "registration")
    assert (record, field, raw) == (
        f"claim 1 of {now.isoformat(timespec='seconds')}",
        "contact",
        "",
    )


# -- expire-registrations ------------------------------------------------------------------


def test_expiry_returns_what_it_expired_and_frees_the_company(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    register_leads.fn(people, program, [lead("P1", "acme.example")], now)
    later = now + timedelta(days=program.registration.window_days)

    before = expire_registrations.fn(people, later - timedelta(seconds=1))
    expired = expire_registrations.fn(people, later, "run-7")
    again = expire_registrations.fn(people, later)
    retry = register_leads.fn(people, program, [lead("P2", "acme.example")], later)

    assert (before, again) == ([], [])
    assert [(r.domain, r.status, r.closed_by) for r in expired] == [
        ("acme.example", RegistrationStatus.EXPIRED, "run-7")
    ]
    assert [d.registration.partner_id for d in retry.accepted if d.registration] == ["P2"]


# -- deals credited through registrations --------------------------------------------------


def test_a_coded_deal_is_unaffected_and_an_uncoded_deal_on_a_registered_company_credits_the_partner(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    register_leads.fn(
        people, program, [lead("P1", "acme.example"), lead("P1", "beta.example")], now
    )
    deal = Money(2_000_000, "EUR")
    people.sources.record_batch(
        events_batch(
            # BETA is registered by P1, but its deal carries C1's code: the code decides.
            crm(1, EventType.DEAL_WON, "BETA", now + timedelta(days=1), CUSTOMER_CODE, amount=deal),
            crm(2, EventType.SIGNUP, "ACME", now + timedelta(days=1)),
            crm(3, EventType.DEAL_QUALIFIED, "ACME", now + timedelta(days=2)),
            crm(4, EventType.DEAL_WON, "ACME", now + timedelta(days=3), amount=deal),
            # Nobody registered GAMMA: no code, no credit, as before.
            crm(5, EventType.DEAL_WON, "GAMMA", now + timedelta(days=3), amount=deal),
        ),
        now,
    )

    coded = record_new_conversions.fn(people, program, now + timedelta(days=4))
    registered = record_registered_conversions.fn(people, program, now + timedelta(days=4))
    again = record_registered_conversions.fn(people, program, now + timedelta(days=5))
    compute_new_rewards.fn(people, program, now + timedelta(days=4))

    partner_code = people.asks.codes_for(["P1"])["P1"]
    assert conversions(people) == [
        ("crm:e1", "C1", "customer", CUSTOMER_CODE),
        ("crm:e2", "P1", "lead", partner_code),
        ("crm:e3", "P1", "qualified", partner_code),
        ("crm:e4", "P1", "customer", partner_code),
    ]
    assert (coded["conversions"], registered["conversions"], again["examined"]) == (1, 3, 0)
    assert (registered["extended"], registered["converted"]) == (1, 1)
    with people.engine.connect() as conn:
        rewards = {
            (r["referrer_id"], r["rule_id"]): r["amount_minor"]
            for r in conn.execute(select(RewardRow.__table__)).mappings()
        }
        gamma_examined = conn.execute(
            text("SELECT converted_at FROM source_events WHERE event_id = 'e5'")
        ).scalar_one()
    assert rewards == {
        ("C1", "customer-closed-deal"): 20_000,
        ("P1", "partner-first-year"): 300_000,  # 15% of the 20,000.00 EUR deal
    }
    assert gamma_examined is None
    by_domain = {r.domain: r for r in people.partners.registrations()}
    acme, beta = by_domain["acme.example"], by_domain["beta.example"]
    assert (acme.status, acme.extensions) == (RegistrationStatus.CONVERTED, 1)
    assert acme.conversion_id == derived_id("conversion", "crm:e4")
    assert acme.expires_at == now + timedelta(days=90)
    assert (beta.status, beta.conversion_id) == (RegistrationStatus.ACTIVE, None)


def test_deals_before_the_registration_or_after_its_window_are_not_credited(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    register_leads.fn(people, program, [lead("P1", "acme.example")], now)
    window = timedelta(days=program.registration.window_days)
    people.sources.record_batch(
        events_batch(
            crm(1, EventType.SIGNUP, "ACME", now - timedelta(days=1)),
            crm(2, EventType.DEAL_WON, "ACME", now + window, amount=Money(100, "EUR")),
        ),
        now,
    )

    result = record_registered_conversions.fn(people, program, now + window)

    assert (result["examined"], conversions(people)) == (0, [])


def test_a_late_reported_deal_that_happened_inside_the_window_still_credits_the_partner(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    register_leads.fn(people, program, [lead("P1", "acme.example")], now)
    window = timedelta(days=program.registration.window_days)
    expire_registrations.fn(people, now + window)
    people.sources.record_batch(
        events_batch(
            crm(1, EventType.DEAL_WON, "ACME", now + window / 2, amount=Money(100_000, "EUR"))
        ),
        now + window,
    )

    result = record_registered_conversions.fn(people, program, now + window + timedelta(days=1))

    assert [(e, who) for e, who, _, _ in conversions(people)] == [("crm:e1", "P1")]
    [acme] = people.partners.registrations()
    assert (result["converted"], acme.status) == (1, RegistrationStatus.CONVERTED)


def test_a_referee_another_code_converted_first_is_quarantined_not_credited_twice(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    register_leads.fn(people, program, [lead("P1", "acme.example")], now)
    people.sources.record_batch(
        events_batch(
            crm(1, EventType.SIGNUP, "ACME", now + timedelta(hours=1), CUSTOMER_CODE),
            crm(2, EventType.SIGNUP, "ACME", now + timedelta(hours=2)),
        ),
        now,
    )

    record_new_conversions.fn(people, program, now + timedelta(days=1))
    result = record_registered_conversions.fn(people, program, now + timedelta(days=1))

    assert [(e, who) for e, who, _, _ in conversions(people)] == [("crm:e1", "C1")]
    assert result["quarantined"] == 1
    [(record, field, reason, _)] = quarantined(people, "conversion")
    assert (record, field) == ("crm:e2", "referral_code")
    assert "another referral code" in reason


def test_qualified_deals_extend_the_registration_up_to_its_maximum_only(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    register_leads.fn(people, program, [lead("P1", "acme.example")], now)
    people.sources.record_batch(
        events_batch(
            *(
                crm(n, EventType.DEAL_QUALIFIED, "ACME", now + timedelta(days=n), deal_id=f"d{n}")
                for n in range(1, 7)
            )
        ),
        now,
    )

    result = record_registered_conversions.fn(people, program, now + timedelta(days=7))

    [acme] = people.partners.registrations()
    assert acme.expires_at == now + timedelta(days=program.registration.max_total_days)
    assert (acme.status, acme.extensions, result["extended"]) == (
        RegistrationStatus.EXTENDED,
        4,
        1,  # one registration extended, four times over
    )
    assert [m for _, _, m, _ in conversions(people)] == [Milestone.QUALIFIED.value]
