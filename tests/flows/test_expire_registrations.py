"""The expire-registrations flow: closes lapsed partner registrations and publishes
what it expired and what expires soon, on Prefect's test harness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.models import ReferrerType
from domain.registration import Claim, RegistrationStatus
from flows.bootstrap import App
from flows.registrations import expire_partner_registrations
from tasks.registrations import REPORT_KEY, TABLE_KEY
from tests.conftest import contact, people_batch
from tests.prefect_artifacts import latest_artifact_text

EVIDENCE = "Budget conversation with the head of sales"


def latest(key: str) -> str:
    return latest_artifact_text(key)


def test_the_expiry_run_closes_lapsed_registrations_and_publishes_them_with_those_expiring_soon(
    test_app: App,
) -> None:
    now = datetime.now(UTC)
    ledger, rules = test_app.ledger, test_app.program.registration
    ledger.sources.record_batch(
        people_batch(contact("P1", "P1-FIRM", kind=ReferrerType.PARTNER, email="p1@firm.example")),
        now,
    )
    window = timedelta(days=rules.window_days)
    for domain, age in (
        ("lapsed.example", window + timedelta(days=1)),
        ("soon.example", window - timedelta(days=3)),
        ("fresh.example", timedelta(days=1)),
    ):
        ledger.partners.register([Claim("P1", domain, "CRM-1", EVIDENCE)], rules, now - age)

    result = expire_partner_registrations()
    again = expire_partner_registrations()

    [lapsed] = ledger.partners.registrations([RegistrationStatus.EXPIRED])
    assert lapsed.domain == "lapsed.example"
    assert lapsed.closed_by is not None
    assert lapsed.closed_by.startswith("expire-registrations:")
    assert result["expired_ids"] == [lapsed.registration_id]
    assert (result["expired_this_run"], result["expiring_soon"]) == (1, 1)
    assert result["by_status"] == {"active": 2, "extended": 0, "expired": 1, "converted": 0}
    assert (again["expired_this_run"], again["expired_ids"]) == (0, [])
    summary = latest(REPORT_KEY)
    assert "| expired by this run | 0 |" in summary  # the second run's
    table = latest(TABLE_KEY)
    assert "soon.example" in table
    assert "fresh.example" not in table
    assert "@" not in table + summary


def test_the_first_run_lists_what_it_expired(test_app: App) -> None:
    now = datetime.now(UTC)
    ledger, rules = test_app.ledger, test_app.program.registration
    ledger.sources.record_batch(
        people_batch(contact("P2", "P2-FIRM", kind=ReferrerType.PARTNER)), now
    )
    ledger.partners.register(
        [Claim("P2", "old.example", "CRM-2", EVIDENCE)],
        rules,
        now - timedelta(days=rules.window_days + 1),
    )

    expire_partner_registrations(expiring_within_days=1)

    table = latest(TABLE_KEY)
    assert "old.example" in table
    assert "expired" in table
    assert "| expired by this run | 1 |" in latest(REPORT_KEY)
