"""The composition root picks each adapter from the settings, and refuses half settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import load_settings
from domain.errors import ConfigError
from domain.models import PayoutRailKind
from flows.bootstrap import build_app
from integrations.email.outbox import OutboxEmailSender
from integrations.email.sendgrid_sender import SendGridEmailSender
from integrations.payments.ledger_only import LedgerOnlyRail
from integrations.payments.stripe_events import StripeEventFeed
from integrations.payments.stripe_rail import StripeBalanceRail, StripeTransferRail
from integrations.payments.stripe_reconcile import StripeRecords
from integrations.sources.delighted import DelightedSource
from integrations.sources.files import FileSource
from integrations.sources.hubspot import HubSpotSource


def test_without_keys_email_goes_to_the_outbox_and_payouts_to_the_ledger_only_rail(
    sqlite_url: str, tmp_path: Path
) -> None:
    app = build_app(load_settings(database_url=sqlite_url, inbox_dir=tmp_path))
    assert isinstance(app.email, OutboxEmailSender)
    assert list(app.rails) == [PayoutRailKind.LEDGER_ONLY]
    assert isinstance(app.rails[PayoutRailKind.LEDGER_ONLY], LedgerOnlyRail)
    assert [type(s) for s in app.sources] == [FileSource]
    assert app.describe()["payouts"] == "ledger_only"
    assert (app.stripe_events, app.payment_records) == (None, None)
    app.ledger.engine.dispose()


def test_with_keys_the_real_sendgrid_and_stripe_adapters_are_used(
    sqlite_url: str, tmp_path: Path
) -> None:
    app = build_app(
        load_settings(
            database_url=sqlite_url,
            inbox_dir=tmp_path,
            sendgrid_api_key="SG.test",
            stripe_api_key="sk_test_x",
            sources=("files", "hubspot", "delighted"),
            hubspot_access_token="pat-test",
            delighted_api_key="dl-test",
        )
    )
    assert isinstance(app.email, SendGridEmailSender)
    assert isinstance(app.rails[PayoutRailKind.STRIPE_TRANSFER], StripeTransferRail)
    assert isinstance(app.rails[PayoutRailKind.STRIPE_BALANCE], StripeBalanceRail)
    assert [type(s) for s in app.sources] == [FileSource, HubSpotSource, DelightedSource]
    assert isinstance(app.stripe_events, StripeEventFeed)
    assert isinstance(app.payment_records, StripeRecords)
    assert "sk_test" not in str(app.describe())
    assert "SG.test" not in repr(app.settings)
    app.ledger.engine.dispose()


@pytest.mark.parametrize(
    ("source", "variable"),
    [("hubspot", "REFERRALS_HUBSPOT_ACCESS_TOKEN"), ("delighted", "REFERRALS_DELIGHTED_API_KEY")],
)
def test_a_source_without_its_key_stops_the_start_naming_the_variable(
    sqlite_url: str, tmp_path: Path, source: str, variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        build_app(load_settings(database_url=sqlite_url, inbox_dir=tmp_path, sources=(source,)))


def test_the_registration_contact_key_never_prints_and_a_short_one_is_refused_by_name() -> None:
    key = "k" * 32
    settings = load_settings(registration_contact_key=key)

    assert settings.registration_contact_key is not None
    assert settings.registration_contact_key.get_secret_value() == key
    assert key not in repr(settings)
    assert load_settings().registration_contact_key is None
    with pytest.raises(ConfigError, match=r"REFERRALS_REGISTRATION_CONTACT_KEY: .*32 characters"):
        load_settings(registration_contact_key="too-short")


def test_a_hubspot_registration_property_makes_the_source_read_registrations(
    sqlite_url: str, tmp_path: Path
) -> None:
    app = build_app(
        load_settings(
            database_url=sqlite_url,
            inbox_dir=tmp_path,
            sources=("hubspot",),
            hubspot_access_token="pat-test",
            hubspot_registration_partner_property="registered_by_partner",
        )
    )
    [source] = app.sources
    assert isinstance(source, HubSpotSource)
    assert source.mapping.registration_partner_property == "registered_by_partner"
    app.ledger.engine.dispose()
