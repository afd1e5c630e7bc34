"""The demo's partners register leads in the file drop, and the conversions stage of
the cycle credits their registered companies' deals to them: registrations read with
the rest of the inbox, the wrong rows quarantined, the rival claim rejected."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import UTC, datetime

from pydantic import SecretStr
from sqlalchemy import select

from domain.models import Milestone
from domain.registration import RegistrationStatus
from flows.bootstrap import App, use_app
from flows.cycle import check_conversions
from integrations.ledger.tables import ConversionRow, QuarantineRow, RewardRow
from integrations.sources.sample import generate, simulate_partner_leads


def _partners(app: App) -> list[str]:
    with (app.settings.inbox_dir / "contacts.csv").open(encoding="utf-8") as handle:
        return [r["contact_id"] for r in csv.DictReader(handle) if r["referrer_type"] == "partner"]


def test_registrations_in_the_demo_drop_credit_the_partners_deals(test_app: App) -> None:
    sample = generate(test_app.settings.inbox_dir, datetime.now(UTC), accounts=60, seed=11)
    partners = _partners(test_app)
    written = simulate_partner_leads(sample, partners)
    # The key goes through the Prefect task as a SecretStr, as the cycle passes it.
    keyed = replace(
        test_app,
        settings=test_app.settings.model_copy(
            update={"registration_contact_key": SecretStr("flow-test-key-" + "3" * 32)}
        ),
    )

    with use_app(keyed):
        first = check_conversions()
        again = check_conversions()

    ledger = test_app.ledger
    assert first["registrations"]["sources"]["files"] == {
        "accepted": written,
        "rejected": 1,
        "quarantined": 3,
    }
    assert first["registrations"]["rejected"][0].startswith(
        f"registrations.csv:{written + 2}: rejected: partner-lead-0.example is registered by "
        f"{sorted(partners)[0]}"
    )
    assert again["registrations"]["sources"]["files"] == {
        "accepted": 0,
        "rejected": 0,
        "quarantined": 0,
    }
    by_domain = {r.domain: r for r in ledger.partners.registrations()}
    lead0 = by_domain["partner-lead-0.example"]
    assert (lead0.partner_id, lead0.status) == (sorted(partners)[0], RegistrationStatus.CONVERTED)
    with ledger.engine.connect() as conn:
        credited = conn.execute(
            select(ConversionRow.milestone).where(
                ConversionRow.referrer_id == lead0.partner_id,
                ConversionRow.referee_account_id == "PL0000",
            )
        ).scalars()
        assert sorted(credited) == sorted(m.value for m in Milestone)
        rewarded = conn.execute(
            select(RewardRow.rule_id).where(RewardRow.conversion_id == lead0.conversion_id)
        ).scalars()
        assert list(rewarded) == ["partner-first-year"]
        wrong = conn.execute(
            select(QuarantineRow.field).where(QuarantineRow.stage == "registration")
        ).scalars()
        assert sorted(f or "" for f in wrong) == ["domain", "evidence", "partner_id"]
    assert first["registered"]["conversions"] >= 3
