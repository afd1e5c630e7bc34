"""Partner registrations arrive with the data the cycle already reads: a file drop's
``registrations*`` files are registered at the moment each claim was made, first to
register wins, a bad row is quarantined naming file, line and field while the batch
goes on, and reading a file again registers nothing twice."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from domain.models import EventType, ReferrerType
from domain.money import Money
from domain.program import Program
from domain.registration import RegistrationStatus, email_reference
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import QuarantineRow
from integrations.sources.files import FileSource
from integrations.sources.hubspot import HubSpotMapping, HubSpotSource
from tasks.registrations import intake_registrations, record_registered_conversions
from tests.conftest import contact, people_batch
from tests.fakes.hubspot_server import FakeHubSpot
from tests.integration.test_ledger_flow import events_batch
from tests.tasks.test_registrations import conversions, crm

KEY = SecretStr("intake-test-key-" + "1" * 32)
EVIDENCE = "Discovery call held, budget owner in the room"
FIELDS = ["partner_id", "domain", "contact", "evidence", "registered_at"]


@pytest.fixture
def people(ledger: SqlLedger, now: datetime) -> SqlLedger:
    ledger.sources.record_batch(
        people_batch(
            contact("P1", "P1-FIRM", kind=ReferrerType.PARTNER),
            contact("P2", "P2-FIRM", kind=ReferrerType.PARTNER),
            contact("C1", "C1-CO"),
            contact("ACME-1", "ACME"),
        ),
        now,
    )
    return ledger


def row(partner: str, domain: str, at: datetime, **changes: str) -> dict[str, str]:
    return {
        "partner_id": partner,
        "domain": domain,
        "contact": "CRM-9",
        "evidence": EVIDENCE,
        "registered_at": at.isoformat(),
    } | changes


def drop(folder: Path, rows: list[dict[str, str]], name: str = "registrations.csv") -> Path:
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def quarantine(ledger: SqlLedger) -> list[tuple[str, str, str | None, str, str]]:
    """The registration quarantine, by file line."""
    with ledger.engine.connect() as conn:
        rows = [
            (r["source"], r["record"], r["field"], r["reason"], r["raw"])
            for r in conn.execute(
                select(QuarantineRow.__table__).where(QuarantineRow.stage == "registration")
            ).mappings()
        ]
    return sorted(rows, key=lambda r: int(r[1].rsplit(":", 1)[1]))


def intake(ledger: SqlLedger, program: Program, folder: Path, now: datetime) -> dict[str, Any]:
    return intake_registrations.fn([FileSource(folder)], ledger, program, now, KEY)


def test_registrations_in_the_file_drop_are_registered_when_made_and_bad_rows_quarantined(
    people: SqlLedger, program: Program, now: datetime, tmp_path: Path
) -> None:
    made = now - timedelta(days=3)
    drop(
        tmp_path,
        [
            row("P1", "https://www.acme.example/", made),
            row("P2", "acme.example", made + timedelta(days=1)),  # P1 holds it: rejected
            row("P2", "beta.example", made, contact="lead@beta.example"),
            row("P2", "gmail.com", made),
            row("P2", "gamma.example", made, evidence="call"),
            row("NOBODY", "delta.example", made),
            row("C1", "delta.example", made),
            row("P1", "epsilon.example", made, registered_at="2026-10-30 09:00"),
            row("P1", "zeta.example", now + timedelta(days=1)),
        ],
    )

    result = intake(people, program, tmp_path, now)

    assert result["sources"] == {"files": {"accepted": 2, "rejected": 1, "quarantined": 6}}
    [rejected] = result["rejected"]
    assert rejected.startswith("registrations.csv:3: rejected: acme.example is registered by P1")
    by_domain = {r.domain: r for r in people.partners.registrations()}
    assert sorted(by_domain) == ["acme.example", "beta.example"]
    acme = by_domain["acme.example"]
    assert (acme.partner_id, acme.registered_at, acme.status) == (
        "P1",
        made,
        RegistrationStatus.ACTIVE,
    )
    assert acme.expires_at == made + timedelta(days=program.registration.window_days)
    assert by_domain["beta.example"].contact_ref == email_reference(
        "lead@beta.example", KEY.get_secret_value().encode()
    )
    assert [(source, record, field) for source, record, field, _, _ in quarantine(people)] == [
        ("files", "registrations.csv:5", "domain"),
        ("files", "registrations.csv:6", "evidence"),
        ("files", "registrations.csv:7", "partner_id"),
        ("files", "registrations.csv:8", "partner_id"),
        ("files", "registrations.csv:9", "registered_at"),
        ("files", "registrations.csv:10", "registered_at"),
    ]
    assert all(raw == "" for *_, raw in quarantine(people)), "a row may hold an address"


def test_a_file_read_again_after_it_grew_registers_only_its_new_rows(
    people: SqlLedger, program: Program, now: datetime, tmp_path: Path
) -> None:
    made = now - timedelta(days=3)
    first = [row("P1", "acme.example", made), row("P2", "gmail.com", made)]
    drop(tmp_path, first)
    intake(people, program, tmp_path, now)
    unchanged = intake(people, program, tmp_path, now + timedelta(hours=1))
    drop(tmp_path, [*first, row("P2", "beta.example", made + timedelta(days=1))])

    grown = intake(people, program, tmp_path, now + timedelta(hours=2))

    assert unchanged["sources"] == {"files": {"accepted": 0, "rejected": 0, "quarantined": 0}}
    # The old rows read again: P1's claim is the registration it made, not a rival.
    assert grown["sources"] == {"files": {"accepted": 2, "rejected": 0, "quarantined": 1}}
    assert sorted((r.domain, r.partner_id) for r in people.partners.registrations()) == [
        ("acme.example", "P1"),
        ("beta.example", "P2"),
    ]
    assert len(quarantine(people)) == 1


def test_a_claim_read_after_its_window_ended_still_credits_the_deals_made_inside_it(
    people: SqlLedger, program: Program, now: datetime, tmp_path: Path
) -> None:
    window = timedelta(days=program.registration.window_days)
    made = now - window - timedelta(days=10)
    drop(tmp_path, [row("P1", "acme.example", made)])
    people.sources.record_batch(
        events_batch(
            crm(1, EventType.SIGNUP, "ACME", made + timedelta(days=1)),
            crm(2, EventType.DEAL_WON, "ACME", made + timedelta(days=20), amount=Money(100, "EUR")),
            # After the window: nobody's.
            crm(3, EventType.DEAL_QUALIFIED, "ACME", made + window + timedelta(days=1)),
        ),
        now,
    )

    intake(people, program, tmp_path, now)
    credited = record_registered_conversions.fn(people, program, now)

    partner_code = people.asks.codes_for(["P1"])["P1"]
    assert conversions(people) == [
        ("crm:e1", "P1", "lead", partner_code),
        ("crm:e2", "P1", "customer", partner_code),
    ]
    assert credited["converted"] == 1


def test_sources_without_registrations_are_skipped(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    class EventsOnly:
        name = "crm"

    result = intake_registrations.fn([EventsOnly()], people, program, now, KEY)

    assert result == {"sources": {}, "rejected": []}


def test_a_company_registered_in_hubspot_is_registered_once_with_a_cursor_of_its_own(
    people: SqlLedger, program: Program, now: datetime
) -> None:
    with FakeHubSpot(now=now) as fake:
        fake.add_company(
            domain="acme.example",
            partner_registration_partner="P1",
            partner_registration_date=(now - timedelta(days=2)).date().isoformat(),
            partner_registration_contact="CRM-9",
            partner_registration_evidence=EVIDENCE,
        )
        free_mail = fake.add_company(
            domain="gmail.com",
            partner_registration_partner="P2",
            partner_registration_date=now.date().isoformat(),
            partner_registration_contact="CRM-10",
            partner_registration_evidence=EVIDENCE,
        )
        source = HubSpotSource(
            fake.access_token,
            fake.url,
            mapping=HubSpotMapping(registration_partner_property="partner_registration_partner"),
            clock=lambda: now + timedelta(minutes=2),
        )

        first = intake_registrations.fn([source], people, program, now, KEY)
        again = intake_registrations.fn([source], people, program, now + timedelta(hours=1))

    assert first["sources"] == {"hubspot": {"accepted": 1, "rejected": 0, "quarantined": 1}}
    assert again["sources"] == {"hubspot": {"accepted": 0, "rejected": 0, "quarantined": 0}}
    [acme] = people.partners.registrations()
    assert (acme.domain, acme.partner_id) == ("acme.example", "P1")
    assert people.sources.cursor("hubspot:registrations") is not None
    assert people.sources.cursor("hubspot") is None, "the event read keeps its own cursor"
    [(source_name, record, field, _, _)] = quarantine(people)
    assert (source_name, record, field) == ("hubspot", f"hubspot:company:{free_mail}", "domain")
