"""The touches of a batch of conversions, found for the batch at once, are each
conversion's own: clicks on its code up to its moment, registrations of its referee's
domain holding at its moment, never another conversion's."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from domain.models import Conversion, EmailEvent, EmailEventType, Milestone, derived_id
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    T_PARTNER_REGISTRATIONS,
    AskRow,
    MomentRow,
    TouchpointRow,
)
from tasks.use_cases import conversions as use_cases
from tests.integration.test_ledger_flow import given_referrer
from tests.integration.test_partner_registrations import given_partners, raw_registration


def asked_with(ledger: SqlLedger, code: str, contact: str, ask: str, at: datetime) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(MomentRow).values(
                moment_id=f"test:{ask}",
                type="nps_promoter",
                contact_id=contact,
                account_id=f"A-{contact}",
                occurred_at=at,
                source_event=f"test:{ask}",
                detail="NPS 10",
                status="asked",
            )
        )
        conn.execute(
            insert(AskRow).values(
                ask_id=ask,
                moment_id=f"test:{ask}",
                contact_id=contact,
                moment_type="nps_promoter",
                referral_code=code,
                status="accepted",
                created_at=at,
            )
        )


def won(code: str, referrer: str, domain: str, at: datetime, key: str) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=key,
        referral_code=code,
        referrer_id=referrer,
        referee_account_id=None,
        referee_contact_id=f"lead-{key}",
        milestone=Milestone.CUSTOMER,
        occurred_at=at,
        amount=None,
        referee_email_domain=domain,
    )


def touches(ledger: SqlLedger) -> set[tuple[str, str, str, str | None]]:
    with ledger.engine.connect() as conn:
        return {
            (r["kind"], r["ref"], r["referrer_id"], r["referee_contact_id"])
            for r in conn.execute(select(TouchpointRow.__table__)).mappings()
        }


def test_each_conversion_of_a_batch_gets_its_own_clicks_and_holding_registrations(
    ledger: SqlLedger, now: datetime
) -> None:
    code_1 = given_referrer(ledger, now, "C1")
    code_2 = given_referrer(ledger, now, "C2")
    given_partners(ledger, now - timedelta(days=30), "P1", "P2", "P3")
    first_at, second_at = now - timedelta(days=2), now - timedelta(days=1)
    asked_with(ledger, code_1, "C1", "ask-1", now - timedelta(days=9))
    asked_with(ledger, code_2, "C2", "ask-2", now - timedelta(days=9))
    ledger.emails.apply_email_events(
        [
            # At the conversion's very moment counts; after it, not.
            EmailEvent("sg-1-at", EmailEventType.CLICK, "ask-1", first_at),
            EmailEvent("sg-1-after", EmailEventType.CLICK, "ask-1", first_at + timedelta(hours=1)),
            EmailEvent("sg-2-before", EmailEventType.CLICK, "ask-2", now - timedelta(days=5)),
        ],
        now,
    )
    registrations: list[dict[str, Any]] = [
        # acme: P1 holds it at the first conversion.
        raw_registration("P1", now - timedelta(days=20), registration_id="reg-p1"),
        # beta: P2's ran out a day before the second conversion (not yet closed).
        raw_registration(
            "P2",
            now - timedelta(days=70),
            registration_id="reg-p2",
            domain="beta.example",
            expires_at=second_at - timedelta(days=1),
        ),
        # gamma: P3 registered a minute after the third conversion.
        raw_registration(
            "P3",
            second_at + timedelta(minutes=1),
            registration_id="reg-p3",
            domain="gamma.example",
        ),
    ]
    with ledger.engine.begin() as conn:
        conn.execute(insert(T_PARTNER_REGISTRATIONS), registrations)

    first = won(code_1, "C1", "ACME.example", first_at, "crm:won-1")
    second = won(code_2, "C2", "beta.example", second_at, "crm:won-2")
    third = won(code_2, "C2", "gamma.example", second_at, "crm:won-3")
    use_cases.record_crm_conversions(ledger, [], [first, second, third], [], {}, now)

    assert touches(ledger) == {
        ("code", first.conversion_id, "C1", "lead-crm:won-1"),
        ("ask_click", "sg-1-at", "C1", "lead-crm:won-1"),
        ("registration", "reg-p1", "P1", "lead-crm:won-1"),
        ("code", second.conversion_id, "C2", "lead-crm:won-2"),
        ("ask_click", "sg-2-before", "C2", "lead-crm:won-2"),
        ("code", third.conversion_id, "C2", "lead-crm:won-3"),
        ("ask_click", "sg-2-before", "C2", "lead-crm:won-3"),
    }
